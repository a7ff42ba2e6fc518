#!/usr/bin/env python3
"""Generate tiny random-weight checkpoints plus reference logits and greedy
continuations computed by Hugging Face transformers in float32.

Runs on the GPU test machine (torch + transformers + safetensors + numpy); the
whole computation is on the CPU in float32 (eager attention), so the result is
the function the checkpoint files define, as transformers computes it.

    python3 tools/gen_model_refs.py --out DIR [--only NAME[,NAME...]]

writes DIR/<model>/{config.json, *.safetensors[, index], reference.json,
logits_<k>.npy, hidden_<k>.npy} and DIR/generation_info.json.
See tests/data/models/README.md for what each model covers. The parts live in
tools/model_refs/ (configs, weights, files, reference, drivers, inspection).
"""

import argparse
import json
import math
import os
import sys
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from model_refs.configs import LLAMA_CONFIG, QWEN2_CONFIG, V2_CONFIG, V3_CONFIG  # noqa: E402
from model_refs.drivers import gen_deepseek, gen_dense, write_ref  # noqa: E402
from model_refs.inspection import inspect_transformers  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


NOTES_COMMON = ("Weights stored BF16 (F32 correction bias); reference = transformers float32 on CPU, eager "
                "attention, model freshly loaded from these files with from_pretrained(dtype=float32). "
                "logits_k.npy = logits at every position of sequences[k] from one forward pass (no cache). "
                "greedy = generate(do_sample=False, max_new_tokens=32) with eos disabled.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output root (e.g. tests/data/models)")
    ap.add_argument("--only", default="", help="comma-separated subset of model names")
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    only = set(filter(None, args.only.split(",")))
    want = lambda n: not only or n in only  # noqa: E731

    info = {"transformers_version": transformers.__version__, "torch_version": torch.__version__,
            "numpy_version": np.__version__, "python": sys.version.split()[0],
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "source_inspection": inspect_transformers(), "models": {}, "errors": {}}

    jobs = []
    if want("deepseek_v3_tiny"):
        jobs.append(("deepseek_v3_tiny", lambda: gen_deepseek(
            args.out, "deepseek_v3_tiny", V3_CONFIG, 11,
            NOTES_COMMON + " DeepSeek-V3 layout: q_lora, MLA, YaRN (factor 40, original 128), layer 0 dense, "
            "layers 1-2 MoE with sigmoid/noaux_tc group-limited routing and a random non-zero F32 "
            "e_score_correction_bias (reseeded until no group-mask 0.0/-inf divergence and no routing "
            "near-tie < 1e-5).")[0]))
    if want("deepseek_v3_fp8_tiny"):
        jobs.append(("deepseek_v3_fp8_tiny", lambda: gen_deepseek(
            args.out, "deepseek_v3_fp8_tiny", V3_CONFIG, 11,
            NOTES_COMMON + " Same architecture and BF16 weights as deepseek_v3_tiny, but the linear weights "
            "are F8_E4M3 with F32 weight_scale_inv 128x128 block scales (partial edge blocks), two shards, "
            "scale_inv of two weights in the other shard. Reference = transformers fp32 on the dequantized "
            "weights float(q)*scale_inv.", fp8=True)[0]))
    if want("deepseek_v2_lite_tiny"):
        jobs.append(("deepseek_v2_lite_tiny", lambda: gen_deepseek(
            args.out, "deepseek_v2_lite_tiny", V2_CONFIG, 22,
            NOTES_COMMON + " DeepSeek-V2-Lite layout: plain q_proj (q_lora_rank null), softmax gating, greedy "
            "top-4 of 16, no renormalization, routed_scaling_factor 1.0, 2 shared experts, YaRN with "
            "mscale = mscale_all_dim = 0.707. See v2_mscale for whether this transformers applies mscale^2 "
            "to the softmax scale.")[0]))
    if want("qwen2_tiny"):
        jobs.append(("qwen2_tiny", lambda: gen_dense(
            args.out, "qwen2_tiny", QWEN2_CONFIG, 33,
            NOTES_COMMON + " Qwen2: tied embeddings (no lm_head.weight in the file), random non-zero q/k/v "
            "biases, GQA 4 heads / 2 KV heads, head_dim 32, rope_theta 10000 (NeoX half-split).")))
    if want("llama_tiny"):
        jobs.append(("llama_tiny", lambda: gen_dense(
            args.out, "llama_tiny", LLAMA_CONFIG, 44,
            NOTES_COMMON + " Llama: llama3 rope scaling (factor 8, low 1, high 4, original 64), GQA 4/2, "
            "head_dim 32, rope_theta 10000, untied lm_head, rms_norm_eps 1e-5.")))

    for name, fn in jobs:
        print(f"== {name}", flush=True)
        try:
            ref = fn()
            info["models"][name] = {
                "group_mask_divergences": ref["group_mask_divergences"],
                "routing": {k: v for k, v in (ref["routing"] or {}).items() if k != "expert_usage"},
                "logit_stats": ref["logit_stats"],
                "rope": ref["rope"],
                "greedy_checks": [(g["method"], g["full_forward_argmax_mismatches"], g["top2_margin_min"])
                                  for g in ref["greedy"]],
                "fp8": ref.get("fp8"),
                "rope_interleave": ref["config_as_loaded"].get("rope_interleave"),
                "rope_parameters": ref["config_as_loaded"].get("rope_parameters"),
            }
            if name.startswith("deepseek"):
                facts = info["source_inspection"].get("facts", {})
                ref["hf_group_mask_fill"] = facts.get("deepseek_v3_group_mask_fill" if "v3" in name
                                                      else "deepseek_v2_group_mask_fill")
                write_ref(os.path.join(args.out, name), ref)
            # V2 mscale finding: compare the actual softmax scale with the two candidates
            if name == "deepseek_v2_lite_tiny" or name == "deepseek_v3_tiny":
                cfg = V2_CONFIG if name.startswith("deepseek_v2") else V3_CONFIG
                qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
                rs = cfg["rope_scaling"]
                m = 0.1 * rs["mscale_all_dim"] * math.log(rs["factor"]) + 1.0
                finding = {"actual_softmax_scale": ref["rope"].get("softmax_scale"),
                           "plain_qk_head_dim^-0.5": qk ** -0.5,
                           "with_mscale_all_dim^2": qk ** -0.5 * m * m}
                a = finding["actual_softmax_scale"]
                finding["applies_mscale2"] = bool(a is not None and abs(a - finding["with_mscale_all_dim^2"]) < 1e-6)
                info["models"][name]["softmax_scale_check"] = finding
                ref["softmax_scale_check"] = finding
                if name == "deepseek_v2_lite_tiny":
                    ref["v2_mscale"] = finding
                write_ref(os.path.join(args.out, name), ref)
        except Exception:
            tb = traceback.format_exc()
            print(tb, flush=True)
            info["errors"][name] = tb

    with open(os.path.join(args.out, "generation_info.json"), "w") as f:
        json.dump(info, f, indent=1, default=str)
        f.write("\n")
    for name in os.listdir(args.out):
        p = os.path.join(args.out, name)
        if os.path.isdir(p):
            size = sum(os.path.getsize(os.path.join(p, x)) for x in os.listdir(p))
            print(f"{name}: {size / 1e6:.2f} MB", flush=True)
    if info["errors"]:
        print("ERRORS in: " + ", ".join(info["errors"]), flush=True)
        return 1
    print("all models OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
