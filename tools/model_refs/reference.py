"""Loading a written checkpoint into transformers and computing its reference outputs.

Part of tools/gen_model_refs.py (see its docstring).
"""

import json
import math
import os

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, GenerationConfig

from .configs import GREEDY_NEW_TOKENS, GREEDY_PROMPT_LENGTHS, HIDDEN_DUMP_SEQ, SEQ_LENGTHS


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
