#!/usr/bin/env bash
# The whole GPU check in one go. Here (no GPU): `tools/gpu_check.sh --bundle`
# builds the CUDA tests and benchmark into build-cuda/ and copies the binaries
# and the shared libraries the GPU machine lacks into build-cuda-bundle/,
# compressed into build-carry/bundle.tar.xz (both ignored by git; carry
# build-carry; with the tracked tree it must stay under the device tool's 64 MiB:
# ~38 MB of bundle, ~7 MB more with KEEP_BASE=1 below). There: `tools/gpu_check.sh` runs the CUDA op tests, the model
# comparison and the benchmarks, writes full logs to $OUT (or out/), and prints
# a short table last. It builds nothing on the GPU machine. Its switches (env):
# TEST_ENV="VAR=v ..." runs the GPU tests under those settings; KERNEL_BENCH=0
# leaves out the whole kernel benchmark; B1_AB="cfg;cfg" times batch 1 side by
# side under each setting (B1_PATHS_AB=0: no A/B); TRACE=0, NCU=0,
# ENGINE_BENCH=0 and HF_BASELINE=0 leave out the timeline, Nsight Compute, the
# engine benchmark and the transformers baseline; GEMV_SWEEP=1 adds the plan sweep.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUNDLE="$ROOT/build-cuda-bundle"

if [[ "${1:-}" == "--bundle" ]]; then
  set -e
  # KEEP_BASE=1: the benchmark of the bundle being replaced travels too
  # (build-carry/bench_cuda_base.xz), and the GPU side times batch 1 with it and
  # with the new one alternately (a baseline from the same machine and minutes).
  if [[ "${KEEP_BASE:-0}" == 1 && -f "$ROOT/build-carry/bundle.tar.xz" ]]; then
    tmp=$(mktemp -d)
    tar -C "$tmp" -xJf "$ROOT/build-carry/bundle.tar.xz" build-cuda-bundle/bin/bench_cuda build-cuda-bundle/VERSION
    xz -T2 -6 -c "$tmp/build-cuda-bundle/bin/bench_cuda" > "$ROOT/build-carry/bench_cuda_base.xz"
    cp "$tmp/build-cuda-bundle/VERSION" "$ROOT/build-carry/bench_cuda_base.version"
    rm -rf "$tmp"
  else
    rm -f "$ROOT/build-carry/bench_cuda_base.xz" "$ROOT/build-carry/bench_cuda_base.version"
  fi
  cmake -S "$ROOT" -B "$ROOT/build-cuda" -G Ninja -DCMAKE_BUILD_TYPE=Release -DR1_CUDA=ON >/dev/null
  cmake --build "$ROOT/build-cuda" -j2 --target backend_test_cuda_ops backend_test_cuda_model \
    backend_test_cuda_graphs bench_cuda r1serve $(grep -q r1_kernel_trace "$ROOT/build-cuda/build.ninja" && echo r1_kernel_trace)
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
  cp "$ROOT/build-cuda/tests/backend/backend_test_cuda_ops" "$ROOT/build-cuda/tests/backend/backend_test_cuda_model" \
     "$ROOT/build-cuda/tests/backend/backend_test_cuda_graphs" "$ROOT/build-cuda/bench_cuda" \
     "$ROOT/build-cuda/r1serve" "$BUNDLE/bin/"
  strip "$BUNDLE"/bin/* || true
  # The kernel timeline library (TRACE below) and the CUPTI it needs.
  if [[ -f "$ROOT/build-cuda/libr1_kernel_trace.so" ]]; then
    cp "$ROOT/build-cuda/libr1_kernel_trace.so" "$BUNDLE/lib/"
    ldd "$BUNDLE/lib/libr1_kernel_trace.so" | awk '/libcupti/ {print $3}' | xargs -r -I{} cp -L {} "$BUNDLE/lib/"
  fi
  # Debian libraries absent on the GPU machine (CUDA's own libraries are there).
  for f in "$BUNDLE"/bin/*; do
    ldd "$f" | awk '/=> \// {print $3}' | grep -E 'libfmt|libspdlog|libpcre2|libprometheus|libboost|libssl|libcrypto' || true
  done | sort -u | xargs -r -I{} cp -L {} "$BUNDLE/lib/"
  echo "$(git -C "$ROOT" describe --always --dirty) $(date -u +%FT%TZ)" > "$BUNDLE/VERSION"
  # The binaries, xz-compressed, are what travels (carry build-carry): the
  # uncompressed folder no longer fits the 64 MiB the device tool carries.
  mkdir -p "$ROOT/build-carry"
  tar -C "$ROOT" -cf - build-cuda-bundle | xz -T2 -6 > "$ROOT/build-carry/bundle.tar.xz"
  du -sh "$BUNDLE" "$ROOT/build-carry/bundle.tar.xz"
  exit 0
fi

# Always from the carried archive when there is one (a warm machine keeps the last run's folder).
if [[ -f "$ROOT/build-carry/bundle.tar.xz" ]]; then
  rm -rf "$BUNDLE" && tar -C "$ROOT" -xJf "$ROOT/build-carry/bundle.tar.xz"
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
  env ${TEST_ENV:-} timeout "$3" "$BUNDLE/bin/$2" --gtest_color=no >"$log" 2>&1
  local rc=$?
  local passed failed skipped
  passed=$(grep -oP '\[  PASSED  \] \K[0-9]+' "$log" | tail -1)
  failed=$(grep -c '^\[  FAILED  \] .*\.' "$log")
  skipped=$(grep -oP '\[  SKIPPED \] \K[0-9]+(?= test)' "$log" | tail -1)
  printf '%-28s rc=%-3s passed=%-4s failed=%-3s skipped=%s %s\n' "$1" "$rc" "${passed:-0}" "$failed" \
    "${skipped:-0}" "${TEST_ENV:+[$TEST_ENV]}" >> "$OUT/summary.txt"
}
: > "$OUT/summary.txt"
run_gtest cuda_ops backend_test_cuda_ops "${OPS_TIMEOUT:-120}"
run_gtest cuda_model backend_test_cuda_model "${MODEL_TIMEOUT:-150}"
run_gtest cuda_graphs backend_test_cuda_graphs "${GRAPHS_TIMEOUT:-90}"
# KERNEL_BENCH=0 leaves the whole kernel benchmark out (a batch-1 A/B alone fits one call).
if [[ "${KERNEL_BENCH:-1}" == 1 ]]; then
  timeout "${BENCH_TIMEOUT:-180}" "$BUNDLE/bin/bench_cuda" "$ROOT/bench/configs/bench-r1-9b" \
    "$ROOT/bench/configs/r1-distill-qwen-7b" > "$OUT/bench.log" 2>&1
  echo "bench rc=$?" >> "$OUT/summary.txt"
fi

# Batch 1 side by side: the previous build (where carried, see KEEP_BASE), the defaults,
# then each setting that B1_AB lists (";" between
# settings; by default session 6's merge in W_UV's product undone, then with that
# product triggering o_proj before its wait, then session 2's kernels: the shared
# experts' MLP in GEMVs of its own and the session-3 paths off),
# twice; with the defaults, the attention's checkpoints and, where the timeline
# library was carried, the kernels' share of the recorded step.
if [[ "${B1_PATHS_AB:-1}" == 1 ]]; then
  B1_OFF="R1SERVE_CUDA_MOE_INLINE_ROUTE=0 R1SERVE_CUDA_HEAD_GEMV_SHORT=0 R1SERVE_CUDA_MOE_X_EARLY=0 R1SERVE_CUDA_TRIGGER_FIRST=0"
  IFS=';' read -r -a b1_cfgs <<< "${B1_AB:-R1SERVE_CUDA_MLA_DEFER_MERGE=0;R1SERVE_CUDA_MERGE_GEMV_TF=1;R1SERVE_CUDA_MOE_SHARED_STREAM=0 $B1_OFF}"
  # The previous build's benchmark, where --bundle kept one (KEEP_BASE=1): first in each round.
  base_bin=""
  if [[ -f "$ROOT/build-carry/bench_cuda_base.xz" ]]; then
    base_bin="$BUNDLE/bin/bench_cuda_base"
    xz -dc "$ROOT/build-carry/bench_cuda_base.xz" > "$base_bin" && chmod +x "$base_bin"
  fi
  for rep in 1 2; do
    if [[ -n "$base_bin" ]]; then
      echo "## batch 1: previous build $(cat "$ROOT/build-carry/bench_cuda_base.version" 2>/dev/null) (run $rep)"
      R1_BENCH_BATCHES=1 timeout 60 "$base_bin" "$ROOT/bench/configs/bench-r1-9b" 2>&1 |
        grep -E 'hbm_copy  |decode batch 1 \(graphs on, pdl on, tokens'
    fi
    for cfg in "" "${b1_cfgs[@]}"; do
      echo "## batch 1: ${cfg:-defaults} (run $rep)"
      env $cfg R1_BENCH_BATCHES=1 timeout 60 "$BUNDLE/bin/bench_cuda" "$ROOT/bench/configs/bench-r1-9b" 2>&1 |
        grep -E 'hbm_copy  |decode batch 1 \(graphs on, pdl on, tokens'
    done
  done > "$OUT/b1_paths_ab.txt" 2>&1
  R1SERVE_CUDA_ATTN_STAMPS=1 R1_BENCH_BATCHES=1 timeout 60 "$BUNDLE/bin/bench_cuda" \
    "$ROOT/bench/configs/bench-r1-9b" 2>&1 | grep -E -A20 '^attention stamps' | head -22 >> "$OUT/b1_paths_ab.txt"
  if [[ -f "$BUNDLE/lib/libr1_kernel_trace.so" ]]; then
    R1_BENCH_BATCHES=1 R1_TRACE_CSV=/tmp/trace_b1_paths.csv \
      CUDA_INJECTION64_PATH="$BUNDLE/lib/libr1_kernel_trace.so" timeout 120 "$BUNDLE/bin/bench_cuda" \
      "$ROOT/bench/configs/bench-r1-9b" > /dev/null 2>&1
    python3 "$ROOT/tools/trace_summary.py" /tmp/trace_b1_paths.csv 20 30 > "$OUT/trace_b1_paths.txt" 2>&1
  fi
  echo "batch-1 A/B done" >> "$OUT/summary.txt"
fi

# GEMV_SWEEP=1: every dense GEMV shape of the benchmark models under every launch plan.
if [[ "${GEMV_SWEEP:-0}" == 1 ]]; then
  R1_BENCH_GEMV=1 timeout 300 "$BUNDLE/bin/bench_cuda" > "$OUT/gemv_sweep.log" 2>&1
  echo "gemv sweep rc=$?" >> "$OUT/summary.txt"
fi

# The timeline of recorded batch-1 steps (CUPTI, bench/cuda/kernel_trace.cc):
# what every kernel adds to the step's critical path.
if [[ "${TRACE:-1}" == 1 && -f "$BUNDLE/lib/libr1_kernel_trace.so" ]]; then
  for m in bench-r1-9b r1-distill-qwen-7b; do
    R1_BENCH_BATCHES=1 R1_TRACE_CSV=/tmp/trace_$m.csv CUDA_INJECTION64_PATH="$BUNDLE/lib/libr1_kernel_trace.so" \
      timeout 120 "$BUNDLE/bin/bench_cuda" "$ROOT/bench/configs/$m" > "$OUT/trace_bench_$m.log" 2>&1
    echo "trace $m rc=$?" >> "$OUT/summary.txt"
    python3 "$ROOT/tools/trace_summary.py" /tmp/trace_$m.csv 20 40 > "$OUT/trace_$m.txt" 2>&1
  done
fi

# Per-kernel GPU time of three eager batch-1 decode steps, from Nsight Compute.
NCU_BIN="$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)"
if [[ "${NCU:-1}" == 1 && -n "$NCU_BIN" ]]; then
  R1_BENCH_QUICK=1 timeout 240 "$NCU_BIN" --clock-control none --metrics gpu__time_duration.sum --csv \
    "$BUNDLE/bin/bench_cuda" "$ROOT/bench/configs/bench-r1-9b" > /tmp/ncu.csv 2> /tmp/ncu.err
  echo "ncu rc=$?" >> "$OUT/summary.txt"
  { python3 "$ROOT/tools/ncu_summary.py" /tmp/ncu.csv 3; tail -5 /tmp/ncu.err; } > "$OUT/ncu_summary.txt" 2>&1
  # The same for the 7B distill (dense GQA).
  R1_BENCH_QUICK=1 timeout 240 "$NCU_BIN" --clock-control none --metrics gpu__time_duration.sum --csv \
    "$BUNDLE/bin/bench_cuda" "$ROOT/bench/configs/r1-distill-qwen-7b" > /tmp/ncu7.csv 2> /tmp/ncu7.err
  echo "ncu 7b rc=$?" >> "$OUT/summary.txt"
  { python3 "$ROOT/tools/ncu_summary.py" /tmp/ncu7.csv 3; tail -5 /tmp/ncu7.err; } > "$OUT/ncu_summary_7b.txt" 2>&1
  # Launch configuration, occupancy and DRAM throughput of the GEMV kernels.
  R1_BENCH_QUICK=1 timeout 120 "$NCU_BIN" --clock-control none --kernel-name regex:gemv --launch-count 12 \
    --section LaunchStats --section Occupancy --section SpeedOfLight \
    "$BUNDLE/bin/bench_cuda" "$ROOT/bench/configs/bench-r1-9b" 2>&1 |
    grep -E 'gemv|Registers Per|Achieved Occupancy|Theoretical Occupancy|DRAM Throughput|Duration|Block Limit|Waves Per SM|Grid Size' \
    >> "$OUT/ncu_summary.txt"
fi

# Through the engine: r1serve bench with dummy weights made on the GPU.
# C concurrent requests of IN prompt / OUT generated tokens (all submitted at once, C per step).
engine_bench() {  # model C IN OUT
  echo "## r1serve bench $1 concurrency $2 input $3 output $4"
  timeout 150 "$BUNDLE/bin/r1serve" bench --model "$ROOT/bench/configs/$1" --device cuda --load-format dummy \
    --num-prompts "$2" --batch "$2" --input-len "$3" --output-len "$4" --warmup 2>&1
  echo "rc=$?"
}
if [[ "${ENGINE_BENCH:-1}" == 1 ]]; then
  {
    for c in 1 8 64; do engine_bench bench-r1-9b "$c" 1024 256; done
    for c in 32 128; do engine_bench bench-r1-9b "$c" 512 128; done
    engine_bench r1-distill-qwen-7b 1 1024 256
    # The transformers baseline, side by side on the same machine.
    [[ "${HF_BASELINE:-1}" == 1 ]] && PYTHONUNBUFFERED=1 timeout 300 python3 "$ROOT/tools/hf_baseline.py" \
      "$ROOT/bench/configs/bench-r1-9b" "$ROOT/bench/configs/r1-distill-qwen-7b"
  } > "$OUT/engine_bench.log" 2>&1
  echo "engine bench done" >> "$OUT/summary.txt"
fi

echo "==== failures (first 40 lines) ===="
grep -h -B2 -A6 -E 'Failure|FAILED|check failed|error' "$OUT/cuda_ops.log" "$OUT/cuda_model.log" | head -40
echo "==== model comparison ===="
grep -h -E 'max\|err\||routing:|router vs|flip:|greedy [0-9]' "$OUT/cuda_model.log" | head -60
echo "==== bench log ===="
[[ -f "$OUT/bench.log" ]] && grep -E '^#|^  |failed|error' "$OUT/bench.log" | head -80
echo "==== ncu (bench-r1-9b, batch 1, eager, per step) ===="
[[ -f "$OUT/ncu_summary.txt" ]] && head -150 "$OUT/ncu_summary.txt"
echo "==== ncu (r1-distill-qwen-7b, batch 1, eager, per step) ===="
[[ -f "$OUT/ncu_summary_7b.txt" ]] && head -70 "$OUT/ncu_summary_7b.txt"
for f in "$OUT"/trace_bench-r1-9b.txt "$OUT"/trace_r1-distill-qwen-7b.txt; do
  [[ -f "$f" ]] && { echo "==== timeline of recorded steps: $(basename "$f") ===="; head -60 "$f"; }
done
[[ -f "$OUT/gemv_sweep.log" ]] && { echo "==== GEMV plans ===="; cat "$OUT/gemv_sweep.log"; }
[[ -f "$OUT/b1_paths_ab.txt" ]] && { echo "==== batch 1 side by side ===="; grep -E '^##|ms/step|split' "$OUT/b1_paths_ab.txt"; }
[[ -f "$OUT/trace_b1_paths.txt" ]] && { echo "==== timeline, batch 1, defaults ===="; head -40 "$OUT/trace_b1_paths.txt"; }
echo "==== graphs ===="
grep -h -E 'B=|dummy weights' "$OUT/cuda_graphs.log" | head -30
echo "==== engine bench ===="
[[ -f "$OUT/engine_bench.log" ]] && grep -E '^##|throughput|first token|per output|loaded|rc=|error|^HF|^# transformers' "$OUT/engine_bench.log"
echo "==== device ===="
cat "$OUT/device.txt"
echo "==== summary ===="
cat "$OUT/summary.txt"
[[ -f "$OUT/bench.log" ]] && sed -n '/^model /,$p' "$OUT/bench.log"

# The device tool brings back at most 8 files from $OUT: past that, the logs go
# back as one archive (logs.tgz; the separate files are removed).
n_files=$(find "$OUT" -maxdepth 1 -type f | wc -l)
if (( n_files > 8 )); then
  (cd "$OUT" && find . -maxdepth 1 -type f ! -name logs.tgz -printf '%P\n' | tar czf logs.tgz -T - &&
    find . -maxdepth 1 -type f ! -name logs.tgz -delete)
  echo "logs: $OUT/logs.tgz ($n_files files)"
fi
