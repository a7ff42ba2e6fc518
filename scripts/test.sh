#!/usr/bin/env bash
# Builds r1serve and runs the whole test suite (the README's test command; CI
# runs exactly this). Installs what a fresh Debian 12 machine lacks first.
# The CUDA backend is compiled when nvcc is present; its tests skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
PRESET="${R1SERVE_PRESET:-release}"
cmake --preset "$PRESET" >/dev/null
cmake --build --preset "$PRESET" -j "$(nproc)"
ctest --preset "$PRESET" -j "$(nproc)" "$@"
