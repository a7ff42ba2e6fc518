// Dense decoder (the R1 distills): Llama-3 and Qwen2 (q/k/v biases, tied
// embeddings when lm_head.weight is absent), GQA over a paged K/V cache with
// NeoX-style rope. Shapes: T tokens, H hidden, nh/nkv heads, d head_dim.
#include <fmt/format.h>

#include "model/model_impl.h"
#include "model/rope.h"

namespace r1::model {
namespace {

using backend::Linear;

struct DenseLayer {
  Tensor in_norm, post_norm;
  Linear qkv, o;  // q, k and v projections stacked (they share their input)
  Linear gate_up, down;
};

class DenseModel final : public ModelBase {
 public:
  DenseModel(const io::ModelConfig& cfg, backend::Backend& be) : ModelBase(cfg, be) {}

  void load(WeightLoader& w) {
    const auto& c = cfg_;
    const int64_t H = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
    load_common(w);
    rope_ = make_rope_params(c, c.head_dim);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const std::string pre = fmt::format("model.layers.{}.", l);
      DenseLayer L;
      L.in_norm = w.vec(pre + "input_layernorm.weight", H);
      L.post_norm = w.vec(pre + "post_attention_layernorm.weight", H);
      L.qkv = w.stacked_linear({{pre + "self_attn.q_proj", q},
                                {pre + "self_attn.k_proj", kv},
                                {pre + "self_attn.v_proj", kv}},
                               H, c.qkv_bias);
      L.o = w.linear(pre + "self_attn.o_proj", H, q);
      L.gate_up = w.gate_up(pre + "mlp.", c.intermediate_size, H);
      L.down = w.linear(pre + "mlp.down_proj", H, c.intermediate_size);
      layers_.push_back(std::move(L));
    }
  }

  backend::KvCacheSpec kv_cache_spec() const override {
    backend::KvCacheSpec s;
    s.mla = false;
    s.num_layers = cfg_.num_layers;
    s.num_kv_heads = cfg_.num_kv_heads;
    s.head_dim = cfg_.head_dim;
    return s;
  }

  int64_t decode_weight_bytes() const override {
    int64_t bytes = common_decode_bytes();
    for (const auto& L : layers_)
      for (const Linear* l : {&L.qkv, &L.o, &L.gate_up, &L.down}) bytes += linear_bytes(*l);
    return bytes;
  }

 protected:
  // Five ops: each norm is in the prologue of the product that consumes it, each
  // residual add in the epilogue of the product that feeds it, and q/k rope with
  // the cache writes in the q/k/v product's epilogue (one kernel each on the GPU
  // at few tokens).
  void layer_forward(int64_t l, const backend::BatchInfo& batch, backend::KvCache& cache, Tensor& x,
                     Scratch& s) override {
    const auto& c = cfg_;
    const DenseLayer& L = layers_[static_cast<size_t>(l)];
    const int64_t T = x.dim(0), H = c.hidden_size, d = c.head_dim;
    const int64_t nh = c.num_heads, nkv = c.num_kv_heads, I = L.down.in_features();
    auto& be = backend_;
    Tensor a = s.get("a", {T, H});  // the normed rows, for the unfused ops
    Tensor qkv = s.get("qkv", {T, (nh + 2 * nkv) * d});
    Tensor q = s.get("q", {T, nh * d}), k = s.get("k", {T, nkv * d}), v = s.get("v", {T, nkv * d});
    be.rms_norm_qkv_rope_cache_write(x, L.in_norm, eps(), a, L.qkv, qkv, nh, nkv, d, rope_, batch,
                                     q, k, v, cache.k[static_cast<size_t>(l)],
                                     cache.v[static_cast<size_t>(l)]);
    Tensor att = s.get("att", {T, nh * d});
    be.paged_attention(q, cache.k[static_cast<size_t>(l)], cache.v[static_cast<size_t>(l)], batch,
                       nh, nkv, d, static_cast<float>(c.attention_scale()), att);
    Tensor h = s.get("h", {T, H});  // the products before their add, for the unfused ops
    be.linear_add(att, L.o, x, h);  // x += o(att)
    Tensor gu = s.get("mlp_gate_up", {T, 2 * I}), act = s.get("mlp_act", {T, I});
    be.rms_norm_linear_swiglu(x, L.post_norm, eps(), a, L.gate_up, gu, act);
    be.linear_add(act, L.down, x, h);  // x += down(act)
  }

 private:
  std::vector<DenseLayer> layers_;
  backend::RopeParams rope_;
};

}  // namespace

std::unique_ptr<ModelBase> make_dense_model(const io::ModelConfig& cfg, backend::Backend& be,
                                            WeightLoader& w) {
  auto m = std::make_unique<DenseModel>(cfg, be);
  m->load(w);
  return m;
}

}  // namespace r1::model
