// ModelConfig: the typed form of a Hugging Face config.json for the model
// families r1serve runs: deepseek_v3 (R1, V3), deepseek_v2 (V2-Lite), qwen2 and
// llama (the R1 distills). Semantics follow shared/docs/deepseek-v3-reference.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace r1::io {

enum class ModelArch { kDeepseekV3, kDeepseekV2, kQwen2, kLlama };
const char* arch_name(ModelArch a);

enum class RopeType { kDefault, kYarn, kLlama3 };

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;
  int64_t original_max_position = 0;
  // YaRN
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
};

enum class ScoringFunc { kSigmoid, kSoftmax };
enum class TopkMethod { kNoauxTc, kGreedy, kGroupLimitedGreedy };

struct ModelConfig {
  ModelArch arch = ModelArch::kLlama;
  std::string model_type;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // dense FFN width
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // dense GQA only
  int64_t head_dim = 0;      // dense GQA only
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // qwen2: biases on q/k/v projections
  RopeConfig rope;

  // MLA (deepseek_v2 / deepseek_v3)
  int64_t q_lora_rank = 0;  // 0: plain q_proj (V2-Lite)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  // Rope dims of q/k stored as interleaved pairs (DeepSeek's layout; HF's
  // DeepseekV3Config.rope_interleave, default true). False for dense models.
  bool rope_interleave = false;

  // DeepSeekMoE
  int64_t moe_intermediate_size = 0;
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  double routed_scaling_factor = 1.0;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  TopkMethod topk_method = TopkMethod::kGreedy;
  bool norm_topk_prob = false;
  int64_t num_nextn_predict_layers = 0;

  // FP8 block quantization (quantization_config.quant_method == "fp8")
  bool fp8 = false;
  int64_t fp8_block_rows = 128;
  int64_t fp8_block_cols = 128;

  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  std::string torch_dtype;  // "bfloat16", "float32", ...

  bool is_mla() const { return arch == ModelArch::kDeepseekV3 || arch == ModelArch::kDeepseekV2; }
  // True when decoder layer `layer` uses the MoE FFN.
  bool is_moe_layer(int64_t layer) const;
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Softmax scale of attention, including YaRN's mscale^2 for MLA.
  double attention_scale() const;
  // Values cached per token per layer (MLA: kv_lora_rank + qk_rope_head_dim;
  // dense: 2 * num_kv_heads * head_dim).
  int64_t kv_values_per_token() const;
  // Total parameter count of the main model (no MTP layer).
  int64_t parameter_count() const;
};

// Parses config.json text; `source` names the file in error messages.
// Unknown model_type gives an error listing the supported ones.
Result<ModelConfig> parse_model_config(const std::string& json_text, const std::string& source);
// Reads DIR/config.json.
Result<ModelConfig> load_model_config(const std::string& model_dir);

}  // namespace r1::io
