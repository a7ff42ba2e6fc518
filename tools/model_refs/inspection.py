"""Facts about the installed transformers, read from its source.

Part of tools/gen_model_refs.py (see its docstring).
"""

import inspect
import re


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
