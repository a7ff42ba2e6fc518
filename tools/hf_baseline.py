#!/usr/bin/env python3
"""The Hugging Face transformers baseline, run on the GPU machine beside r1serve's benchmark.

Builds the model of a config.json (e.g. bench/configs/bench-r1-9b) with random BF16 weights
on the GPU, eager attention, and times what bench_cuda times: decode steps with a KV cache at
context 512 for batch 1 and 16, and one prefill of 16 x 512 tokens. Prints one line per
figure ("HF <model> <what> <value> <unit>") so tools/gpu_check.sh can put them in its table.

Usage: python3 tools/hf_baseline.py MODEL_DIR [MODEL_DIR ...]
"""
import json
import sys
import time

import torch
import transformers


def build(config_dir):
    with open(f"{config_dir}/config.json") as f:
        cfg = json.load(f)
    cls = {"deepseek_v3": transformers.DeepseekV3Config, "qwen2": transformers.Qwen2Config,
           "llama": transformers.LlamaConfig}[cfg["model_type"]]
    config = cls.from_dict(cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    torch.set_default_dtype(torch.float32)
    model.eval()
    return model, cfg


@torch.no_grad()
def decode_ms(model, batch, ctx=512, steps=16, vocab=1000):
    ids = torch.randint(0, vocab, (batch, ctx), device="cuda")
    out = model(ids, use_cache=True)
    past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    times = []
    for i in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(nxt, past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


@torch.no_grad()
def prefill_ms(model, batch=16, length=512, vocab=1000):
    ids = torch.randint(0, vocab, (batch, length), device="cuda")
    model(ids, use_cache=True)  # warm-up
    times = []
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(ids, use_cache=True, logits_to_keep=1)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def main():
    print(f"# transformers {transformers.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for d in sys.argv[1:]:
        name = d.rstrip("/").split("/")[-1]
        try:
            model, cfg = build(d)
            for b in (1, 16):
                ms = decode_ms(model, b)
                print(f"HF {name} decode_b{b} {b * 1000.0 / ms:.2f} tok/s ({ms:.2f} ms/step)", flush=True)
            if cfg["model_type"] == "deepseek_v3":
                ms = prefill_ms(model)
                print(f"HF {name} prefill_16x512 {16 * 512 * 1000.0 / ms:.0f} tok/s ({ms:.1f} ms)", flush=True)
            del model
            torch.cuda.empty_cache()
        except Exception as e:  # a baseline that fails must not stop the rest of the check
            print(f"HF {name} failed: {type(e).__name__}: {e}", flush=True)


if __name__ == "__main__":
    main()
