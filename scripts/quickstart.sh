#!/usr/bin/env bash
# The README's run command: installs what is missing, builds r1serve, creates
# the embedded default model (a small DeepSeek-V3-architecture model with
# random weights and the real DeepSeek-V3 tokenizer) and starts r1serve on it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target r1serve
./scripts/make-default-model.sh
BIN=build/release/r1serve
MODEL=models/default
if "$BIN" serve --help >/dev/null 2>&1; then
  exec "$BIN" serve --model "$MODEL" --served-model-name r1serve-default "$@"
fi
# Until the server exists: one generation on the default model.
exec "$BIN" generate --model "$MODEL" --prompt "Hello! Who are you?" --max-tokens 32 "$@"
