// DeepSeek V2/V3 (R1): MLA attention over a latent KV cache (576 values per
// token and layer for R1) -- in the weight-absorbed form, or for prefill steps
// where the backend prefers it over keys and values decompressed from the
// latents -- and DeepSeekMoE. Shapes in
// comments: T tokens in the step, H hidden, nh heads, r = kv_lora_rank,
// p = qk_rope_head_dim, dn = qk_nope_head_dim, dv = v_head_dim.
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "core/check.h"
#include "model/model_impl.h"
#include "model/rope.h"

namespace r1::model {
namespace {

using backend::Linear;

struct MlaLayer {
  Tensor in_norm, post_norm;
  Linear q_a, q_b, q_proj;  // q_a/q_b with q_lora_rank, else q_proj
  Tensor q_a_norm;
  Linear kv_a;       // [r + p, H]
  Tensor kv_a_norm;  // [r]
  Tensor w_uk_t;     // [nh, r, dn]: q_lat = W_UK^T q_nope
  Tensor w_uv;       // [nh, dv, r]: o = W_UV o_lat
  Linear kv_b;       // [nh * (dn + dv), r]: decompresses latents (prefill form; loaded
                     // where the backend may use that form)
  Linear o_proj;     // [H, nh * dv]
  bool moe = false;
  Linear gate_up, down;  // dense FFN, or the shared experts of an MoE layer
  bool has_ffn_mlp = false;
  Linear router;       // [E, H]
  Tensor router_bias;  // [E] or undefined
  backend::ExpertWeights experts;
};

class DeepseekModel final : public ModelBase {
 public:
  DeepseekModel(const io::ModelConfig& cfg, backend::Backend& be) : ModelBase(cfg, be) {}

  void load(WeightLoader& w) {
    const auto& c = cfg_;
    const int64_t H = c.hidden_size, nh = c.num_heads, r = c.kv_lora_rank, p = c.qk_rope_head_dim;
    const int64_t dn = c.qk_nope_head_dim, dv = c.v_head_dim, qk = c.qk_head_dim();
    load_common(w);
    rope_ = make_rope_params(c, p);
    router_.scoring = c.scoring_func == io::ScoringFunc::kSigmoid ? backend::Scoring::kSigmoid
                                                                  : backend::Scoring::kSoftmax;
    router_.top_k = c.num_experts_per_tok;
    router_.n_group = c.n_group;
    router_.topk_group = c.topk_group;
    router_.normalize = c.norm_topk_prob && c.num_experts_per_tok > 1;
    // V2's gate scales only unnormalized weights; V3 always scales.
    router_.scale = (c.arch == io::ModelArch::kDeepseekV2 && router_.normalize)
                        ? 1.0f
                        : static_cast<float>(c.routed_scaling_factor);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const std::string pre = fmt::format("model.layers.{}.", l);
      MlaLayer L;
      L.in_norm = w.vec(pre + "input_layernorm.weight", H);
      L.post_norm = w.vec(pre + "post_attention_layernorm.weight", H);
      if (c.q_lora_rank > 0) {
        L.q_a = w.linear(pre + "self_attn.q_a_proj", c.q_lora_rank, H);
        L.q_a_norm = w.vec(pre + "self_attn.q_a_layernorm.weight", c.q_lora_rank);
        L.q_b = w.linear(pre + "self_attn.q_b_proj", nh * qk, c.q_lora_rank);
      } else {
        L.q_proj = w.linear(pre + "self_attn.q_proj", nh * qk, H);
      }
      L.kv_a = w.linear(pre + "self_attn.kv_a_proj_with_mqa", r + p, H);
      L.kv_a_norm = w.vec(pre + "self_attn.kv_a_layernorm.weight", r);
      // Split kv_b [nh * (dn + dv), r] into the absorbed per-head matrices.
      Tensor kvb = w.host_f32(pre + "self_attn.kv_b_proj.weight", {nh * (dn + dv), r});
      Tensor uk = Tensor::empty({nh, r, dn}, DType::kF32),
             uv = Tensor::empty({nh, dv, r}, DType::kF32);
      const float* kb = kvb.data<float>();
      for (int64_t h = 0; h < nh; ++h) {
        for (int64_t d = 0; d < dn; ++d)
          for (int64_t j = 0; j < r; ++j)
            uk.data<float>()[(h * r + j) * dn + d] = kb[(h * (dn + dv) + d) * r + j];
        std::memcpy(uv.data<float>() + h * dv * r, kb + (h * (dn + dv) + dn) * r,
                    static_cast<size_t>(dv * r) * 4);
      }
      if (backend_.mla_decompressed_available(backend::MlaDims{nh, r, dn, p, dv}))
        L.kv_b = w.linear(pre + "self_attn.kv_b_proj", nh * (dn + dv), r);
      const DType dt = w.matrix_dtype(pre + "self_attn.kv_b_proj.weight");
      L.w_uk_t = backend_.upload(dt == DType::kF32 ? uk : convert_f32(uk, dt), dt);
      L.w_uv = backend_.upload(dt == DType::kF32 ? uv : convert_f32(uv, dt), dt);
      L.o_proj = w.linear(pre + "self_attn.o_proj", H, nh * dv);
      L.moe = c.is_moe_layer(l);
      if (L.moe) {
        L.router = w.linear(pre + "mlp.gate", c.n_routed_experts, H, false, /*quantizable=*/false);
        if (w.has(pre + "mlp.gate.e_score_correction_bias"))
          L.router_bias = w.vec(pre + "mlp.gate.e_score_correction_bias", c.n_routed_experts);
        L.experts = w.experts(pre + "mlp.experts.", c.n_routed_experts, c.moe_intermediate_size, H);
        if (c.n_shared_experts > 0) {
          const int64_t si = c.n_shared_experts * c.moe_intermediate_size;
          L.gate_up = w.gate_up(pre + "mlp.shared_experts.", si, H);
          L.down = w.linear(pre + "mlp.shared_experts.down_proj", H, si);
          L.has_ffn_mlp = true;
        }
      } else {
        L.gate_up = w.gate_up(pre + "mlp.", c.intermediate_size, H);
        L.down = w.linear(pre + "mlp.down_proj", H, c.intermediate_size);
        L.has_ffn_mlp = true;
      }
      layers_.push_back(std::move(L));
    }
  }

  backend::KvCacheSpec kv_cache_spec() const override {
    backend::KvCacheSpec s;
    s.mla = true;
    s.num_layers = cfg_.num_layers;
    s.kv_lora_rank = cfg_.kv_lora_rank;
    s.rope_dim = cfg_.qk_rope_head_dim;
    return s;
  }

  int64_t decode_weight_bytes() const override {
    int64_t bytes = common_decode_bytes();
    for (const auto& L : layers_) {
      for (const Linear* l :
           {&L.q_a, &L.q_b, &L.q_proj, &L.kv_a, &L.o_proj, &L.gate_up, &L.down, &L.router})
        bytes += linear_bytes(*l);
      bytes += static_cast<int64_t>(L.w_uk_t.nbytes() + L.w_uv.nbytes());
      if (L.moe) {
        const int64_t per_expert = static_cast<int64_t>(
            (L.experts.gate_up.nbytes() + L.experts.down.nbytes() +
             (L.experts.gate_up_scale.defined()
                  ? L.experts.gate_up_scale.nbytes() + L.experts.down_scale.nbytes()
                  : 0)) /
            static_cast<size_t>(L.experts.num_experts()));
        bytes += per_expert * cfg_.num_experts_per_tok;
      }
    }
    return bytes;
  }

 protected:
  // Each residual add is in the epilogue of the product that makes it (o_proj,
  // the experts' combine), as in the dense model. Each norm goes with the
  // products that read it (rms_norm_*): a backend that folds norms into its
  // products (the GPU at few tokens) then writes no normed rows, and the
  // post-attention norm, read by the router, the shared and the routed experts,
  // is folded into all three; otherwise it is written once.
  void layer_forward(int64_t l, const backend::BatchInfo& batch, backend::KvCache& cache, Tensor& x,
                     Scratch& s) override {
    const auto& c = cfg_;
    const MlaLayer& L = layers_[static_cast<size_t>(l)];
    const int64_t T = x.dim(0), H = c.hidden_size, nh = c.num_heads, r = c.kv_lora_rank;
    const int64_t p = c.qk_rope_head_dim, dn = c.qk_nope_head_dim, dv = c.v_head_dim;
    const int64_t qk = c.qk_head_dim();
    auto& be = backend_;

    Tensor a = s.get("a", {T, H});  // the normed rows, for the unfolded ops

    // Queries q [T, nh * (dn + p)] and the new tokens' latents kv [T, r + p]
    // (q_a and kv_a, or q_proj and kv_a, both read the normed x: one GEMV
    // launch on the GPU).
    Tensor q = s.get("q", {T, nh * qk});
    Tensor kv = s.get("kv", {T, r + p});
    const backend::MlaDims dims{nh, r, dn, p, dv};
    const bool decompressed = L.kv_b.weight.defined() && be.prefers_decompressed_mla(batch, dims);
    // The absorbed query [T, nh, r + p] = [W_UK^T q_nope | rope(q_pe)]: W_UK's
    // product goes with q_b's where there is one (one kernel on the GPU at one token).
    Tensor qa;
    if (!decompressed) qa = s.get("q_abs", {T, nh * (r + p)});
    if (c.q_lora_rank > 0) {
      Tensor cq = s.get("cq", {T, c.q_lora_rank}), cqn = s.get("cq_normed", {T, c.q_lora_rank});
      be.rms_norm_linear_pair(x, L.in_norm, eps(), a, L.q_a, cq, L.kv_a, kv);
      if (decompressed)
        be.rms_norm_linear(cq, L.q_a_norm, kLatentNormEps, cqn, L.q_b, q);
      else
        be.rms_norm_linear_head(cq, L.q_a_norm, kLatentNormEps, cqn, L.q_b, q, qk, L.w_uk_t, qa,
                                r + p);
    } else {
      be.rms_norm_linear_pair(x, L.in_norm, eps(), a, L.q_proj, q, L.kv_a, kv);
      if (!decompressed) be.head_linear(q, qk, L.w_uk_t, qa, r + p);
    }
    // Latent of the new tokens: [T, r + p] = [RMSNorm(c_kv) | rope(k_pe)].
    Tensor latent = s.get("latent", {T, r + p});
    Tensor& lcache = cache.latent[static_cast<size_t>(l)];
    Tensor o = s.get("o", {T, nh * dv});
    const float scale = static_cast<float>(c.attention_scale());
    if (decompressed) {
      // Prefill: keys and values decompressed from the latents; q_pe rotated in place.
      be.mla_latent_write(kv, L.kv_a_norm, kLatentNormEps, rope_, batch, latent, lcache);
      be.rope(q, batch.positions, rope_, nh, qk, dn);
      be.mla_decompressed_attention(q, lcache, L.kv_b, batch, dims, scale, o);
    } else {
      // The latent write and the query's rotation go with the attention (on
      // the GPU, at decode, inside its kernel).
      Tensor olat = s.get("o_lat", {T, nh * r});  // [T, nh, r]
      be.mla_absorbed_attention_uv(kv, L.kv_a_norm, kLatentNormEps, rope_, batch, latent, lcache, q,
                                   qk, dn, qa, nh, r, p, scale, olat, L.w_uv, o, dv);
    }
    Tensor h = s.get("h", {T, H});     // products before their add, for the unfused ops
    be.linear_add(o, L.o_proj, x, h);  // x += o_proj(o)

    Tensor m = s.get("m", {T, H});
    if (L.moe) {
      const bool fold = be.folds_norms(T);
      Tensor logits = s.get("router_logits", {T, c.n_routed_experts}, DType::kF32);
      Tensor ids = s.get("topk_ids", {T, c.num_experts_per_tok}, DType::kI32);
      Tensor wts = s.get("topk_w", {T, c.num_experts_per_tok}, DType::kF32);
      if (fold) {
        be.rms_norm_linear(x, L.post_norm, eps(), m, L.router, logits);
      } else {
        be.rms_norm(x, L.post_norm, eps(), m);
        be.linear(m, L.router, logits);
      }
      be.moe_route(logits, L.router_bias, router_, ids, wts);
      // x += experts(m) + shared, the shared experts' MLP and the routed experts
      // in one op (on the GPU at one token, in the same streamed kernels).
      if (fold && L.has_ffn_mlp) {
        const int64_t I = L.down.in_features();
        Tensor gu = s.get("mlp_gate_up", {T, 2 * I}), act = s.get("mlp_act", {T, I});
        Tensor sh = s.get("shared", {T, H});
        be.rms_norm_moe_shared_experts_add(x, L.post_norm, eps(), m, L.experts, ids, wts, L.gate_up,
                                           L.down, gu, act, sh, x, h);
      } else {
        Tensor sh;  // the shared experts' output, added by the routed experts' combine
        if (L.has_ffn_mlp) {
          sh = s.get("shared", {T, H});
          mlp(L.gate_up, L.down, m, sh, s);
        }
        if (fold)
          be.rms_norm_moe_experts_add(x, L.post_norm, eps(), m, L.experts, ids, wts, sh, x, h);
        else
          be.moe_experts_add(m, L.experts, ids, wts, sh, x, h);
      }
    } else {
      const int64_t I = L.down.in_features();
      Tensor gu = s.get("mlp_gate_up", {T, 2 * I}), act = s.get("mlp_act", {T, I});
      be.rms_norm_linear_swiglu(x, L.post_norm, eps(), m, L.gate_up, gu, act);
      be.linear_add(act, L.down, x, h);  // x += down(act)
    }
  }

 private:
  // DeepSeek's reference and transformers both build q_a_layernorm and
  // kv_a_layernorm with eps 1e-6 whatever rms_norm_eps says.
  static constexpr float kLatentNormEps = 1e-6f;
  std::vector<MlaLayer> layers_;
  backend::RopeParams rope_;
  backend::RouterParams router_;
};

}  // namespace

std::unique_ptr<ModelBase> make_deepseek_model(const io::ModelConfig& cfg, backend::Backend& be,
                                               WeightLoader& w) {
  auto m = std::make_unique<DeepseekModel>(cfg, be);
  m->load(w);
  return m;
}

}  // namespace r1::model
