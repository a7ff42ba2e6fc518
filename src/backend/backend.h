// Backend: the interface every device implements (cpu/ now, cuda/ next). The
// model code is written once against it. Each op works on whole tensors that
// live on the backend's device; ops are virtual per call, never per element.
// Activations are F32 on the CPU backend; weights keep their load dtype.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/batch.h"
#include "core/random.h"
#include "core/tensor.h"

namespace r1::backend {

// y = (x W^T) * scale (+ b). weight [out, in]; bias [out] F32 or undefined;
// scale [out] F32 per-row scales of an int8 weight (weight-only quantization,
// CPU only for now), undefined for float weights.
struct Linear {
  Tensor weight;
  Tensor bias;
  Tensor scale;
  int64_t out_features() const { return weight.dim(0); }
  int64_t in_features() const { return weight.dim(1); }
};

// Rotary embedding parameters for one model. inv_freq has rot_dim/2 entries
// (already YaRN- or llama3-corrected); cos/sin are multiplied by
// attention_factor (YaRN's amplitude correction).
struct RopeParams {
  std::vector<float> inv_freq;
  float attention_factor = 1.0f;
  bool interleaved = false;  // true: pairs (2i, 2i+1) (DeepSeek MLA); false: NeoX halves
  int64_t rot_dim() const { return static_cast<int64_t>(inv_freq.size()) * 2; }
};

// Routed experts of one MoE layer, stacked. gate_up [E, 2*I, H] (gate rows
// first), down [E, H, I].
struct ExpertWeights {
  Tensor gate_up;
  Tensor down;
  Tensor gate_up_scale;  // [E, 2*I] when int8
  Tensor down_scale;     // [E, H] when int8
  int64_t num_experts() const { return gate_up.dim(0); }
  int64_t inter_size() const { return down.dim(2); }
};

enum class Scoring { kSigmoid, kSoftmax };

// DeepSeekMoE routing: scores = sigmoid|softmax(logits); selection on
// scores + bias (if any), limited to the top `topk_group` of `n_group` groups
// (group score: sum of top-2 with a bias, max without); weights are the
// unbiased scores of the chosen experts, renormalized if `normalize`, times
// `scale`. Masked experts count as -inf (DeepSeek's choice; HF uses 0.0).
struct RouterParams {
  Scoring scoring = Scoring::kSigmoid;
  int64_t top_k = 1;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool normalize = false;
  float scale = 1.0f;
};

// MLA's widths: heads, kv_lora_rank r, qk_nope_head_dim dn, qk_rope_head_dim p,
// v_head_dim dv.
struct MlaDims {
  int64_t heads = 0, r = 0, dn = 0, p = 0, dv = 0;
};

// The paged KV cache of all layers. MLA: latent[layer] is
// [num_blocks, block_size, kv_lora_rank + rope_dim] (normed c_kv, then the
// rotated shared rope key). Dense: k[layer], v[layer] are
// [num_blocks, block_size, num_kv_heads * head_dim].
struct KvCacheSpec {
  bool mla = false;
  int64_t num_layers = 0;
  int64_t kv_lora_rank = 0;
  int64_t rope_dim = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  DType dtype = DType::kF32;
  // Bytes one token occupies across all layers.
  int64_t bytes_per_token() const;
};

struct KvCache {
  KvCacheSpec spec;
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  std::vector<Tensor> latent;  // MLA
  std::vector<Tensor> k, v;    // dense
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  // dtype of activations between ops (F32 on the CPU; a GPU may use BF16).
  // Router logits, top-k weights and the logits returned to the host are F32.
  virtual DType activation_dtype() const { return DType::kF32; }

  // ---- memory ----
  virtual Tensor alloc(const Shape& shape, DType dtype) = 0;
  // A weight in `dtype` on the device (CPU: zero-copy when it already is).
  virtual Tensor upload(const Tensor& host, DType dtype) = 0;
  // Concatenates host tensors of equal trailing shape along a new dim 0.
  virtual Tensor upload_stacked(const std::vector<Tensor>& parts, DType dtype) = 0;
  virtual void to_host(const Tensor& src, void* dst) = 0;
  virtual KvCache alloc_kv_cache(const KvCacheSpec& spec, int64_t num_blocks,
                                 int64_t block_size) = 0;
  // Blocks until queued device work is done (no-op on the CPU).
  virtual void synchronize() {}
  // Fills `dst` (a contiguous tensor of this backend, F32 or BF16) with
  // fill.offset + fill.scale * u_i, u_i from core/random.h's counter-based
  // generator keyed by fill.state: the same values on every backend. The
  // default fills host memory.
  virtual void fill_random(Tensor& dst, const RandomFill& fill) {
    fill_random_host(dst.raw(), dst.dtype(), dst.numel(), fill);
  }

  // ---- step recording (optional; CUDA graphs) ----
  // The model brackets the ops of one forward step with begin_step/end_step.
  // A backend that records steps may replay a recording made for a batch of the
  // same shape, the same cache and the same output buffer `out`: then
  // begin_step returns true, the step has been issued on `batch`'s inputs, and
  // the model issues no ops until end_step. end_step returns false when the
  // step's ops were recorded but could not be run; the model then issues them
  // again (begin_step is not repeated). Buffers a step reads or writes must
  // stay allocated while recordings exist (the model keeps outgrown scratch).
  virtual bool begin_step(const BatchInfo& batch, const KvCache& cache, const Tensor& out) {
    return false;
  }
  virtual bool end_step() { return true; }

  // ---- elementwise and normalization; x, out: F32 [T, H] ----
  // out[t] = table[ids[t]] (table any float dtype).
  virtual void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) = 0;
  // out = x / rms(x) * w (w F32 [n]), per row, over the first n columns (x
  // and out may have wider rows; other columns of out are left alone).
  virtual void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) = 0;
  // residual += x; out = rms_norm(residual).
  virtual void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                            Tensor& out) = 0;
  // out[i] = src[rows[i]] for F32 [*, H] tensors.
  virtual void gather_rows(const Tensor& src, const std::vector<int32_t>& rows, Tensor& out) = 0;
  // out = a + b.
  virtual void add(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // gate_up [T, 2I] (gate first) -> out [T, I] = silu(gate) * up.
  virtual void silu_mul(const Tensor& gate_up, Tensor& out) = 0;

  // ---- matrix products ----
  // out [T, N] = x [T, K] W^T + b. Each output is reduced in a fixed order,
  // independent of T, so results do not depend on batch composition.
  virtual void linear(const Tensor& x, const Linear& w, Tensor& out) = 0;
  // Per-head products: for x [T, H * x_head_stride] (the first K values of
  // each head's segment are used) and w [H, N, K], writes the N values of
  // head h at out[t, h * out_head_stride ...]; out is [T, H * out_head_stride].
  virtual void head_linear(const Tensor& x, int64_t x_head_stride, const Tensor& w, Tensor& out,
                           int64_t out_head_stride) = 0;
  // Copies `width` values per head: dst[t, h*dst_stride + dst_offset + i] =
  // src[t, h*src_stride + src_offset + i] for h < num_heads.
  virtual void copy_heads(const Tensor& src, int64_t src_stride, int64_t src_offset, Tensor& dst,
                          int64_t dst_stride, int64_t dst_offset, int64_t width,
                          int64_t num_heads) = 0;

  // ---- positions ----
  // Rotates, for every token t and head h < num_heads, the rot_dim values at
  // x[t, h * head_stride + offset ...] by position positions[t].
  virtual void rope(Tensor& x, const std::vector<int32_t>& positions, const RopeParams& rope,
                    int64_t num_heads, int64_t head_stride, int64_t offset) = 0;

  // Fused forms of common sequences. The defaults issue the plain ops; a
  // backend overrides them to save launches and passes over memory.
  // dst[t, h*dst_stride + dst_offset ...] = rope(src[t, h*src_stride + src_offset ...])
  // for rope.rot_dim() values of each of num_heads heads (copy_heads, then rope).
  virtual void rope_copy(const Tensor& src, int64_t src_stride, int64_t src_offset, Tensor& dst,
                         int64_t dst_stride, int64_t dst_offset, int64_t num_heads,
                         const std::vector<int32_t>& positions, const RopeParams& rope) {
    copy_heads(src, src_stride, src_offset, dst, dst_stride, dst_offset, rope.rot_dim(), num_heads);
    this->rope(dst, positions, rope, num_heads, dst_stride, dst_offset);
  }
  // MLA's cache row from kv [T, r + p]: [rms_norm(kv[:, :r]) * w | rope(kv[:, r:])],
  // written to the slots of `batch` in `cache`; `latent` [T, r + p] is scratch.
  virtual void mla_latent_write(const Tensor& kv, const Tensor& w, float eps,
                                const RopeParams& rope, const BatchInfo& batch, Tensor& latent,
                                Tensor& cache) {
    const int64_t width = kv.row_size(), r = w.numel(), p = width - r;
    rms_norm(kv, w, eps, latent);
    copy_heads(kv, width, r, latent, width, r, p, 1);
    this->rope(latent, batch.positions, rope, 1, width, r);
    cache_write(latent, batch, cache);
  }

  // Two products of one input: out1 = x w1^T, out2 = x w2^T (linear, twice;
  // a backend may do both in one pass over x).
  virtual void linear_pair(const Tensor& x, const Linear& w1, Tensor& out1, const Linear& w2,
                           Tensor& out2) {
    linear(x, w1, out1);
    linear(x, w2, out2);
  }
  // SwiGLU MLP input: out [T, I] = silu(g) * u where [g | u] = x gate_up^T
  // ([T, 2I], gate columns first, each rounded to the activation dtype). `gu`
  // [T, 2I] is scratch: the default writes it; a fused override may not.
  virtual void linear_swiglu(const Tensor& x, const Linear& gate_up, Tensor& gu, Tensor& out) {
    linear(x, gate_up, gu);
    silu_mul(gu, out);
  }
  // The residual add in a product's epilogue: residual [T, N] += x w^T (+ b),
  // the product first rounded to tmp's dtype (the activation dtype), then added
  // and rounded again, as linear into `tmp` followed by add compute. `tmp`
  // [T, N] is scratch: the default writes it; a fused override may not.
  // x must not overlap residual.
  virtual void linear_add(const Tensor& x, const Linear& w, Tensor& residual, Tensor& tmp) {
    linear(x, w, tmp);
    add(residual, tmp, residual);
  }
  // RMSNorm in a product's prologue: out = rms_norm(x, norm_w) w^T (+ b), the
  // normed rows rounded to normed's dtype as rms_norm writes them. `normed`
  // [T, K] is scratch: the default writes it; a fused override may not.
  virtual void rms_norm_linear(const Tensor& x, const Tensor& norm_w, float eps, Tensor& normed,
                               const Linear& w, Tensor& out) {
    rms_norm(x, norm_w, eps, normed);
    linear(normed, w, out);
  }
  // The same feeding linear_pair: out1 = rms_norm(x) w1^T, out2 = rms_norm(x) w2^T.
  virtual void rms_norm_linear_pair(const Tensor& x, const Tensor& norm_w, float eps,
                                    Tensor& normed, const Linear& w1, Tensor& out1,
                                    const Linear& w2, Tensor& out2) {
    rms_norm(x, norm_w, eps, normed);
    linear_pair(normed, w1, out1, w2, out2);
  }
  // MLA's absorbed query: out = rms_norm_linear(x, norm_w, eps, normed, w)
  // ([T, H * head_stride]), then out2 = head_linear(out, head_stride, w_head,
  // out2, out2_head_stride) (w_head [H, N, K]). Both outputs are written; a
  // backend may make them in one pass.
  virtual void rms_norm_linear_head(const Tensor& x, const Tensor& norm_w, float eps,
                                    Tensor& normed, const Linear& w, Tensor& out,
                                    int64_t head_stride, const Tensor& w_head, Tensor& out2,
                                    int64_t out2_head_stride) {
    rms_norm_linear(x, norm_w, eps, normed, w, out);
    head_linear(out, head_stride, w_head, out2, out2_head_stride);
  }
  // Whether the rms_norm_* ops fold the norm into their products (no normed
  // rows written) for steps of `num_tokens` tokens, so that a norm read by
  // several products costs less redone by each than written once by rms_norm.
  virtual bool folds_norms(int64_t num_tokens) const { return false; }
  // The same feeding linear_swiglu: out [T, I] = swiglu(rms_norm(x) gate_up^T).
  virtual void rms_norm_linear_swiglu(const Tensor& x, const Tensor& norm_w, float eps,
                                      Tensor& normed, const Linear& gate_up, Tensor& gu,
                                      Tensor& out) {
    rms_norm(x, norm_w, eps, normed);
    linear_swiglu(normed, gate_up, gu, out);
  }
  // The dense layer's attention inputs in one: qkv = rms_norm(x) w_qkv^T
  // (rms_norm_linear), then qkv_rope_cache_write. `normed`, `qkv`, `k` and `v`
  // are scratch the default writes; a fused override may not.
  virtual void rms_norm_qkv_rope_cache_write(const Tensor& x, const Tensor& norm_w, float eps,
                                             Tensor& normed, const Linear& w_qkv, Tensor& qkv,
                                             int64_t nh, int64_t nkv, int64_t d,
                                             const RopeParams& rope, const BatchInfo& batch,
                                             Tensor& q, Tensor& k, Tensor& v, Tensor& k_cache,
                                             Tensor& v_cache) {
    rms_norm_linear(x, norm_w, eps, normed, w_qkv, qkv);
    qkv_rope_cache_write(qkv, nh, nkv, d, rope, batch, q, k, v, k_cache, v_cache);
  }
  // GQA attention inputs from one fused projection qkv [T, (nh + 2 nkv) * d]
  // (q heads, then k heads, then v heads): q [T, nh * d] = rope(q heads); the
  // slots of `batch` in k_cache / v_cache get rope(k) and v. `k`, `v`
  // [T, nkv * d] are scratch for the default (copies, rope, cache writes).
  virtual void qkv_rope_cache_write(const Tensor& qkv, int64_t nh, int64_t nkv, int64_t d,
                                    const RopeParams& rope, const BatchInfo& batch, Tensor& q,
                                    Tensor& k, Tensor& v, Tensor& k_cache, Tensor& v_cache) {
    const int64_t w = qkv.row_size();
    copy_heads(qkv, w, 0, q, nh * d, 0, nh * d, 1);
    copy_heads(qkv, w, nh * d, k, nkv * d, 0, nkv * d, 1);
    copy_heads(qkv, w, (nh + nkv) * d, v, nkv * d, 0, nkv * d, 1);
    this->rope(q, batch.positions, rope, nh, d, 0);
    this->rope(k, batch.positions, rope, nkv, d, 0);
    cache_write(k, batch, k_cache);
    cache_write(v, batch, v_cache);
  }

  // ids [n] I32 = the index of the first maximum of each row of x [n, V] F32
  // (greedy sampling where the logits need not leave the device). The default
  // works on host memory.
  virtual void argmax_rows(const Tensor& x, Tensor& ids) {
    const int64_t n = x.dim(0), V = x.row_size();
    for (int64_t i = 0; i < n; ++i) {
      const float* r = x.data<float>() + i * V;
      int64_t best = 0;
      for (int64_t v = 1; v < V; ++v)
        if (r[v] > r[best]) best = v;
      ids.data<int32_t>()[i] = static_cast<int32_t>(best);
    }
  }

  // ---- mixture of experts ----
  // router_logits F32 [T, E], bias [E] F32 or undefined -> ids I32 [T, k],
  // weights F32 [T, k].
  virtual void moe_route(const Tensor& router_logits, const Tensor& bias,
                         const RouterParams& params, Tensor& ids, Tensor& weights) = 0;
  // out [T, H] = sum_j weights[t, j] * Expert_{ids[t, j]}(x[t]) (SwiGLU experts).
  virtual void moe_experts(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                           const Tensor& weights, Tensor& out) = 0;
  // out = moe_experts(...) + shared (the shared experts' output [T, H]): the routed
  // sum is rounded to out's dtype, then shared is added, as the two plain ops do.
  virtual void moe_experts_plus(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                                const Tensor& weights, const Tensor& shared, Tensor& out) {
    moe_experts(x, w, ids, weights, out);
    add(out, shared, out);
  }
  // The residual add in the combine's epilogue: residual [T, H] += moe_experts(...)
  // (+ shared, when defined), as moe_experts(_plus) into `tmp` followed by add
  // compute. `tmp` [T, H] is scratch: the default writes it; a fused override may not.
  virtual void moe_experts_add(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                               const Tensor& weights, const Tensor& shared, Tensor& residual,
                               Tensor& tmp) {
    if (shared.defined())
      moe_experts_plus(x, w, ids, weights, shared, tmp);
    else
      moe_experts(x, w, ids, weights, tmp);
    add(residual, tmp, residual);
  }
  // The same with the experts reading rms_norm(x, norm_w) (x may be residual:
  // the norm is taken before the add). `normed` [T, H] is scratch: the default
  // writes it; a fused override may not.
  virtual void rms_norm_moe_experts_add(const Tensor& x, const Tensor& norm_w, float eps,
                                        Tensor& normed, const ExpertWeights& w, const Tensor& ids,
                                        const Tensor& weights, const Tensor& shared,
                                        Tensor& residual, Tensor& tmp) {
    rms_norm(x, norm_w, eps, normed);
    moe_experts_add(normed, w, ids, weights, shared, residual, tmp);
  }
  // An MoE layer's experts with its shared experts' MLP (SwiGLU, gate_up [2Is, H],
  // down [H, Is]) in one op: residual += moe_experts(m) + down(swiglu(m gate_up^T))
  // with m = rms_norm(x, norm_w), as rms_norm_linear_swiglu (into gu, act) and
  // linear (into shared) followed by rms_norm_moe_experts_add compute (x may be
  // residual). normed, gu, act, shared and tmp are scratch the default writes;
  // a fused override may not.
  virtual void rms_norm_moe_shared_experts_add(const Tensor& x, const Tensor& norm_w, float eps,
                                               Tensor& normed, const ExpertWeights& w,
                                               const Tensor& ids, const Tensor& weights,
                                               const Linear& shared_gate_up,
                                               const Linear& shared_down, Tensor& gu, Tensor& act,
                                               Tensor& shared, Tensor& residual, Tensor& tmp) {
    rms_norm_linear_swiglu(x, norm_w, eps, normed, shared_gate_up, gu, act);
    linear(act, shared_down, shared);
    rms_norm_moe_experts_add(x, norm_w, eps, normed, w, ids, weights, shared, residual, tmp);
  }

  // ---- KV cache and attention ----
  // Writes row t of `src` [T, width] into slot slot_mapping[t] of `cache`
  // [num_blocks, block_size, width].
  virtual void cache_write(const Tensor& src, const BatchInfo& batch, Tensor& cache) = 0;
  // Causal GQA over the paged cache (new tokens already written):
  // q [T, num_heads * head_dim] -> out [T, num_heads * head_dim].
  virtual void paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                               const BatchInfo& batch, int64_t num_heads, int64_t num_kv_heads,
                               int64_t head_dim, float scale, Tensor& out) = 0;
  // Absorbed MLA (MQA with one 576-wide latent head): q [T, H, kv_lora + rope]
  // (q_lat then rotated q_pe), latent cache [blocks, block_size, kv_lora + rope]
  // -> out [T, H, kv_lora] = softmax(q . key * scale) . latent[:, :kv_lora].
  virtual void mla_attention(const Tensor& q, const Tensor& latent_cache, const BatchInfo& batch,
                             int64_t num_heads, int64_t kv_lora_rank, int64_t rope_dim, float scale,
                             Tensor& out) = 0;
  // The absorbed form's step in one op, its inputs included: the new tokens'
  // latents from kv into `cache` (mla_latent_write; `latent` is scratch), the
  // rotary part of the query qa [T, H, r + p] from q (rope_copy of the p values
  // at q[t, h * q_stride + q_offset ...] into qa's last p columns of each head),
  // then mla_attention over the cache. A backend may make the latents and the
  // rotation inside its attention kernel (qa's rotary columns and `latent` are
  // then left alone).
  virtual void mla_absorbed_attention(const Tensor& kv, const Tensor& kv_norm, float eps,
                                      const RopeParams& rope, const BatchInfo& batch,
                                      Tensor& latent, Tensor& cache, const Tensor& q,
                                      int64_t q_stride, int64_t q_offset, Tensor& qa,
                                      int64_t num_heads, int64_t kv_lora_rank, int64_t rope_dim,
                                      float scale, Tensor& out) {
    mla_latent_write(kv, kv_norm, eps, rope, batch, latent, cache);
    rope_copy(q, q_stride, q_offset, qa, kv_lora_rank + rope_dim, kv_lora_rank, num_heads,
              batch.positions, rope);
    mla_attention(qa, cache, batch, num_heads, kv_lora_rank, rope_dim, scale, out);
  }
  // mla_absorbed_attention into latent_out [T, num_heads * kv_lora_rank], then
  // out = head_linear(latent_out, kv_lora_rank, w_uv, out, out_head_stride): the
  // attention's per-head values through W_UV. latent_out is scratch: a backend
  // that hands the attention's unmerged state straight to the product may
  // leave it unwritten.
  virtual void mla_absorbed_attention_uv(const Tensor& kv, const Tensor& kv_norm, float eps,
                                         const RopeParams& rope, const BatchInfo& batch,
                                         Tensor& latent, Tensor& cache, const Tensor& q,
                                         int64_t q_stride, int64_t q_offset, Tensor& qa,
                                         int64_t num_heads, int64_t kv_lora_rank, int64_t rope_dim,
                                         float scale, Tensor& latent_out, const Tensor& w_uv,
                                         Tensor& out, int64_t out_head_stride) {
    mla_absorbed_attention(kv, kv_norm, eps, rope, batch, latent, cache, q, q_stride, q_offset, qa,
                           num_heads, kv_lora_rank, rope_dim, scale, latent_out);
    head_linear(latent_out, kv_lora_rank, w_uv, out, out_head_stride);
  }
  // MLA over decompressed keys and values, the prefill form: each sequence's
  // context latents (cache rows 0 .. its last query's position) are expanded
  // by kv_b [heads * (dn + dv), r] into per-head keys [k_nope | k_pe] (k_pe, the
  // rotated rope part of the row, is shared by the heads) and values, and
  // attended causally: q [T, heads * (dn + p)] with q_pe already rotated ->
  // out [T, heads * dv]. Equal to mla_attention followed by W_UV up to rounding.
  virtual void mla_decompressed_attention(const Tensor& q, const Tensor& latent_cache,
                                          const Linear& kv_b, const BatchInfo& batch,
                                          const MlaDims& d, float scale, Tensor& out) = 0;
  // Whether this backend may ever prefer mla_decompressed_attention for these
  // widths (the model then keeps kv_b_proj as a projection too).
  virtual bool mla_decompressed_available(const MlaDims& d) const { return false; }
  // Whether the model should take mla_decompressed_attention for `batch`
  // (decompressing every context costs r x heads x (dn + dv) per key; the
  // absorbed form costs more per query-key pair).
  virtual bool prefers_decompressed_mla(const BatchInfo& batch, const MlaDims& d) const {
    return false;
  }
};

// The CPU backend, using `threads` threads (<= 0: one per core) and the best
// vector ISA of this CPU (AVX-512 or AVX2, chosen at run time).
std::unique_ptr<Backend> make_cpu_backend(int threads = 0);

}  // namespace r1::backend
