#!/usr/bin/env python3
"""Generate tiny random-weight checkpoints plus reference logits and greedy
continuations computed by Hugging Face transformers in float32.

Runs on the GPU test machine (torch + transformers + safetensors + numpy); the
whole computation is on the CPU in float32 (eager attention), so the result is
the function the checkpoint files define, as transformers computes it.

    python3 tools/gen_model_refs.py --out DIR [--only NAME[,NAME...]]

writes DIR/<model>/{config.json, *.safetensors[, index], reference.json,
logits_<k>.npy, hidden_<k>.npy} and DIR/generation_info.json.
See tests/data/models/README.md for what each model covers.
"""

import argparse
import copy
import inspect
import json
import math
import os
import re
import shutil
import sys
import tempfile
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

SEQ_LENGTHS = [300, 40, 7]
GREEDY_PROMPT_LENGTHS = [10, 50]
GREEDY_NEW_TOKENS = 32
HIDDEN_DUMP_SEQ = 2  # index of the sequence whose per-layer hidden states are dumped
FP8_LINEARS = ("q_a_proj", "q_b_proj", "q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
               "gate_proj", "up_proj", "down_proj")

# --------------------------------------------------------------------------------------
# configs (official hub key names; values tiny)
# --------------------------------------------------------------------------------------

V3_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": 512,
    "hidden_size": 144,
    "intermediate_size": 192,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 3,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "n_routed_experts": 16,
    "n_shared_experts": 1,
    "num_experts_per_tok": 4,
    "n_group": 4,
    "topk_group": 2,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "norm_topk_prob": True,
    "q_lora_rank": 96,
    "kv_lora_rank": 128,
    "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 32,
    "v_head_dim": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-06,
    "max_position_embeddings": 5120,
    "rope_theta": 10000,
    "rope_scaling": {
        "type": "yarn",
        "factor": 40,
        "original_max_position_embeddings": 128,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    },
    "attention_bias": False,
    "attention_dropout": 0.0,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "num_nextn_predict_layers": 0,
    "initializer_range": 0.02,
    "aux_loss_alpha": 0.001,
    "seq_aux": True,
    "ep_size": 1,
    "pretraining_tp": 1,
    "use_cache": True,
    "torch_dtype": "bfloat16",
}

FP8_QUANT_CONFIG = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [128, 128],
}

V2_CONFIG = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "model_type": "deepseek_v2",
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 256,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 3,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "n_routed_experts": 16,
    "n_shared_experts": 2,
    "num_experts_per_tok": 4,
    "n_group": 1,
    "topk_group": 1,
    "topk_method": "greedy",
    "scoring_func": "softmax",
    "norm_topk_prob": False,
    "routed_scaling_factor": 1.0,
    "q_lora_rank": None,
    "kv_lora_rank": 64,
    "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 16,
    "v_head_dim": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-06,
    "max_position_embeddings": 5120,
    "rope_theta": 10000,
    "rope_scaling": {
        "type": "yarn",
        "factor": 40,
        "original_max_position_embeddings": 128,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 0.707,
        "mscale_all_dim": 0.707,
    },
    "attention_bias": False,
    "attention_dropout": 0.0,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "initializer_range": 0.02,
    "aux_loss_alpha": 0.001,
    "seq_aux": True,
    "ep_size": 1,
    "pretraining_tp": 1,
    "use_cache": True,
    "torch_dtype": "bfloat16",
}

QWEN2_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "sliding_window": 4096,
    "max_window_layers": 3,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "use_cache": True,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "torch_dtype": "bfloat16",
}

LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    "tie_word_embeddings": False,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "mlp_bias": False,
    "initializer_range": 0.02,
    "pretraining_tp": 1,
    "use_cache": True,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "torch_dtype": "bfloat16",
}

# --------------------------------------------------------------------------------------
# random weights
# --------------------------------------------------------------------------------------


class Rng:
    def __init__(self, seed):
        self.g = torch.Generator(device="cpu")
        self.g.manual_seed(seed)

    def normal(self, shape, std):
        return (torch.randn(shape, generator=self.g, dtype=torch.float32) * std).to(torch.bfloat16)

    def linear(self, out_f, in_f, gain=1.0):
        return self.normal([out_f, in_f], gain / math.sqrt(in_f))

    def norm(self, n):
        w = 1.0 + 0.2 * torch.randn([n], generator=self.g, dtype=torch.float32)
        return w.to(torch.bfloat16)

    def uniform(self, shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=self.g, dtype=torch.float32)


def deepseek_tensors(cfg, seed, bias_seed):
    r = Rng(seed)
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    nh = cfg["num_attention_heads"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    ql, kvl = cfg["q_lora_rank"], cfg["kv_lora_rank"]
    E, Im = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
    Is = Im * cfg["n_shared_experts"]
    use_bias = cfg["topk_method"] == "noaux_tc"
    t = {}
    t["model.embed_tokens.weight"] = r.normal([V, H], 1.0)
    for L in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{L}."
        t[p + "input_layernorm.weight"] = r.norm(H)
        if ql:
            t[p + "self_attn.q_a_proj.weight"] = r.linear(ql, H)
            t[p + "self_attn.q_a_layernorm.weight"] = r.norm(ql)
            t[p + "self_attn.q_b_proj.weight"] = r.linear(nh * (nope + rope), ql)
        else:
            t[p + "self_attn.q_proj.weight"] = r.linear(nh * (nope + rope), H)
        t[p + "self_attn.kv_a_proj_with_mqa.weight"] = r.linear(kvl + rope, H)
        t[p + "self_attn.kv_a_layernorm.weight"] = r.norm(kvl)
        t[p + "self_attn.kv_b_proj.weight"] = r.linear(nh * (nope + vd), kvl)
        t[p + "self_attn.o_proj.weight"] = r.linear(H, nh * vd)
        t[p + "post_attention_layernorm.weight"] = r.norm(H)
        if L < cfg["first_k_dense_replace"]:
            I = cfg["intermediate_size"]
            t[p + "mlp.gate_proj.weight"] = r.linear(I, H)
            t[p + "mlp.up_proj.weight"] = r.linear(I, H)
            t[p + "mlp.down_proj.weight"] = r.linear(H, I)
        else:
            t[p + "mlp.gate.weight"] = r.linear(E, H, gain=1.5)
            for e in range(E):
                t[p + f"mlp.experts.{e}.gate_proj.weight"] = r.linear(Im, H)
                t[p + f"mlp.experts.{e}.up_proj.weight"] = r.linear(Im, H)
                t[p + f"mlp.experts.{e}.down_proj.weight"] = r.linear(H, Im)
            t[p + "mlp.shared_experts.gate_proj.weight"] = r.linear(Is, H)
            t[p + "mlp.shared_experts.up_proj.weight"] = r.linear(Is, H)
            t[p + "mlp.shared_experts.down_proj.weight"] = r.linear(H, Is)
    t["model.norm.weight"] = r.norm(H)
    t["lm_head.weight"] = r.linear(V, H, gain=2.0)
    if use_bias:
        rb = Rng(bias_seed)
        for L in range(cfg["first_k_dense_replace"], cfg["num_hidden_layers"]):
            # F32, like the official checkpoint; random non-zero so selection depends on it
            t[f"model.layers.{L}.mlp.gate.e_score_correction_bias"] = rb.uniform([E], -0.25, 0.25)
    return t


def dense_tensors(cfg, seed):
    r = Rng(seed)
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = H // nh
    I = cfg["intermediate_size"]
    qwen = cfg["model_type"] == "qwen2"
    t = {}
    tied = cfg["tie_word_embeddings"]
    t["model.embed_tokens.weight"] = r.normal([V, H], 1.5 / math.sqrt(H) if tied else 1.0)
    for L in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{L}."
        t[p + "input_layernorm.weight"] = r.norm(H)
        t[p + "self_attn.q_proj.weight"] = r.linear(nh * hd, H)
        t[p + "self_attn.k_proj.weight"] = r.linear(nkv * hd, H)
        t[p + "self_attn.v_proj.weight"] = r.linear(nkv * hd, H)
        if qwen:
            t[p + "self_attn.q_proj.bias"] = r.normal([nh * hd], 0.5)
            t[p + "self_attn.k_proj.bias"] = r.normal([nkv * hd], 0.5)
            t[p + "self_attn.v_proj.bias"] = r.normal([nkv * hd], 0.5)
        t[p + "self_attn.o_proj.weight"] = r.linear(H, nh * hd)
        t[p + "post_attention_layernorm.weight"] = r.norm(H)
        t[p + "mlp.gate_proj.weight"] = r.linear(I, H)
        t[p + "mlp.up_proj.weight"] = r.linear(I, H)
        t[p + "mlp.down_proj.weight"] = r.linear(H, I)
    t["model.norm.weight"] = r.norm(H)
    if not tied:
        t["lm_head.weight"] = r.linear(V, H, gain=2.0)
    return t


# --------------------------------------------------------------------------------------
# FP8 block quantization (DeepSeek layout)
# --------------------------------------------------------------------------------------


def is_fp8_linear(name):
    if not name.endswith(".weight"):
        return False
    if ".mlp.gate.weight" in name:  # router stays BF16
        return False
    return name.split(".")[-2] in FP8_LINEARS


def fp8_quantize(w, block=128):
    """w: [out, in] float tensor -> (q F8_E4M3 [out,in], scale_inv F32 [ceil(out/128), ceil(in/128)]).
    scale = amax(|block|) / 448 (partial edge blocks use only the real elements, i.e. zero padding),
    q = fp8(w / scale); dequantized W = float(q) * scale."""
    w = w.float()
    out_f, in_f = w.shape
    nb_o, nb_i = (out_f + block - 1) // block, (in_f + block - 1) // block
    scale = torch.empty(nb_o, nb_i, dtype=torch.float32)
    q = torch.empty(out_f, in_f, dtype=torch.float8_e4m3fn)
    for i in range(nb_o):
        for j in range(nb_i):
            blk = w[i * block:(i + 1) * block, j * block:(j + 1) * block]
            s = max(blk.abs().max().item(), 1e-12) / 448.0
            s = torch.tensor(s, dtype=torch.float32)
            scale[i, j] = s
            q[i * block:(i + 1) * block, j * block:(j + 1) * block] = (blk / s).clamp(-448.0, 448.0).to(
                torch.float8_e4m3fn)
    return q, scale


def fp8_dequantize(q, scale, block=128):
    w = q.float()
    out_f, in_f = w.shape
    s = scale.repeat_interleave(block, 0)[:out_f].repeat_interleave(block, 1)[:, :in_f]
    return w * s


# --------------------------------------------------------------------------------------
# file writing
# --------------------------------------------------------------------------------------


def write_config(d, cfg):
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def contiguous(t):
    return {k: v.contiguous() for k, v in t.items()}


def write_single(d, tensors):
    save_file(contiguous(tensors), os.path.join(d, "model.safetensors"), metadata={"format": "pt"})


def write_sharded(d, shards):
    """shards: list of dicts name->tensor. Writes model-0000i-of-0000n.safetensors + index."""
    n = len(shards)
    weight_map, total = {}, 0
    for i, sh in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file(contiguous(sh), os.path.join(d, fn), metadata={"format": "pt"})
        for k, v in sh.items():
            weight_map[k] = fn
            total += v.numel() * v.element_size()
    idx = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(idx, f, indent=2)
        f.write("\n")


# --------------------------------------------------------------------------------------
# loading + reference computation
# --------------------------------------------------------------------------------------


def load_fp32(d):
    kw = dict(attn_implementation="eager", output_loading_info=True)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, **kw)
    except TypeError:
        model, info = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32, **kw)
    model.eval()
    problems = {k: list(map(str, v)) for k, v in info.items() if v}
    # a tied model has no lm_head.weight in the file; the tie is verified by the caller
    if "missing_keys" in problems and problems["missing_keys"] == ["lm_head.weight"] and \
            getattr(model.config, "tie_word_embeddings", False):
        del problems["missing_keys"]
    if problems:
        raise RuntimeError(f"loading {d}: {problems}")
    for n, p in list(model.named_parameters()) + list(model.named_buffers()):
        if p.is_floating_point() and p.dtype != torch.float32:
            raise RuntimeError(f"{n} has dtype {p.dtype} after fp32 load")
    return model


def get_layers(model):
    return model.model.layers


class RoutingCapture:
    """Captures the inputs of every MoE block (pre-hook) so the routing can be re-done
    independently with both group-mask fills (0.0 as HF V2 and older HF V3, -inf as DeepSeek/vLLM)."""

    def __init__(self, model, cfg):
        self.inputs = {}
        self.handles = []
        self.active = False
        first = cfg.get("first_k_dense_replace", None)
        if first is None:
            return
        for L, layer in enumerate(get_layers(model)):
            if L < first:
                continue
            self.inputs[L] = []

            def hook(mod, args, kwargs, L=L):
                if self.active:
                    x = args[0] if args else kwargs["hidden_states"]
                    self.inputs[L].append(x.detach().reshape(-1, x.shape[-1]).float().clone())
            self.handles.append(layer.mlp.register_forward_pre_hook(hook, with_kwargs=True))

    def remove(self):
        for h in self.handles:
            h.remove()


def route(x, W, bias, cfg, fill):
    """Re-implementation of the routing decision. Returns (sorted idx [T,k], expert margin [T],
    group margin [T] or None)."""
    logits = x.float() @ W.float().t()
    if cfg["scoring_func"] == "sigmoid":
        s = logits.sigmoid()
    else:
        s = logits.softmax(dim=-1)
    c = s + bias if bias is not None else s.clone()
    T, E = c.shape
    ng, tg, k = cfg["n_group"], cfg["topk_group"], cfg["num_experts_per_tok"]
    gmargin = None
    if ng > 1 and cfg["topk_method"] in ("noaux_tc", "group_limited_greedy"):
        grouped = c.view(T, ng, E // ng)
        if cfg["topk_method"] == "noaux_tc":
            gs = grouped.topk(2, dim=-1).values.sum(-1)
        else:
            gs = grouped.max(dim=-1).values
        gsorted = gs.sort(dim=-1, descending=True).values
        gmargin = gsorted[:, tg - 1] - gsorted[:, tg]
        gidx = gs.topk(tg, dim=-1).indices
        gmask = torch.zeros_like(gs).scatter_(1, gidx, 1.0)
        smask = gmask.unsqueeze(-1).expand(T, ng, E // ng).reshape(T, E).bool()
        c = c.masked_fill(~smask, fill)
    cs = c.sort(dim=-1, descending=True)
    emargin = cs.values[:, k - 1] - cs.values[:, k]
    idx = c.topk(k, dim=-1).indices.sort(dim=-1).values
    return idx, emargin, gmargin


def analyze_routing(cap, tensors, cfg):
    stats = {"tokens_routed": 0, "group_mask_divergences": 0, "bias_changed_selection": 0,
             "expert_margin_min": None, "expert_margin_below_1e-5": 0,
             "group_margin_min": None, "group_margin_below_1e-5": 0,
             "expert_usage": {}}
    emins, gmins = [], []
    for L, xs in cap.inputs.items():
        if not xs:
            continue
        x = torch.cat(xs, 0)
        W = tensors_f32(tensors, f"model.layers.{L}.mlp.gate.weight")
        bname = f"model.layers.{L}.mlp.gate.e_score_correction_bias"
        bias = tensors[bname].float() if bname in tensors else None
        idx_inf, em, gm = route(x, W, bias, cfg, float("-inf"))
        idx_zero, _, _ = route(x, W, bias, cfg, 0.0)
        stats["tokens_routed"] += x.shape[0]
        stats["group_mask_divergences"] += int((idx_inf != idx_zero).any(dim=-1).sum())
        if bias is not None:
            idx_nb, _, _ = route(x, W, None, cfg, float("-inf"))
            stats["bias_changed_selection"] += int((idx_inf != idx_nb).any(dim=-1).sum())
        emins.append(em.min().item())
        stats["expert_margin_below_1e-5"] += int((em < 1e-5).sum())
        if gm is not None:
            gmins.append(gm.min().item())
            stats["group_margin_below_1e-5"] += int((gm < 1e-5).sum())
        usage = torch.bincount(idx_inf.flatten(), minlength=cfg["n_routed_experts"])
        stats["expert_usage"][str(L)] = usage.tolist()
    stats["expert_margin_min"] = min(emins) if emins else None
    stats["group_margin_min"] = min(gmins) if gmins else None
    return stats


def tensors_f32(tensors, name):
    return tensors[name].float()


def logit_stats(lg):
    t = torch.from_numpy(lg)
    top2 = t.topk(2, dim=-1).values
    margin = top2[:, 0] - top2[:, 1]
    return {
        "std": float(t.std()),
        "mean": float(t.mean()),
        "absmax": float(t.abs().max()),
        "distinct_argmax": int(t.argmax(-1).unique().numel()),
        "top2_margin_min": float(margin.min()),
        "top2_margin_below_1e-3": int((margin <= 1e-3).sum()),
    }


def sanity(name, stats_list):
    for k, s in enumerate(stats_list):
        if not math.isfinite(s["std"]) or not math.isfinite(s["absmax"]):
            raise RuntimeError(f"{name} seq {k}: non-finite logits")
        if not (0.5 <= s["std"] <= 5.0):
            raise RuntimeError(f"{name} seq {k}: logits std {s['std']} outside [0.5, 5]")
    big = stats_list[0]
    if big["distinct_argmax"] < 2:
        raise RuntimeError(f"{name}: all argmaxes identical")
    n = SEQ_LENGTHS[0]
    if big["top2_margin_below_1e-3"] > 0.05 * n:
        raise RuntimeError(f"{name}: too many near-tied argmaxes ({big['top2_margin_below_1e-3']})")


def make_sequences(vocab, seed):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in SEQ_LENGTHS]
    prompts = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in GREEDY_PROMPT_LENGTHS]
    return seqs, prompts


def greedy(model, prompt, cfg):
    ids = torch.tensor([prompt])
    gc = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=GREEDY_NEW_TOKENS,
                          eos_token_id=None, pad_token_id=cfg["bos_token_id"],
                          bos_token_id=cfg["bos_token_id"], use_cache=True)
    model.generation_config = gc
    method = "generate"
    try:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc)
        new = out[0, len(prompt):].tolist()
        if len(new) != GREEDY_NEW_TOKENS:
            raise RuntimeError(f"generate returned {len(new)} new tokens")
    except Exception as e:
        print(f"  generate failed ({e!r}); falling back to full-forward greedy", flush=True)
        method = "full-forward argmax loop (generate failed: %r)" % (e,)
        seq = list(prompt)
        with torch.no_grad():
            for _ in range(GREEDY_NEW_TOKENS):
                lg = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
                seq.append(int(lg.argmax()))
        new = seq[len(prompt):]
    return new, method


def teacher_forced_check(model, prompt, new):
    full = prompt + new
    with torch.no_grad():
        lg = model(input_ids=torch.tensor([full[:-1]]), use_cache=False).logits[0].float()
    pred = lg[len(prompt) - 1:].argmax(-1).tolist()
    top2 = lg[len(prompt) - 1:].topk(2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1])
    mism = sum(1 for a, b in zip(pred, new) if a != b)
    return mism, float(margin.min())


def rope_info(model):
    info = {}
    try:
        rot = model.model.rotary_emb
        info["inv_freq"] = [float(v) for v in rot.inv_freq.float().tolist()]
        info["attention_scaling"] = float(getattr(rot, "attention_scaling", 1.0))
    except Exception as e:
        info["error"] = repr(e)
    try:
        info["softmax_scale"] = float(get_layers(model)[0].self_attn.scaling)
    except Exception as e:
        info["softmax_scale_error"] = repr(e)
    return info


def config_as_loaded(model):
    d = model.config.to_dict()
    keep = {}
    for k, v in d.items():
        if k in ("id2label", "label2id", "architectures", "transformers_version"):
            continue
        try:
            json.dumps(v)
            keep[k] = v
        except TypeError:
            keep[k] = str(v)
    return keep


def compute_reference(load_dir, file_tensors, cfg, seqs, prompts, name, out_dir, notes, extra=None):
    """Load from files in fp32, compute logits/greedy, routing stats; write npy + reference.json
    into out_dir. Returns the reference dict."""
    model = load_fp32(load_dir)
    if cfg.get("tie_word_embeddings"):
        if not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight):
            raise RuntimeError("tied model: lm_head != embed_tokens after load")
    # check a few stored tensors came through unchanged
    for L in range(cfg["num_hidden_layers"]):
        bname = f"model.layers.{L}.mlp.gate.e_score_correction_bias"
        if bname in file_tensors:
            got = get_layers(model)[L].mlp.gate.e_score_correction_bias.float()
            if not torch.equal(got, file_tensors[bname].float()):
                raise RuntimeError(f"{bname} did not load")
    cap = RoutingCapture(model, cfg)
    cap.active = True
    logits_stats = []
    for k, s in enumerate(seqs):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([s]), use_cache=False,
                        output_hidden_states=(k == HIDDEN_DUMP_SEQ))
        lg = out.logits[0].float().numpy().astype("<f4")
        assert lg.shape == (len(s), cfg["vocab_size"])
        np.save(os.path.join(out_dir, f"logits_{k}.npy"), lg)
        if k == HIDDEN_DUMP_SEQ:
            hs = torch.stack([h[0].float() for h in out.hidden_states]).numpy().astype("<f4")
            np.save(os.path.join(out_dir, f"hidden_{k}.npy"), hs)
        logits_stats.append(logit_stats(lg))
    greedy_out = []
    for p in prompts:
        new, method = greedy(model, p, cfg)
        greedy_out.append({"prompt": p, "output": new, "method": method})
    cap.active = False
    for g in greedy_out:
        mism, mmin = teacher_forced_check(model, g["prompt"], g["output"])
        g["full_forward_argmax_mismatches"] = mism
        g["top2_margin_min"] = mmin
    routing = analyze_routing(cap, file_tensors, cfg) if cap.inputs else None
    cap.remove()
    ref = {
        "model": name,
        "sequences": seqs,
        "logits_files": [f"logits_{k}.npy" for k in range(len(seqs))],
        "hidden_states_file": {"sequence": HIDDEN_DUMP_SEQ, "file": f"hidden_{HIDDEN_DUMP_SEQ}.npy",
                               "shape": "[num_hidden_layers+1, len, hidden_size]",
                               "meaning": "transformers output_hidden_states: entry 0 = embeddings, "
                                          "entry i = output of layer i-1; see README for the last entry"},
        "greedy": greedy_out,
        "logit_stats": logits_stats,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "dtype": "float32",
        "device": "cpu",
        "attn_implementation": "eager",
        "group_mask_divergences": routing["group_mask_divergences"] if routing else 0,
        "routing": routing,
        "rope": rope_info(model),
        "config_as_loaded": config_as_loaded(model),
        "notes": notes,
    }
    if extra:
        ref.update(extra)
    return ref, model


# --------------------------------------------------------------------------------------
# per-model drivers
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# source inspection (facts about this transformers version)
# --------------------------------------------------------------------------------------


def grep_source(modname, patterns):
    try:
        mod = __import__(modname, fromlist=["x"])
        src = inspect.getsource(mod)
    except Exception as e:
        return {"error": repr(e)}
    lines = src.splitlines()
    hits = []
    for i, ln in enumerate(lines):
        if any(re.search(p, ln) for p in patterns):
            hits.append(f"{i + 1}: {ln.rstrip()}")
    return {"file": getattr(mod, "__file__", None), "hits": hits[:80]}


def inspect_transformers():
    v2 = grep_source("transformers.models.deepseek_v2.modeling_deepseek_v2",
                     [r"mscale", r"self\.scaling", r"masked_fill", r"topk_method", r"softmax", r"RMSNorm\(",
                      r"rope_interleave", r"view_as_complex|apply_rotary"])
    v3 = grep_source("transformers.models.deepseek_v3.modeling_deepseek_v3",
                     [r"mscale", r"self\.scaling", r"masked_fill", r"q_a_layernorm =", r"kv_a_layernorm =",
                      r"rope_interleave", r"1e-20", r"routed_scaling_factor"])
    rope = grep_source("transformers.modeling_rope_utils",
                       [r"def _compute_yarn", r"truncate", r"mscale", r"attention_factor", r"def _compute_llama3"])
    facts = {}
    for key, res in (("deepseek_v3_group_mask_fill", v3), ("deepseek_v2_group_mask_fill", v2)):
        fills = [h for h in res.get("hits", []) if "masked_fill" in h]
        facts[key] = fills[0].split("masked_fill", 1)[1].strip() if fills else None
    return {"deepseek_v2": v2, "deepseek_v3": v3, "rope_utils": rope, "facts": facts}


# --------------------------------------------------------------------------------------


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
