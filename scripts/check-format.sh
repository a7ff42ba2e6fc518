#!/usr/bin/env bash
# Checks that every C++ and CUDA source of the repository is as clang-format
# (.clang-format, Debian 12's clang-format 14) writes it; lists the files that
# are not. A ctest test runs it (format_clang_format). Fix: clang-format -i FILE.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang-format >/dev/null 2>&1; then
  echo "check-format: clang-format is not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.cc' '*.h' '*.cu' '*.cuh' | grep -v '^third_party/')
else
  mapfile -t files < <(find src tests bench tools -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')
fi
bad=()
for f in "${files[@]}"; do
  [[ -f "$f" ]] || continue
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if (( ${#bad[@]} > 0 )); then
  echo "check-format: ${#bad[@]} of ${#files[@]} files differ from clang-format's output ($(clang-format --version)):"
  printf '  %s\n' "${bad[@]}"
  echo "fix with: clang-format -i ${bad[*]}"
  exit 1
fi
echo "check-format: ${#files[@]} files as clang-format writes them"
