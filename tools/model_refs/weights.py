"""Random weights with fixed seeds, and DeepSeek's FP8 block quantization.

Part of tools/gen_model_refs.py (see its docstring).
"""

import math

import torch

from .configs import FP8_LINEARS


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
