"""Checkpoint files: config.json and single or sharded safetensors.

Part of tools/gen_model_refs.py (see its docstring).
"""

import json
import os

from safetensors.torch import save_file


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
