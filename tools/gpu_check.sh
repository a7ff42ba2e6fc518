#!/usr/bin/env bash
# The whole GPU check in one go. Here (no GPU): `tools/gpu_check.sh --bundle`
# builds the CUDA tests and benchmark into build-cuda/ and copies the binaries
# and the shared libraries the GPU machine lacks into build-cuda-bundle/ (small,
# ignored by git). There: `tools/gpu_check.sh` runs the CUDA op tests, the model
# comparison and the benchmarks, writes full logs to $OUT (or out/), and prints
# a short table last. It builds nothing on the GPU machine.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUNDLE="$ROOT/build-cuda-bundle"

if [[ "${1:-}" == "--bundle" ]]; then
  set -e
  cmake -S "$ROOT" -B "$ROOT/build-cuda" -G Ninja -DCMAKE_BUILD_TYPE=Release -DR1_CUDA=ON >/dev/null
  cmake --build "$ROOT/build-cuda" -j2 --target backend_test_cuda_ops backend_test_cuda_model bench_cuda
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
  cp "$ROOT/build-cuda/tests/backend/backend_test_cuda_ops" "$ROOT/build-cuda/tests/backend/backend_test_cuda_model" \
     "$ROOT/build-cuda/bench_cuda" "$BUNDLE/bin/"
  strip "$BUNDLE"/bin/* || true
  # Debian libraries absent on the GPU machine (CUDA's own libraries are there).
  for f in "$BUNDLE"/bin/*; do
    ldd "$f" | awk '/=> \// {print $3}' | grep -E 'libfmt|libspdlog|libpcre2|libprometheus' || true
  done | sort -u | xargs -r -I{} cp -L {} "$BUNDLE/lib/"
  echo "$(git -C "$ROOT" rev-parse --short HEAD) $(date -u +%FT%TZ)" > "$BUNDLE/VERSION"
  du -sh "$BUNDLE"
  exit 0
fi

OUT="${OUT:-$ROOT/out}"
mkdir -p "$OUT"
[[ -d "$BUNDLE/bin" ]] || { echo "no $BUNDLE: run tools/gpu_check.sh --bundle on the build machine and carry it"; exit 2; }
export LD_LIBRARY_PATH="$BUNDLE/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
# The tests find tests/data through the source path compiled in (/work/main).
if [[ ! -e /work/main/tests/data ]]; then mkdir -p /work && ln -sfn "$ROOT" /work/main; fi
cd "$ROOT"
{ date -u; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv; cat "$BUNDLE/VERSION"; } \
  > "$OUT/device.txt" 2>&1

run_gtest() {  # name binary timeout
  local log="$OUT/$1.log"
  timeout "$3" "$BUNDLE/bin/$2" --gtest_color=no >"$log" 2>&1
  local rc=$?
  local passed failed skipped
  passed=$(grep -oP '\[  PASSED  \] \K[0-9]+' "$log" | tail -1)
  failed=$(grep -c '^\[  FAILED  \] .*\.' "$log")
  skipped=$(grep -oP '\[  SKIPPED \] \K[0-9]+(?= test)' "$log" | tail -1)
  printf '%-28s rc=%-3s passed=%-4s failed=%-3s skipped=%s\n' "$1" "$rc" "${passed:-0}" "$failed" "${skipped:-0}" >> "$OUT/summary.txt"
}
: > "$OUT/summary.txt"
run_gtest cuda_ops backend_test_cuda_ops "${OPS_TIMEOUT:-60}"
run_gtest cuda_model backend_test_cuda_model "${MODEL_TIMEOUT:-150}"
timeout "${BENCH_TIMEOUT:-180}" "$BUNDLE/bin/bench_cuda" "$ROOT/bench/configs/bench-r1-9b" \
  "$ROOT/bench/configs/r1-distill-qwen-7b" > "$OUT/bench.log" 2>&1
echo "bench rc=$?" >> "$OUT/summary.txt"

echo "==== failures (first 40 lines) ===="
grep -h -B2 -A6 -E 'Failure|FAILED|check failed|error' "$OUT/cuda_ops.log" "$OUT/cuda_model.log" | head -40
echo "==== model comparison ===="
grep -h -E 'max\|err\||routing:|router vs|flip:|greedy [0-9]' "$OUT/cuda_model.log" | head -60
echo "==== bench log ===="
grep -E '^#|^  |failed|error' "$OUT/bench.log" | head -80
echo "==== device ===="
cat "$OUT/device.txt"
echo "==== summary ===="
cat "$OUT/summary.txt"
sed -n '/^model /,$p' "$OUT/bench.log"
