"""Per-model drivers: write a checkpoint, compute and check its reference.

Part of tools/gen_model_refs.py (see its docstring).
"""

import copy
import json
import os
import shutil
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from .configs import FP8_QUANT_CONFIG
from .weights import deepseek_tensors, dense_tensors, fp8_dequantize, fp8_quantize, is_fp8_linear
from .files import write_config, write_sharded, write_single
from .reference import compute_reference, load_fp32, make_sequences, sanity


def write_ref(out_dir, ref):
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")


def routing_ok(ref):
    r = ref["routing"]
    if r is None:
        return True
    return r["group_mask_divergences"] == 0 and r["expert_margin_below_1e-5"] == 0 and \
        r["group_margin_below_1e-5"] == 0


def fit_lm_head(d, cfg, tensors, seqs):
    """One rescale of lm_head (or the tied embedding) so the logits std is about 1.5."""
    model = load_fp32(d)
    with torch.no_grad():
        std = float(model(input_ids=torch.tensor([seqs[0]]), use_cache=False).logits.std())
    del model
    if 0.8 <= std <= 3.0:
        return tensors, std, 1.0
    f = 1.5 / std
    key = "lm_head.weight" if "lm_head.weight" in tensors else "model.embed_tokens.weight"
    tensors = dict(tensors)
    tensors[key] = (tensors[key].float() * f).to(torch.bfloat16)
    return tensors, std, f


def gen_deepseek(out_root, name, base_cfg, seed, notes, fp8=False, max_tries=20):
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    cfg = copy.deepcopy(base_cfg)
    seqs, prompts = make_sequences(cfg["vocab_size"], seed + 1000)
    # one lm_head rescale (same for every bias reseed and for the FP8 variant of the same weights)
    tmpd = tempfile.mkdtemp(prefix="fit_")
    t0 = deepseek_tensors(cfg, seed, seed * 100 + 7)
    write_config(tmpd, cfg)
    write_single(tmpd, t0)
    _, std0, lm_f = fit_lm_head(tmpd, cfg, t0, seqs)
    shutil.rmtree(tmpd, ignore_errors=True)
    if lm_f != 1.0:
        print(f"  {name}: logits std {std0:.3f}, lm_head scaled by {lm_f:.3f}", flush=True)
    last = None
    for attempt in range(max_tries):
        bias_seed = seed * 100 + 7 + attempt
        bf16 = deepseek_tensors(cfg, seed, bias_seed)
        if lm_f != 1.0:
            bf16["lm_head.weight"] = (bf16["lm_head.weight"].float() * lm_f).to(torch.bfloat16)
        if fp8:
            stored, ref_tensors = {}, {}
            for k, v in bf16.items():
                if is_fp8_linear(k):
                    q, s = fp8_quantize(v)
                    stored[k] = q
                    stored[k + "_scale_inv"] = s
                    ref_tensors[k] = fp8_dequantize(q, s)  # F32
                else:
                    stored[k] = v
                    ref_tensors[k] = v
            fcfg = dict(cfg)
            fcfg["quantization_config"] = FP8_QUANT_CONFIG
            for fn in os.listdir(d):
                os.remove(os.path.join(d, fn))
            write_config(d, fcfg)
            write_sharded(d, fp8_shards(stored, cfg))
            tmp = tempfile.mkdtemp(prefix="dequant_")
            write_config(tmp, cfg)  # no quantization_config
            write_single(tmp, ref_tensors)
            load_dir, file_tensors = tmp, ref_tensors
        else:
            for fn in os.listdir(d):
                os.remove(os.path.join(d, fn))
            write_config(d, cfg)
            write_single(d, bf16)
            load_dir, file_tensors = d, bf16
        ref, model = compute_reference(load_dir, file_tensors, cfg, seqs, prompts, name, d, notes,
                                       extra={"bias_seed": bias_seed, "weight_seed": seed,
                                              "bias_reseeds": attempt, "lm_head_scale": lm_f})
        del model
        if fp8:
            ref["fp8"] = fp8_extra(d, stored, cfg, seqs)
            shutil.rmtree(load_dir, ignore_errors=True)
        r = ref["routing"]
        print(f"  {name} attempt {attempt}: divergences={r['group_mask_divergences']} "
              f"expert<1e-5={r['expert_margin_below_1e-5']} group<1e-5={r['group_margin_below_1e-5']} "
              f"emin={r['expert_margin_min']:.3g} gmin={r['group_margin_min']} "
              f"bias_changed={r['bias_changed_selection']}/{r['tokens_routed']}", flush=True)
        last = ref
        if routing_ok(ref) or cfg["topk_method"] != "noaux_tc":
            break
    sanity(name, last["logit_stats"])
    write_ref(d, last)
    return last, (bf16 if not fp8 else None)


def fp8_shards(stored, cfg):
    """Two shards: layers < last in shard 1, last layer + norm + lm_head in shard 2; plus one
    weight_scale_inv moved away from its weight in each direction."""
    last = cfg["num_hidden_layers"] - 1
    s1, s2 = {}, {}
    for k, v in stored.items():
        if k.startswith(f"model.layers.{last}.") or k in ("model.norm.weight", "lm_head.weight"):
            s2[k] = v
        else:
            s1[k] = v
    a = "model.layers.1.self_attn.kv_a_proj_with_mqa.weight_scale_inv"  # weight in shard 1
    s2[a] = s1.pop(a)
    b = f"model.layers.{last}.mlp.experts.3.down_proj.weight_scale_inv"  # weight in shard 2
    s1[b] = s2.pop(b)
    return [s1, s2]


def fp8_extra(d, stored, cfg, seqs):
    info = {"fp8_tensors": sum(1 for k in stored if k.endswith("_scale_inv")),
            "split_pairs": ["model.layers.1.self_attn.kv_a_proj_with_mqa",
                            f"model.layers.{cfg['num_hidden_layers'] - 1}.mlp.experts.3.down_proj"],
            "scale_rule": "scale_inv = amax(|W_bf16 block|)/448 over the real elements of each 128x128 block; "
                          "W_fp8 = e4m3fn(W/scale_inv) (round to nearest even); dequant = float(W_fp8)*scale_inv",
            "reference": "transformers fp32 on the dequantized weights (F32 safetensors written to a temp dir "
                         "with the same config minus quantization_config, then from_pretrained)"}
    # cross-check: can transformers load the FP8 checkpoint itself?
    try:
        if not torch.cuda.is_available():
            raise RuntimeError("no cuda")
        m = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", device_map="cuda")
        m.eval()
        ref = np.load(os.path.join(d, "logits_1.npy"))
        with torch.no_grad():
            lg = m(input_ids=torch.tensor([seqs[1]], device="cuda"), use_cache=False).logits[0].float().cpu().numpy()
        info["hf_native_fp8_load"] = {
            "ok": True,
            "max_abs_diff_vs_reference_seq1": float(np.abs(lg - ref).max()),
            "reference_std": float(ref.std()),
            "argmax_agree": float((lg.argmax(-1) == ref.argmax(-1)).mean()),
            "param_dtypes": sorted({str(p.dtype) for p in m.parameters()}),
        }
        del m
        torch.cuda.empty_cache()
    except Exception as e:
        info["hf_native_fp8_load"] = {"ok": False, "error": repr(e)[:500]}
    return info


def gen_dense(out_root, name, base_cfg, seed, notes):
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    for fn in os.listdir(d):
        os.remove(os.path.join(d, fn))
    cfg = copy.deepcopy(base_cfg)
    seqs, prompts = make_sequences(cfg["vocab_size"], seed + 1000)
    t = dense_tensors(cfg, seed)
    write_config(d, cfg)
    write_single(d, t)
    t, std0, f = fit_lm_head(d, cfg, t, seqs)
    if f != 1.0:
        print(f"  {name}: logits std {std0:.3f}, output matrix scaled by {f:.3f}", flush=True)
        write_single(d, t)
    if cfg["tie_word_embeddings"]:
        assert "lm_head.weight" not in load_file(os.path.join(d, "model.safetensors"))
    ref, model = compute_reference(d, t, cfg, seqs, prompts, name, d, notes, extra={"weight_seed": seed})
    del model
    sanity(name, ref["logit_stats"])
    write_ref(d, ref)
    return ref
