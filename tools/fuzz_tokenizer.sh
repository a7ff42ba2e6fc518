#!/usr/bin/env bash
# Builds and runs the tokenizer libFuzzer targets (clang, ASan + UBSan).
#   tools/fuzz_tokenizer.sh encode|load [libFuzzer args, e.g. -runs=1000000]
# Seeds: the test corpus lines (encode) or the flags tokenizer.json (load).
set -euo pipefail
target=${1:?encode or load}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/build-fuzz
mkdir -p "$out/seeds-$target"
define=$([ "$target" = encode ] && echo 1 || echo 0)
srcs=("$root"/src/tokenizer/{unicode,bpe_model,pre_tokenizer,fast_split,added_vocabulary,tokenizer,incremental_detokenizer}.cc
      "$root"/src/core/{status,thread_pool,check}.cc)
bin=$out/fuzz_tokenizer_$target
if [ ! -x "$bin" ] || [ -n "$(find "$root/src/tokenizer" "$root/tests/tokenizer/fuzz" -newer "$bin" -name '*.[ch]*')" ]; then
  clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/src" -DR1_FUZZ_ENCODE=$define -DR1_SOURCE_DIR="\"$root\"" \
    "$root/tests/tokenizer/fuzz/fuzz_tokenizer.cc" "${srcs[@]}" -o "$bin" \
    $(pkg-config --cflags --libs libpcre2-8) -lfmt -lpthread
fi
if [ "$target" = encode ]; then
  python3 - "$root/tests/data/tokenizer/corpus.jsonl" "$out/seeds-$target" <<'PY'
import json, sys, hashlib, os
for i, line in enumerate(open(sys.argv[1], encoding="utf-8")):
    s = json.loads(line).encode("utf-8")
    open(os.path.join(sys.argv[2], f"seed{i:04d}"), "wb").write(bytes([i % 16]) + s)
PY
else
  cp "$root/tests/data/tokenizer/flags/tokenizer.json" "$out/seeds-$target/flags.json"
fi
cd "$out"
exec "$bin" -rss_limit_mb=2048 -timeout=1 "$@" "$out/seeds-$target"
