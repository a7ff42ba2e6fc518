// The tensor inventory of each architecture and the two weight sources.
#include "model/weight_source.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "core/check.h"

namespace r1::model {

std::vector<TensorSpec> tensor_inventory(const io::ModelConfig& c) {
  std::vector<TensorSpec> v;
  const int64_t H = c.hidden_size;
  v.push_back({"model.embed_tokens.weight", {c.vocab_size, H}, TensorRole::kEmbedding});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    v.push_back({p + "input_layernorm.weight", {H}, TensorRole::kNorm});
    v.push_back({p + "post_attention_layernorm.weight", {H}, TensorRole::kNorm});
    if (c.is_mla()) {
      const int64_t nh = c.num_heads, qk = c.qk_head_dim();
      if (c.q_lora_rank > 0) {
        v.push_back({p + "self_attn.q_a_proj.weight", {c.q_lora_rank, H}, TensorRole::kMatrix});
        v.push_back({p + "self_attn.q_a_layernorm.weight", {c.q_lora_rank}, TensorRole::kNorm});
        v.push_back(
            {p + "self_attn.q_b_proj.weight", {nh * qk, c.q_lora_rank}, TensorRole::kMatrix});
      } else {
        v.push_back({p + "self_attn.q_proj.weight", {nh * qk, H}, TensorRole::kMatrix});
      }
      v.push_back({p + "self_attn.kv_a_proj_with_mqa.weight",
                   {c.kv_lora_rank + c.qk_rope_head_dim, H},
                   TensorRole::kMatrix});
      v.push_back({p + "self_attn.kv_a_layernorm.weight", {c.kv_lora_rank}, TensorRole::kNorm});
      v.push_back({p + "self_attn.kv_b_proj.weight",
                   {nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank},
                   TensorRole::kMatrix});
      v.push_back({p + "self_attn.o_proj.weight", {H, nh * c.v_head_dim}, TensorRole::kMatrix});
    } else {
      const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
      v.push_back({p + "self_attn.q_proj.weight", {q, H}, TensorRole::kMatrix});
      v.push_back({p + "self_attn.k_proj.weight", {kv, H}, TensorRole::kMatrix});
      v.push_back({p + "self_attn.v_proj.weight", {kv, H}, TensorRole::kMatrix});
      if (c.qkv_bias) {
        v.push_back({p + "self_attn.q_proj.bias", {q}, TensorRole::kBias});
        v.push_back({p + "self_attn.k_proj.bias", {kv}, TensorRole::kBias});
        v.push_back({p + "self_attn.v_proj.bias", {kv}, TensorRole::kBias});
      }
      v.push_back({p + "self_attn.o_proj.weight", {H, q}, TensorRole::kMatrix});
    }
    auto mlp = [&](const std::string& prefix, int64_t inter) {
      v.push_back({prefix + "gate_proj.weight", {inter, H}, TensorRole::kMatrix});
      v.push_back({prefix + "up_proj.weight", {inter, H}, TensorRole::kMatrix});
      v.push_back({prefix + "down_proj.weight", {H, inter}, TensorRole::kMatrix});
    };
    if (c.is_moe_layer(l)) {
      v.push_back({p + "mlp.gate.weight", {c.n_routed_experts, H}, TensorRole::kRouter});
      if (c.topk_method == io::TopkMethod::kNoauxTc)
        v.push_back({p + "mlp.gate.e_score_correction_bias",
                     {c.n_routed_experts},
                     TensorRole::kRouterBias});
      for (int64_t e = 0; e < c.n_routed_experts; ++e)
        mlp(fmt::format("{}mlp.experts.{}.", p, e), c.moe_intermediate_size);
      if (c.n_shared_experts > 0)
        mlp(p + "mlp.shared_experts.", c.n_shared_experts * c.moe_intermediate_size);
    } else {
      mlp(p + "mlp.", c.intermediate_size);
    }
  }
  v.push_back({"model.norm.weight", {H}, TensorRole::kNorm});
  if (!c.tie_word_embeddings)
    v.push_back({"lm_head.weight", {c.vocab_size, H}, TensorRole::kEmbedding});
  return v;
}

CheckpointWeights::CheckpointWeights(io::Checkpoint ckpt, const io::ModelConfig& cfg)
    : ckpt_(std::move(ckpt)), block_rows_(cfg.fp8_block_rows), block_cols_(cfg.fp8_block_cols) {}

std::optional<DType> CheckpointWeights::stored_dtype(const std::string& name) const {
  const io::TensorEntry* e = ckpt_.find(name);
  if (e == nullptr) return std::nullopt;
  return e->dtype;
}

Result<Tensor> CheckpointWeights::load(const std::string& name, const Shape& shape,
                                       DType want) const {
  return ckpt_.load(name, shape, want, block_rows_, block_cols_);
}

RandomWeights::RandomWeights(const io::ModelConfig& cfg, uint64_t seed, DType dtype)
    : specs_(tensor_inventory(cfg)), seed_(seed), dtype_(dtype) {
  for (size_t i = 0; i < specs_.size(); ++i) index_.emplace(specs_[i].name, i);
}

const TensorSpec* RandomWeights::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &specs_[it->second];
}

namespace {
bool keeps_f32(TensorRole r) {
  return r == TensorRole::kRouterBias || r == TensorRole::kBias;
}
}  // namespace

std::optional<DType> RandomWeights::stored_dtype(const std::string& name) const {
  const TensorSpec* s = find(name);
  if (s == nullptr) return std::nullopt;
  return keeps_f32(s->role) ? DType::kF32 : dtype_;
}

// Matrices are uniform with std 1/sqrt(fan_in); embedding rows have std 1; norms near 1.
RandomFill RandomWeights::fill_of(const TensorSpec& spec) const {
  RandomFill f;
  f.state = random_stream(seed_, spec.name);
  const float sqrt3 = std::sqrt(3.0f);
  switch (spec.role) {
    case TensorRole::kNorm:
      f.offset = 1.0f;
      f.scale = 0.1f;
      break;
    case TensorRole::kBias:
    case TensorRole::kRouterBias:
      f.scale = 0.05f;
      break;
    case TensorRole::kEmbedding:
      // lm_head (same role) is scaled like a matrix.
      f.scale = spec.name == "model.embed_tokens.weight"
                    ? sqrt3
                    : sqrt3 / std::sqrt(static_cast<float>(spec.shape[1]));
      break;
    case TensorRole::kMatrix:
    case TensorRole::kRouter:
      f.scale = sqrt3 / std::sqrt(static_cast<float>(spec.shape.back()));
      break;
  }
  return f;
}

std::optional<RandomFill> RandomWeights::random_fill(const std::string& name) const {
  const TensorSpec* s = find(name);
  if (s == nullptr) return std::nullopt;
  return fill_of(*s);
}

Tensor RandomWeights::generate(const TensorSpec& spec) const {
  const DType dt = keeps_f32(spec.role) ? DType::kF32 : dtype_;
  Tensor t = Tensor::empty(Shape(spec.shape), dt);
  if (dt == DType::kF32 || dt == DType::kBF16) {
    fill_random_host(t.raw(), dt, t.numel(), fill_of(spec));
    return t;
  }
  Tensor f = Tensor::empty(Shape(spec.shape), DType::kF32);
  fill_random_host(f.raw(), DType::kF32, f.numel(), fill_of(spec));
  return convert_f32(f, dt);
}

Result<Tensor> RandomWeights::load(const std::string& name, const Shape& shape, DType want) const {
  const TensorSpec* s = find(name);
  if (s == nullptr) return make_error(ErrorCode::kNotFound, "random weights: no tensor {}", name);
  if (Shape(s->shape) != shape)
    return make_error(ErrorCode::kInvalidArgument, "random weights: {} has shape {}, expected {}",
                      name, Shape(s->shape).to_string(), shape.to_string());
  Tensor t = generate(*s);
  if (t.dtype() == want) return t;
  Tensor f = t.dtype() == DType::kF32 ? t : to_f32(t);
  return convert_f32(f, want);
}

Status write_random_checkpoint(const std::string& config_path, const std::string& out_dir,
                               uint64_t seed) {
  std::ifstream in(config_path);
  if (!in) return make_error(ErrorCode::kIo, "cannot read {}", config_path);
  std::stringstream ss;
  ss << in.rdbuf();
  R1_ASSIGN_OR_RETURN(io::ModelConfig cfg, io::parse_model_config(ss.str(), config_path));
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return make_error(ErrorCode::kIo, "cannot create {}: {}", out_dir, ec.message());
  RandomWeights rw(cfg, seed);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& spec : tensor_inventory(cfg)) tensors.emplace_back(spec.name, rw.generate(spec));
  R1_RETURN_IF_ERROR(
      io::write_safetensors(out_dir + "/model.safetensors", tensors, {{"format", "pt"}}));
  std::filesystem::copy_file(config_path, out_dir + "/config.json",
                             std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) return make_error(ErrorCode::kIo, "cannot copy {}: {}", config_path, ec.message());
  return Status::ok();
}

}  // namespace r1::model
