#!/bin/sh
# The CPU figures of docs/performance.md: the DeepSeek-V3-architecture and the
# dense benchmark models, bf16 and weight-only int8, every ceiling measured in
# the same process as the figures it divides; decode after a 16-token prompt and
# prefill of 512 tokens, as in shared/docs/baselines.md. Logs: bench/cpu/results/.
# Usage: bench/cpu/run_all.sh [BUILD_DIR] [THREADS]
set -eu
build=${1:-build/helper-cpu}
threads=${2:-$(nproc)}
out=bench/cpu/results
mkdir -p "$out"
stamp=$(date -u +%Y%m%d-%H%M%S)
log="$out/cpu-$stamp.log"
{
  echo "date: $(date -u)"
  echo "commit: $(git rev-parse --short HEAD)"
  lscpu | grep -E 'Model name|^CPU\(s\)|Thread\(s\) per core|L3'
  echo "isa flags: $(grep -o -w -E 'avx2|avx512f|avx512bw|avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "load before: $(cat /proc/loadavg)"
  for model in bench-r1-small-651m bench-dense-qwen2-450m; do
    for dtype in bf16 int8; do
      echo
      echo "== $model $dtype"
      "$build/bench/cpu_bench" "bench/configs/$model.json" --threads "$threads" --dtype "$dtype" \
        --rounds 5 --decode-tokens 128 --prompt 16 --batches 2,4,8,16,32 --prefill 512
    done
  done
  echo "load after: $(cat /proc/loadavg)"
} 2>&1 | tee "$log"
