// config.json -> ModelConfig. Absent keys take the defaults of transformers'
// config classes (DeepseekV3Config, DeepseekV2Config, Qwen2Config,
// LlamaConfig), except the core sizes, which are required: a config without
// them is broken, and a silent 7B-sized default would hide it.
#include "io/model_config.h"

#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include "io/json_strict.h"

namespace r1::io {

namespace {

using json = nlohmann::json;

constexpr const char* kSupported = "deepseek_v3, deepseek_v2, qwen2, llama";

// Typed access to the fields of one JSON object; errors name the source file
// and the field path ("rope_scaling.factor").
class Fields {
 public:
  Fields(const json& obj, const std::string& source, std::string prefix = "")
      : obj_(obj), source_(source), prefix_(std::move(prefix)) {}

  const json* get(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool present(const char* key) const { return obj_.find(key) != obj_.end(); }
  bool is_null(const char* key) const {
    auto it = obj_.find(key);
    return it != obj_.end() && it->is_null();
  }

  Status error(const char* key, const std::string& what) const {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("'{}': field '{}{}' {}", source_, prefix_, key, what));
  }
  Status missing(const char* key) const {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("'{}': missing required field '{}{}'", source_, prefix_, key));
  }

  // Leaves *out unchanged when the key is absent or null.
  Status opt_int(const char* key, int64_t* out) const {
    const json* v = get(key);
    if (v == nullptr) return Status::ok();
    if (v->is_number_integer()) {
      if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t{INT64_MAX})
        return error(key, "is too large");
      *out = v->get<int64_t>();
      return Status::ok();
    }
    if (v->is_number_float()) {
      double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) {
        *out = static_cast<int64_t>(d);
        return Status::ok();
      }
    }
    return error(key, fmt::format("must be an integer, found {} {}", json_kind(*v), v->dump()));
  }
  Status req_int(const char* key, int64_t* out) const {
    if (get(key) == nullptr) return missing(key);
    return opt_int(key, out);
  }
  Status opt_double(const char* key, double* out) const {
    const json* v = get(key);
    if (v == nullptr) return Status::ok();
    if (!v->is_number())
      return error(key, fmt::format("must be a number, found {} {}", json_kind(*v), v->dump()));
    *out = v->get<double>();
    return Status::ok();
  }
  Status req_double(const char* key, double* out) const {
    if (get(key) == nullptr) return missing(key);
    return opt_double(key, out);
  }
  Status opt_bool(const char* key, bool* out) const {
    const json* v = get(key);
    if (v == nullptr) return Status::ok();
    if (!v->is_boolean())
      return error(key,
                   fmt::format("must be true or false, found {} {}", json_kind(*v), v->dump()));
    *out = v->get<bool>();
    return Status::ok();
  }
  Status opt_string(const char* key, std::string* out) const {
    const json* v = get(key);
    if (v == nullptr) return Status::ok();
    if (!v->is_string())
      return error(key, fmt::format("must be a string, found {} {}", json_kind(*v), v->dump()));
    *out = v->get<std::string>();
    return Status::ok();
  }

 private:
  const json& obj_;
  const std::string& source_;
  std::string prefix_;
};

Status parse_rope(const Fields& top, const json& root, const std::string& source, ModelConfig* c) {
  R1_RETURN_IF_ERROR(top.opt_double("rope_theta", &c->rope.theta));
  // transformers 5 writes rope_parameters (rope_theta inside); older files
  // rope_scaling (type or rope_type) next to a top-level rope_theta.
  const char* key = nullptr;
  if (top.get("rope_parameters") != nullptr) {
    key = "rope_parameters";
  } else if (top.get("rope_scaling") != nullptr) {
    key = "rope_scaling";
  } else {
    c->rope.type = RopeType::kDefault;
    return Status::ok();
  }
  const json& obj = root.at(key);
  if (!obj.is_object())
    return top.error(key, fmt::format("must be an object, found {}", json_kind(obj)));
  Fields f(obj, source, std::string(key) + ".");
  R1_RETURN_IF_ERROR(f.opt_double("rope_theta", &c->rope.theta));
  std::string type;
  const char* type_key = f.get("rope_type") != nullptr ? "rope_type" : "type";
  R1_RETURN_IF_ERROR(f.opt_string(type_key, &type));
  if (type.empty() || type == "default") {
    c->rope.type = RopeType::kDefault;
  } else if (type == "yarn") {
    c->rope.type = RopeType::kYarn;
    R1_RETURN_IF_ERROR(f.req_double("factor", &c->rope.factor));
    c->rope.original_max_position = c->max_position_embeddings;
    R1_RETURN_IF_ERROR(
        f.opt_int("original_max_position_embeddings", &c->rope.original_max_position));
    R1_RETURN_IF_ERROR(f.opt_double("beta_fast", &c->rope.beta_fast));
    R1_RETURN_IF_ERROR(f.opt_double("beta_slow", &c->rope.beta_slow));
    R1_RETURN_IF_ERROR(f.opt_double("mscale", &c->rope.mscale));
    R1_RETURN_IF_ERROR(f.opt_double("mscale_all_dim", &c->rope.mscale_all_dim));
  } else if (type == "llama3") {
    c->rope.type = RopeType::kLlama3;
    R1_RETURN_IF_ERROR(f.req_double("factor", &c->rope.factor));
    R1_RETURN_IF_ERROR(f.req_double("low_freq_factor", &c->rope.low_freq_factor));
    R1_RETURN_IF_ERROR(f.req_double("high_freq_factor", &c->rope.high_freq_factor));
    R1_RETURN_IF_ERROR(
        f.req_int("original_max_position_embeddings", &c->rope.original_max_position));
    if (!(c->rope.high_freq_factor >= c->rope.low_freq_factor))
      return f.error("high_freq_factor", "must be >= low_freq_factor");
  } else {
    return Status(ErrorCode::kUnsupported,
                  fmt::format("'{}': field '{}.{}' is \"{}\"; supported rope types: default, "
                              "yarn, llama3",
                              source, key, type_key, type));
  }
  if (!(c->rope.theta > 0)) return f.error("rope_theta", "must be positive");
  if (c->rope.type != RopeType::kDefault) {
    if (!(c->rope.factor > 0) || !std::isfinite(c->rope.factor))
      return f.error("factor", "must be a positive number");
    if (c->rope.original_max_position <= 0)
      return f.error("original_max_position_embeddings", "must be positive");
  }
  return Status::ok();
}

Status parse_moe(const Fields& f, ModelConfig* c) {
  R1_RETURN_IF_ERROR(f.opt_int("moe_intermediate_size", &c->moe_intermediate_size));
  R1_RETURN_IF_ERROR(f.opt_int("n_routed_experts", &c->n_routed_experts));
  R1_RETURN_IF_ERROR(f.opt_int("n_shared_experts", &c->n_shared_experts));
  if (f.is_null("n_shared_experts")) c->n_shared_experts = 0;
  R1_RETURN_IF_ERROR(f.opt_int("num_experts_per_tok", &c->num_experts_per_tok));
  R1_RETURN_IF_ERROR(f.opt_int("n_group", &c->n_group));
  if (f.is_null("n_group")) c->n_group = 1;
  R1_RETURN_IF_ERROR(f.opt_int("topk_group", &c->topk_group));
  if (f.is_null("topk_group")) c->topk_group = 1;
  R1_RETURN_IF_ERROR(f.opt_int("first_k_dense_replace", &c->first_k_dense_replace));
  R1_RETURN_IF_ERROR(f.opt_int("moe_layer_freq", &c->moe_layer_freq));
  R1_RETURN_IF_ERROR(f.opt_double("routed_scaling_factor", &c->routed_scaling_factor));
  R1_RETURN_IF_ERROR(f.opt_bool("norm_topk_prob", &c->norm_topk_prob));
  R1_RETURN_IF_ERROR(f.opt_int("num_nextn_predict_layers", &c->num_nextn_predict_layers));

  std::string scoring, method;
  R1_RETURN_IF_ERROR(f.opt_string("scoring_func", &scoring));
  if (scoring == "sigmoid") {
    c->scoring_func = ScoringFunc::kSigmoid;
  } else if (scoring == "softmax") {
    c->scoring_func = ScoringFunc::kSoftmax;
  } else if (!scoring.empty()) {
    return f.error("scoring_func",
                   fmt::format("is \"{}\"; expected \"sigmoid\" or \"softmax\"", scoring));
  }
  R1_RETURN_IF_ERROR(f.opt_string("topk_method", &method));
  if (method == "noaux_tc") {
    c->topk_method = TopkMethod::kNoauxTc;
  } else if (method == "greedy" || method == "gready") {  // "gready": DeepSeek's own spelling
    c->topk_method = TopkMethod::kGreedy;
  } else if (method == "group_limited_greedy") {
    c->topk_method = TopkMethod::kGroupLimitedGreedy;
  } else if (!method.empty()) {
    return f.error("topk_method", fmt::format("is \"{}\"; expected \"noaux_tc\", \"greedy\" or "
                                              "\"group_limited_greedy\"",
                                              method));
  }
  return Status::ok();
}

Status validate(const Fields& f, const ModelConfig& c) {
  auto positive = [&](const char* key, int64_t v) -> Status {
    if (v <= 0) return f.error(key, fmt::format("must be positive, found {}", v));
    return Status::ok();
  };
  R1_RETURN_IF_ERROR(positive("vocab_size", c.vocab_size));
  R1_RETURN_IF_ERROR(positive("hidden_size", c.hidden_size));
  R1_RETURN_IF_ERROR(positive("intermediate_size", c.intermediate_size));
  R1_RETURN_IF_ERROR(positive("num_hidden_layers", c.num_layers));
  R1_RETURN_IF_ERROR(positive("num_attention_heads", c.num_heads));
  R1_RETURN_IF_ERROR(positive("max_position_embeddings", c.max_position_embeddings));
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps))
    return f.error("rms_norm_eps", "must be a positive number");
  if (c.fp8 && (c.fp8_block_rows <= 0 || c.fp8_block_cols <= 0))
    return f.error("quantization_config", "weight_block_size must be two positive integers");

  if (!c.is_mla()) {
    R1_RETURN_IF_ERROR(positive("num_key_value_heads", c.num_kv_heads));
    R1_RETURN_IF_ERROR(positive("head_dim", c.head_dim));
    if (c.num_heads % c.num_kv_heads != 0)
      return f.error("num_key_value_heads", fmt::format("({}) must divide num_attention_heads ({})",
                                                        c.num_kv_heads, c.num_heads));
    if (c.head_dim % 2 != 0) return f.error("head_dim", "must be even for rotary embeddings");
    return Status::ok();
  }
  if (c.q_lora_rank < 0) return f.error("q_lora_rank", "must be positive or null");
  R1_RETURN_IF_ERROR(positive("kv_lora_rank", c.kv_lora_rank));
  R1_RETURN_IF_ERROR(positive("qk_nope_head_dim", c.qk_nope_head_dim));
  R1_RETURN_IF_ERROR(positive("qk_rope_head_dim", c.qk_rope_head_dim));
  R1_RETURN_IF_ERROR(positive("v_head_dim", c.v_head_dim));
  if (c.qk_rope_head_dim % 2 != 0)
    return f.error("qk_rope_head_dim", "must be even for rotary embeddings");
  R1_RETURN_IF_ERROR(positive("n_routed_experts", c.n_routed_experts));
  R1_RETURN_IF_ERROR(positive("moe_intermediate_size", c.moe_intermediate_size));
  if (c.num_experts_per_tok <= 0) {
    return c.num_experts_per_tok == 0 ? f.missing("num_experts_per_tok")
                                      : f.error("num_experts_per_tok", "must be positive");
  }
  if (c.num_experts_per_tok > c.n_routed_experts)
    return f.error("num_experts_per_tok", fmt::format("({}) exceeds n_routed_experts ({})",
                                                      c.num_experts_per_tok, c.n_routed_experts));
  if (c.n_shared_experts < 0) return f.error("n_shared_experts", "must be >= 0");
  R1_RETURN_IF_ERROR(positive("n_group", c.n_group));
  if (c.n_routed_experts % c.n_group != 0)
    return f.error("n_group", fmt::format("({}) must divide n_routed_experts ({})", c.n_group,
                                          c.n_routed_experts));
  if (c.topk_group <= 0 || c.topk_group > c.n_group)
    return f.error("topk_group",
                   fmt::format("({}) must be between 1 and n_group ({})", c.topk_group, c.n_group));
  const int64_t per_group = c.n_routed_experts / c.n_group;
  if (c.topk_method == TopkMethod::kNoauxTc && per_group < 2)
    return f.error("n_group",
                   "noaux_tc scores each group by its top-2 experts; need at least 2 "
                   "experts per group");
  if (c.topk_method != TopkMethod::kGreedy && c.num_experts_per_tok > c.topk_group * per_group)
    return f.error("num_experts_per_tok",
                   fmt::format("({}) exceeds the {} experts in topk_group ({}) groups",
                               c.num_experts_per_tok, c.topk_group * per_group, c.topk_group));
  R1_RETURN_IF_ERROR(positive("moe_layer_freq", c.moe_layer_freq));
  if (c.first_k_dense_replace < 0 || c.first_k_dense_replace > c.num_layers)
    return f.error("first_k_dense_replace",
                   fmt::format("({}) must be between 0 and num_hidden_layers ({})",
                               c.first_k_dense_replace, c.num_layers));
  if (!(c.routed_scaling_factor > 0) || !std::isfinite(c.routed_scaling_factor))
    return f.error("routed_scaling_factor", "must be a positive number");
  if (c.num_nextn_predict_layers < 0) return f.error("num_nextn_predict_layers", "must be >= 0");
  return Status::ok();
}

}  // namespace

const char* arch_name(ModelArch a) {
  switch (a) {
    case ModelArch::kDeepseekV3:
      return "deepseek_v3";
    case ModelArch::kDeepseekV2:
      return "deepseek_v2";
    case ModelArch::kQwen2:
      return "qwen2";
    case ModelArch::kLlama:
      return "llama";
  }
  return "unknown";
}

Result<ModelConfig> parse_model_config(const std::string& json_text, const std::string& source) {
  R1_ASSIGN_OR_RETURN(json root, parse_json_strict(json_text, "'" + source + "'"));
  if (!root.is_object())
    return make_error(ErrorCode::kInvalidArgument, "'{}': must be a JSON object, found {}", source,
                      json_kind(root));
  Fields f(root, source);
  ModelConfig c;
  if (f.get("model_type") == nullptr)
    return make_error(ErrorCode::kInvalidArgument,
                      "'{}': missing required field 'model_type' (supported: {})", source,
                      kSupported);
  R1_RETURN_IF_ERROR(f.opt_string("model_type", &c.model_type));
  if (c.model_type == "deepseek_v3") {
    c.arch = ModelArch::kDeepseekV3;
    // DeepseekV3Config (and DeepSeek's remote configuration_deepseek.py for the
    // fields native transformers lacks: moe_layer_freq, scoring, topk_method).
    c.moe_intermediate_size = 2048;
    c.num_kv_heads = 128;
    c.n_shared_experts = 1;
    c.n_routed_experts = 256;
    c.routed_scaling_factor = 2.5;
    c.kv_lora_rank = 512;
    c.q_lora_rank = 1536;
    c.qk_rope_head_dim = 64;
    c.v_head_dim = 128;
    c.qk_nope_head_dim = 128;
    c.n_group = 8;
    c.topk_group = 4;
    c.num_experts_per_tok = 8;
    c.first_k_dense_replace = 3;
    c.moe_layer_freq = 1;
    c.norm_topk_prob = true;
    c.scoring_func = ScoringFunc::kSigmoid;
    c.topk_method = TopkMethod::kNoauxTc;
    c.num_nextn_predict_layers = 1;
    c.max_position_embeddings = 4096;
    c.rms_norm_eps = 1e-6;
    c.bos_token_id = 0;
    c.eos_token_ids = {1};
    c.rope_interleave = true;
  } else if (c.model_type == "deepseek_v2") {
    c.arch = ModelArch::kDeepseekV2;
    // DeepseekV2Config: n_group / topk_group / num_experts_per_tok are None.
    c.moe_intermediate_size = 1407;
    c.n_shared_experts = 2;
    c.n_routed_experts = 64;
    c.routed_scaling_factor = 1.0;
    c.kv_lora_rank = 512;
    c.q_lora_rank = 1536;
    c.qk_rope_head_dim = 64;
    c.v_head_dim = 128;
    c.qk_nope_head_dim = 128;
    c.n_group = 1;
    c.topk_group = 1;
    c.num_experts_per_tok = 0;  // required
    c.first_k_dense_replace = 0;
    c.moe_layer_freq = 1;
    c.norm_topk_prob = false;
    c.scoring_func = ScoringFunc::kSoftmax;
    c.topk_method = TopkMethod::kGreedy;
    c.num_nextn_predict_layers = 0;
    c.max_position_embeddings = 2048;
    c.rms_norm_eps = 1e-6;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
    c.rope_interleave = true;
  } else if (c.model_type == "qwen2") {
    c.arch = ModelArch::kQwen2;
    c.num_kv_heads = 32;  // Qwen2Config's default (None means num_attention_heads)
    c.max_position_embeddings = 32768;
    c.rms_norm_eps = 1e-6;
    c.qkv_bias = true;
  } else if (c.model_type == "llama") {
    c.arch = ModelArch::kLlama;
    c.max_position_embeddings = 2048;
    c.rms_norm_eps = 1e-6;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
  } else {
    return make_error(ErrorCode::kUnsupported,
                      "'{}': model_type \"{}\" is not supported (supported: {})", source,
                      c.model_type, kSupported);
  }
  c.rope.theta = 10000.0;
  c.tie_word_embeddings = false;

  R1_RETURN_IF_ERROR(f.req_int("vocab_size", &c.vocab_size));
  R1_RETURN_IF_ERROR(f.req_int("hidden_size", &c.hidden_size));
  R1_RETURN_IF_ERROR(f.req_int("intermediate_size", &c.intermediate_size));
  R1_RETURN_IF_ERROR(f.req_int("num_hidden_layers", &c.num_layers));
  R1_RETURN_IF_ERROR(f.req_int("num_attention_heads", &c.num_heads));
  R1_RETURN_IF_ERROR(f.opt_int("max_position_embeddings", &c.max_position_embeddings));
  R1_RETURN_IF_ERROR(f.opt_double("rms_norm_eps", &c.rms_norm_eps));
  R1_RETURN_IF_ERROR(f.opt_bool("tie_word_embeddings", &c.tie_word_embeddings));
  if (c.arch == ModelArch::kLlama) c.num_kv_heads = c.num_heads;
  R1_RETURN_IF_ERROR(f.opt_int("num_key_value_heads", &c.num_kv_heads));
  if (f.is_null("num_key_value_heads")) c.num_kv_heads = c.num_heads;

  std::string act = "silu";
  R1_RETURN_IF_ERROR(f.opt_string("hidden_act", &act));
  if (act != "silu")
    return make_error(ErrorCode::kUnsupported, "'{}': field 'hidden_act' is \"{}\"; only silu",
                      source, act);
  bool attention_bias = false, mlp_bias = false, sliding = false;
  R1_RETURN_IF_ERROR(f.opt_bool("attention_bias", &attention_bias));
  R1_RETURN_IF_ERROR(f.opt_bool("mlp_bias", &mlp_bias));
  R1_RETURN_IF_ERROR(f.opt_bool("use_sliding_window", &sliding));
  if (attention_bias && c.arch != ModelArch::kQwen2)
    return make_error(ErrorCode::kUnsupported, "'{}': field 'attention_bias' true is not supported",
                      source);
  if (mlp_bias)
    return make_error(ErrorCode::kUnsupported, "'{}': field 'mlp_bias' true is not supported",
                      source);
  if (sliding && c.arch == ModelArch::kQwen2)
    return make_error(ErrorCode::kUnsupported,
                      "'{}': field 'use_sliding_window' true is not supported", source);

  if (c.is_mla()) {
    if (f.is_null("q_lora_rank")) {
      c.q_lora_rank = 0;  // plain q_proj
    } else {
      R1_RETURN_IF_ERROR(f.opt_int("q_lora_rank", &c.q_lora_rank));
      if (c.q_lora_rank == 0) return f.error("q_lora_rank", "must be positive or null");
    }
    R1_RETURN_IF_ERROR(f.opt_int("kv_lora_rank", &c.kv_lora_rank));
    R1_RETURN_IF_ERROR(f.opt_int("qk_nope_head_dim", &c.qk_nope_head_dim));
    R1_RETURN_IF_ERROR(f.opt_int("qk_rope_head_dim", &c.qk_rope_head_dim));
    R1_RETURN_IF_ERROR(f.opt_int("v_head_dim", &c.v_head_dim));
    R1_RETURN_IF_ERROR(f.opt_bool("rope_interleave", &c.rope_interleave));
    R1_RETURN_IF_ERROR(parse_moe(f, &c));
    c.head_dim = c.qk_rope_head_dim;  // as HF defines it for MLA (rotated dims)
  } else {
    if (c.num_heads > 0 && f.get("head_dim") == nullptr) {
      if (c.hidden_size % c.num_heads != 0)
        return f.error("num_attention_heads",
                       fmt::format("({}) must divide hidden_size ({}) when head_dim is absent",
                                   c.num_heads, c.hidden_size));
      c.head_dim = c.hidden_size / c.num_heads;
    }
    R1_RETURN_IF_ERROR(f.opt_int("head_dim", &c.head_dim));
  }
  R1_RETURN_IF_ERROR(parse_rope(f, root, source, &c));

  // Token ids: bos an int or null, eos an int, a list of ints, or null.
  if (f.is_null("bos_token_id")) c.bos_token_id = -1;
  R1_RETURN_IF_ERROR(f.opt_int("bos_token_id", &c.bos_token_id));
  if (const json* eos = f.get("eos_token_id")) {
    c.eos_token_ids.clear();
    if (eos->is_array()) {
      for (const json& v : *eos) {
        if (!v.is_number_integer())
          return f.error("eos_token_id", "must be an integer or a list of integers");
        c.eos_token_ids.push_back(v.get<int64_t>());
      }
    } else if (eos->is_number_integer()) {
      c.eos_token_ids.push_back(eos->get<int64_t>());
    } else {
      return f.error("eos_token_id", fmt::format("must be an integer or a list of integers, "
                                                 "found {}",
                                                 json_kind(*eos)));
    }
  } else if (f.is_null("eos_token_id")) {
    c.eos_token_ids.clear();
  }
  R1_RETURN_IF_ERROR(f.opt_string("torch_dtype", &c.torch_dtype));
  if (c.torch_dtype.empty()) R1_RETURN_IF_ERROR(f.opt_string("dtype", &c.torch_dtype));

  if (const json* q = f.get("quantization_config")) {
    if (!q->is_object()) return f.error("quantization_config", "must be an object");
    Fields qf(*q, source, "quantization_config.");
    std::string method;
    R1_RETURN_IF_ERROR(qf.opt_string("quant_method", &method));
    if (method != "fp8")
      return make_error(ErrorCode::kUnsupported,
                        "'{}': field 'quantization_config.quant_method' is \"{}\"; only \"fp8\" "
                        "(block-scaled e4m3) is supported",
                        source, method);
    c.fp8 = true;
    if (const json* bs = qf.get("weight_block_size")) {
      if (!bs->is_array() || bs->size() != 2 || !(*bs)[0].is_number_integer() ||
          !(*bs)[1].is_number_integer())
        return qf.error("weight_block_size", "must be [rows, cols] integers");
      c.fp8_block_rows = (*bs)[0].get<int64_t>();
      c.fp8_block_cols = (*bs)[1].get<int64_t>();
    }
  }
  R1_RETURN_IF_ERROR(validate(f, c));
  return c;
}

Result<ModelConfig> load_model_config(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return make_error(ErrorCode::kNotFound, "cannot read '{}': no such file or not readable", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return make_error(ErrorCode::kIo, "cannot read '{}'", path);
  std::string text = ss.str();
  if (text.size() > (size_t{16} << 20))
    return make_error(ErrorCode::kInvalidArgument, "'{}': {} bytes is too large for a config", path,
                      text.size());
  return parse_model_config(text, path);
}

// ---- derived values ----

bool ModelConfig::is_moe_layer(int64_t layer) const {
  if (!is_mla() || n_routed_experts <= 0 || moe_layer_freq <= 0) return false;
  return layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
}

double ModelConfig::attention_scale() const {
  if (!is_mla()) return 1.0 / std::sqrt(static_cast<double>(head_dim));
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  // DeepseekV3Attention: with YaRN and a non-zero mscale_all_dim the softmax
  // scale is multiplied by yarn_get_mscale(factor, mscale_all_dim)^2.
  if (rope.type == RopeType::kYarn && rope.mscale_all_dim != 0.0) {
    double m = rope.factor <= 1.0 ? 1.0 : 0.1 * rope.mscale_all_dim * std::log(rope.factor) + 1.0;
    scale *= m * m;
  }
  return scale;
}

int64_t ModelConfig::kv_values_per_token() const {
  if (is_mla()) return kv_lora_rank + qk_rope_head_dim;
  return 2 * num_kv_heads * head_dim;
}

int64_t ModelConfig::parameter_count() const {
  const int64_t h = hidden_size;
  int64_t total = vocab_size * h + h;  // embedding, final norm
  if (!tie_word_embeddings) total += vocab_size * h;
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    int64_t p = 2 * h;  // input / post-attention norms
    if (is_mla()) {
      const int64_t qk = qk_head_dim();
      if (q_lora_rank > 0) {
        p += h * q_lora_rank + q_lora_rank + q_lora_rank * num_heads * qk;
      } else {
        p += h * num_heads * qk;
      }
      p += h * (kv_lora_rank + qk_rope_head_dim) + kv_lora_rank;
      p += kv_lora_rank * num_heads * (qk_nope_head_dim + v_head_dim);
      p += num_heads * v_head_dim * h;
    } else {
      const int64_t q = num_heads * head_dim, kv = num_kv_heads * head_dim;
      p += h * q + 2 * h * kv + q * h;
      if (qkv_bias) p += q + 2 * kv;
    }
    if (is_moe_layer(layer)) {
      p += n_routed_experts * h;                                       // router
      if (topk_method == TopkMethod::kNoauxTc) p += n_routed_experts;  // correction bias
      p += n_routed_experts * 3 * h * moe_intermediate_size;
      p += 3 * h * moe_intermediate_size * n_shared_experts;
    } else {
      p += 3 * h * intermediate_size;
    }
    total += p;
  }
  return total;
}

}  // namespace r1::io
