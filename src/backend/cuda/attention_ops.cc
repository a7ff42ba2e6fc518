// Attention dispatch on the CUDA backend: the tensor-core kernel
// (mla_attention.cu) for absorbed MLA and for GQA with head_dim 64/128, its
// split plan and workspaces; the CUDA-core tile kernel (attention.cu) for other
// shapes; the exact F32 kernel in the validation mode.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "core/check.h"

namespace r1::backend::cuda {

std::pair<const AttnTile*, int32_t> CudaBackend::attn_tiles(DevBatch& db, int64_t G, int64_t nkv) {
  const int64_t key = G * 4096 + nkv;
  auto it = db.tiles.find(key);
  if (it != db.tiles.end()) return {it->second.first.data<AttnTile>(), it->second.second};
  if (capturing_) capture_broken_ = true;
  const BatchInfo& b = db.host;
  std::vector<AttnTile> tiles;
  for (int32_t s = 0; s < b.num_seqs(); ++s) {
    const int32_t qs = b.query_start[s],
                  rows = (b.query_start[s + 1] - qs) * static_cast<int32_t>(G);
    for (int32_t kvh = 0; kvh < nkv; ++kvh)
      for (int32_t i0 = 0; i0 < rows; i0 += 16) {
        int32_t kmax = 0;
        const int32_t last = std::min(rows, i0 + 16) - 1;
        for (int32_t t = qs + i0 / static_cast<int32_t>(G);
             t <= qs + last / static_cast<int32_t>(G); ++t)
          kmax = std::max(kmax, b.positions[static_cast<size_t>(t)] + 1);
        tiles.push_back(AttnTile{s, kvh, i0, kmax});
      }
  }
  Tensor dev = alloc({static_cast<int64_t>(std::max<size_t>(1, tiles.size())) * 4}, DType::kI32);
  if (!tiles.empty() && !capturing_)
    R1_CUDA_OK(cudaMemcpyAsync(dev.raw(), tiles.data(), tiles.size() * sizeof(AttnTile),
                               cudaMemcpyHostToDevice, stream_));
  const int32_t n = static_cast<int32_t>(tiles.size());
  db.tiles[key] = {dev, n};
  return {dev.data<AttnTile>(), n};
}

// ---- attention ----

void CudaBackend::attention(const Tensor& q, int64_t q_head_stride, const Tensor& k,
                            const Tensor& v, int64_t k_head_off, const BatchInfo& batch,
                            int64_t num_heads, int64_t nkv, int64_t dk, int64_t dv, float scale,
                            Tensor& out, int64_t out_head_stride) {
  if (f32_act_) {
    // Validation mode: exact softmax in F32 over the (F32) cache.
    R1_CHECK(q.dim(0) == batch.num_tokens() && out.dim(0) == batch.num_tokens(),
             "attention: q {} for {} tokens", q.describe(), batch.num_tokens());
    R1_CHECK(k.dtype() == v.dtype() && (is_bf16(k) || k.dtype() == DType::kF32),
             "attention cache {}", k.describe());
    DevBatch& d = dev_batch(batch);
    RefAttnArgs r{};
    r.q = q.raw();
    r.q_bf = is_bf16(q);
    r.q_row = q.row_size();
    r.q_head_stride = q_head_stride;
    r.k = k.raw();
    r.v = v.raw();
    r.kv_bf = is_bf16(k);
    r.k_row = k.dim(2);
    r.v_row = v.dim(2);
    r.k_head_off = k_head_off;
    r.block_size = static_cast<int32_t>(k.dim(1));
    r.block_tables = d.block_tables;
    r.max_blocks = d.host.max_blocks_per_seq;
    r.query_start = d.query_start;
    r.positions = d.positions;
    r.num_seqs = batch.num_seqs();
    r.T = batch.num_tokens();
    r.num_heads = static_cast<int32_t>(num_heads);
    r.G = static_cast<int32_t>(num_heads / nkv);
    r.dk = static_cast<int32_t>(dk);
    r.dv = static_cast<int32_t>(dv);
    r.max_keys = d.fixed ? d.host.max_blocks_per_seq * r.block_size : d.max_position + 1;
    r.scale = scale;
    r.out = out.raw();
    r.out_bf = is_bf16(out);
    r.out_row = out.row_size();
    r.out_head_stride = out_head_stride;
    launch_ref_attention(r, stream_);
    return;
  }
  R1_CHECK(is_bf16(k) && is_bf16(v), "CUDA attention needs a BF16 cache: {}", k.describe());
  if (!is_bf16(q) || !is_bf16(out)) {
    Tensor qb = as_bf16(q, 11);
    Tensor ob = Tensor::wrap(workspace(12, static_cast<size_t>(out.numel()) * 2), out.shape(),
                             DType::kBF16, nullptr, Device::kCuda);
    if (!is_bf16(out)) launch_convert(out.raw(), false, ob.raw(), true, out.numel(), stream_);
    attention(qb, q_head_stride, k, v, k_head_off, batch, num_heads, nkv, dk, dv, scale, ob,
              out_head_stride);
    launch_convert(ob.raw(), true, out.raw(), is_bf16(out), out.numel(), stream_);
    return;
  }
  R1_CHECK(q.dim(0) == batch.num_tokens() && out.dim(0) == batch.num_tokens(),
           "attention: q {} for {} tokens", q.describe(), batch.num_tokens());
  DevBatch& d = dev_batch(batch);
  auto [tiles, n] = attn_tiles(d, num_heads / nkv, nkv);
  AttnArgs a{};
  a.q = q.data<uint16_t>();
  a.q_row = q.row_size();
  a.q_head_stride = q_head_stride;
  a.k = k.data<uint16_t>();
  a.v = v.data<uint16_t>();
  a.k_row = k.dim(2);
  a.v_row = v.dim(2);
  a.block_size = k.dim(1);
  a.block_tables = d.block_tables;
  a.max_blocks = d.host.max_blocks_per_seq;
  a.query_start = d.query_start;
  a.positions = d.positions;
  a.tiles = tiles;
  a.num_tiles = n;
  a.G = static_cast<int32_t>(num_heads / nkv);
  a.dk = static_cast<int32_t>(dk);
  a.dv = static_cast<int32_t>(dv);
  a.k_head_off = k_head_off;
  a.scale = scale;
  a.out = out.data<uint16_t>();
  a.out_row = out.row_size();
  a.out_head_stride = out_head_stride;
  // Split the keys across blocks when there are too few tiles to fill the GPU.
  // A recorded step plans for the block table's capacity; blocks past a tile's
  // keys exit at once, so the plan holds for every context that fits.
  const int64_t keys =
      d.fixed ? int64_t{d.host.max_blocks_per_seq} * a.block_size : d.max_position + 1;
  int64_t splits = 1;
  // Flash-decoding: down to one 32-key step per block, so a batch-1 decode over
  // 512 keys runs 16 blocks per tile rather than 4.
  if (n < 2 * sm_count_) splits = std::min<int64_t>((2 * sm_count_ + n - 1) / n, (keys + 31) / 32);
  splits = std::max<int64_t>(1, splits);
  int64_t per = (keys + splits - 1) / splits;
  per = (per + 31) / 32 * 32;
  splits = (keys + per - 1) / per;
  a.splits = static_cast<int32_t>(splits);
  a.keys_per_split = static_cast<int32_t>(per);
  if (splits > 1) {
    const size_t rows = static_cast<size_t>(splits) * static_cast<size_t>(n) * 16;
    a.ws_acc = static_cast<float*>(workspace(1, rows * static_cast<size_t>(dv) * 4));
    a.ws_ml = static_cast<float*>(workspace(2, rows * 2 * 4));
  }
  launch_paged_attention(a, stream_);
}

void CudaBackend::paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                  const BatchInfo& batch, int64_t num_heads, int64_t num_kv_heads,
                                  int64_t head_dim, float scale, Tensor& out) {
  OpTimer timer(*this, "paged_attention");
  R1_CHECK(num_heads % num_kv_heads == 0 && k_cache.dim(2) == num_kv_heads * head_dim &&
               q.row_size() == num_heads * head_dim && out.row_size() == num_heads * head_dim,
           "paged_attention q {} cache {} out {}", q.describe(), k_cache.describe(),
           out.describe());
  const int64_t G = num_heads / num_kv_heads;
  if (!f32_act_ && is_bf16(q) && is_bf16(out) && is_bf16(k_cache) && is_bf16(v_cache) &&
      gqa_mma_supported(G, head_dim)) {
    MlaArgs a = mma_args(q, k_cache, v_cache, batch, num_heads, static_cast<int32_t>(G), head_dim,
                         scale, out);
    plan_splits(a, dev_batch(batch), num_kv_heads, head_dim);
    launch_gqa_attention(a, head_dim, stream_);
    return;
  }
  attention(q, head_dim, k_cache, v_cache, head_dim, batch, num_heads, num_kv_heads, head_dim,
            head_dim, scale, out, head_dim);
}

MlaArgs CudaBackend::mma_args(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                              const BatchInfo& batch, int64_t num_heads, int32_t group_rows,
                              int64_t kv_off, float scale, Tensor& out) {
  R1_CHECK(q.dim(0) == batch.num_tokens() && out.dim(0) == batch.num_tokens(),
           "attention: q {} for {} tokens", q.describe(), batch.num_tokens());
  DevBatch& d = dev_batch(batch);
  MlaArgs a{};
  a.q = q.data<uint16_t>();
  a.q_row = q.row_size();
  a.cache = k_cache.data<uint16_t>();
  a.vcache = v_cache.data<uint16_t>();
  a.k_row = k_cache.dim(2);
  a.v_row = v_cache.dim(2);
  a.group_rows = group_rows;
  a.kv_off = kv_off;
  a.block_size = static_cast<int32_t>(k_cache.dim(1));
  a.block_tables = d.block_tables;
  a.max_blocks = d.host.max_blocks_per_seq;
  a.query_start = d.query_start;
  a.num_seqs = batch.num_seqs();
  a.positions = d.positions;
  a.T = batch.num_tokens();
  a.one_token_seqs = batch.num_seqs() == batch.num_tokens() ? 1 : 0;
  a.H = static_cast<int32_t>(num_heads);
  a.scale = scale;
  a.out = out.data<uint16_t>();
  a.out_row = out.row_size();
  return a;
}

// Splits a token's keys across blocks when tokens x head groups cannot fill the GPU
// (decode). A recorded step plans for the block table's capacity.
void CudaBackend::plan_splits(MlaArgs& a, DevBatch& d, int64_t groups, int64_t dv, bool spare) {
  const int64_t step = mla_keys_per_step();
  // spare: one key step more, so a split block is left for the own-key helper
  // in eager and recorded steps alike (the same splits, so the same bits).
  const int64_t keys =
      (d.fixed ? int64_t{d.host.max_blocks_per_seq} * a.block_size : d.max_position + 1) +
      (spare ? step : 0);
  const int64_t chunks = (keys + step - 1) / step;
  const int64_t blocks = int64_t{a.T} * groups;
  int64_t splits =
      blocks < 2 * sm_count_ ? std::min<int64_t>(chunks, (2 * sm_count_ + blocks - 1) / blocks) : 1;
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, mla_max_splits()));
  // R1SERVE_CUDA_ATTN_SPLIT_STEPS=N: at least N key steps per split (side-by-side runs).
  static const int64_t min_per = [] {
    const char* e = std::getenv("R1SERVE_CUDA_ATTN_SPLIT_STEPS");
    return e != nullptr ? std::max<int64_t>(1, std::atoll(e)) : int64_t{1};
  }();
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, (chunks + min_per - 1) / min_per));
  const int64_t per = (chunks + splits - 1) / splits;
  splits = std::max<int64_t>(1, (chunks + per - 1) / per);
  a.splits = static_cast<int32_t>(splits);
  a.keys_per_split = static_cast<int32_t>(per * step);
  if (splits > 1) {
    const size_t rows =
        static_cast<size_t>(splits) * static_cast<size_t>(a.T) * static_cast<size_t>(a.H);
    a.ws_acc = static_cast<float*>(workspace(1, rows * static_cast<size_t>(dv) * 4));
    a.ws_ml = static_cast<float*>(workspace(2, rows * 2 * 4));
    a.counters = zeroed_counters(static_cast<size_t>(blocks));
  }
}

void CudaBackend::mla_attention(const Tensor& q, const Tensor& latent_cache, const BatchInfo& batch,
                                int64_t num_heads, int64_t kv_lora_rank, int64_t rope_dim,
                                float scale, Tensor& out) {
  OpTimer timer(*this, "mla_attention");
  const int64_t width = kv_lora_rank + rope_dim;
  R1_CHECK(latent_cache.dim(2) == width && q.row_size() == num_heads * width &&
               out.row_size() == num_heads * kv_lora_rank,
           "mla_attention q {} cache {} out {}", q.describe(), latent_cache.describe(),
           out.describe());
  if (!f32_act_ && is_bf16(q) && is_bf16(out) && is_bf16(latent_cache) &&
      mla_mma_supported(kv_lora_rank, rope_dim)) {
    MlaArgs a = mma_args(q, latent_cache, latent_cache, batch, num_heads, 16, 0, scale, out);
    plan_splits(a, dev_batch(batch), (num_heads + 15) / 16, kv_lora_rank);
    launch_mla_attention(a, kv_lora_rank, rope_dim, stream_);
    return;
  }
  attention(q, width, latent_cache, latent_cache, 0, batch, num_heads, 1, width, kv_lora_rank,
            scale, out, kv_lora_rank);
}

// R1SERVE_CUDA_MLA_FUSED_INPUTS=0: the latent write and the query's rotation
// stay kernels of their own (side-by-side runs).
namespace {
EnvSwitch g_mla_fused_inputs{"R1SERVE_CUDA_MLA_FUSED_INPUTS", 1};
bool mla_fused_inputs_enabled() {
  return g_mla_fused_inputs.on();
}
// R1SERVE_CUDA_ATTN_TRIGGER_FIRST=1: a one-token step's decode attention lets
// the kernel after it (W_UV) launch before its own wait.
EnvSwitch g_attn_tf{"R1SERVE_CUDA_ATTN_TRIGGER_FIRST", 0};
bool attn_trigger_first_enabled() {
  return g_attn_tf.on();
}
}  // namespace
void set_attn_trigger_first(bool on) {
  g_attn_tf.set(on ? 1 : 0);
}
void set_mla_fused_inputs(bool on) {
  g_mla_fused_inputs.set(on ? 1 : 0);
}

// Decode (one new token a sequence): the attention kernel makes each token's
// latent row and the query's rotary columns itself (both read before its
// pdl_wait when written two or more launches back), two kernels fewer a layer.
void CudaBackend::mla_absorbed_attention(const Tensor& kv, const Tensor& kv_norm, float eps,
                                         const RopeParams& rope, const BatchInfo& batch,
                                         Tensor& latent, Tensor& cache, const Tensor& q,
                                         int64_t q_stride, int64_t q_offset, Tensor& qa,
                                         int64_t num_heads, int64_t kv_lora_rank, int64_t rope_dim,
                                         float scale, Tensor& out) {
  MlaArgs a{};
  if (!absorbed_attention_fused(kv, kv_norm, eps, rope, batch, cache, q, q_stride, q_offset, qa,
                                num_heads, kv_lora_rank, rope_dim, scale, out, false, a))
    Backend::mla_absorbed_attention(kv, kv_norm, eps, rope, batch, latent, cache, q, q_stride,
                                    q_offset, qa, num_heads, kv_lora_rank, rope_dim, scale, out);
}

// With the attention's split merge left to W_UV's product (few tokens, splits
// planned): the attention writes its partial states and leaves; the per-head
// GEMV merges them in its prologue (the same arithmetic, so the same bits as
// the attention's merge followed by head_linear) instead of the attention's
// blocks waiting for each other, merging and writing BF16 rows for the GEMV to
// read back.
void CudaBackend::mla_absorbed_attention_uv(
    const Tensor& kv, const Tensor& kv_norm, float eps, const RopeParams& rope,
    const BatchInfo& batch, Tensor& latent, Tensor& cache, const Tensor& q, int64_t q_stride,
    int64_t q_offset, Tensor& qa, int64_t num_heads, int64_t kv_lora_rank, int64_t rope_dim,
    float scale, Tensor& latent_out, const Tensor& w_uv, Tensor& out, int64_t out_head_stride) {
  const int64_t T = batch.num_tokens(), N = w_uv.dim(1), K = w_uv.dim(2);
  const bool mergeable = mla_defer_merge_enabled() && is_bf16(w_uv) && is_bf16(out) &&
                         w_uv.dim(0) == num_heads && K == kv_lora_rank && N <= out_head_stride &&
                         out.row_size() == num_heads * out_head_stride && out.dim(0) == T &&
                         merge_gemv_supported(num_heads, N, K, T);
  MlaArgs a{};
  if (!mergeable ||
      !absorbed_attention_fused(kv, kv_norm, eps, rope, batch, cache, q, q_stride, q_offset, qa,
                                num_heads, kv_lora_rank, rope_dim, scale, latent_out, true, a)) {
    Backend::mla_absorbed_attention_uv(kv, kv_norm, eps, rope, batch, latent, cache, q, q_stride,
                                       q_offset, qa, num_heads, kv_lora_rank, rope_dim, scale,
                                       latent_out, w_uv, out, out_head_stride);
    return;
  }
  if (!a.defer_merge) {  // one split: the attention wrote latent_out
    head_linear(latent_out, kv_lora_rank, w_uv, out, out_head_stride);
    return;
  }
  OpTimer timer(*this, "head_linear");
  MergeGemvArgs m{};
  m.acc = a.ws_acc;
  m.ml = a.ws_ml;
  m.positions = a.positions;
  m.splits = a.splits;
  m.kps = a.keys_per_split;
  m.helper = attn_fresh_helper_enabled() && a.one_token_seqs ? 1 : 0;
  m.T = a.T;
  m.H = a.H;
  m.x = latent_out.data<uint16_t>();
  m.ldx = latent_out.row_size();
  m.x_head_stride = kv_lora_rank;
  m.w = w_uv.data<uint16_t>();
  m.N = static_cast<int32_t>(N);
  m.K = static_cast<int32_t>(K);
  m.out = out.data<uint16_t>();
  m.ldo = out.row_size();
  m.out_head_stride = out_head_stride;
  // Not triggering before its wait (R1SERVE_CUDA_MERGE_GEMV_TF=1 does, as the
  // plain W_UV GEMV): o_proj's blocks launched that early slow the attention's
  // key steps on the SMs they share (-17 us a step without, session 6 run 3).
  static EnvSwitch tf{"R1SERVE_CUDA_MERGE_GEMV_TF", 0};
  m.trigger_first = tf.on();
  launch_merge_gemv(m, stream_);
  note_early(m.trigger_first);
  note_write(out);
}

// The fused decode attention (see mla_absorbed_attention) when it applies
// (false: nothing launched). defer: the split merge is left to the next kernel
// where the plan has splits (a.defer_merge tells).
bool CudaBackend::absorbed_attention_fused(const Tensor& kv, const Tensor& kv_norm, float eps,
                                           const RopeParams& rope, const BatchInfo& batch,
                                           Tensor& cache, const Tensor& q, int64_t q_stride,
                                           int64_t q_offset, Tensor& qa, int64_t num_heads,
                                           int64_t kv_lora_rank, int64_t rope_dim, float scale,
                                           Tensor& out, bool defer, MlaArgs& a) {
  const int64_t width = kv_lora_rank + rope_dim, T = batch.num_tokens();
  const bool fuse =
      mla_fused_inputs_enabled() && !f32_act_ && T > 0 && batch.num_seqs() == T && is_bf16(kv) &&
      is_bf16(q) && is_bf16(qa) && is_bf16(out) && is_bf16(cache) &&
      kv_norm.dtype() == DType::kF32 && kv_norm.numel() == kv_lora_rank &&
      mla_mma_supported(kv_lora_rank, rope_dim) && rope.interleaved && rope.rot_dim() == rope_dim &&
      kv.row_size() == width && kv.dim(0) == T && q.dim(0) == T &&
      (num_heads - 1) * q_stride + q_offset + rope_dim <= q.row_size() && cache.dim(2) == width &&
      qa.row_size() == num_heads * width && out.row_size() == num_heads * kv_lora_rank;
  if (!fuse) return false;
  OpTimer timer(*this, "mla_attention");
  const int64_t slots = cache.dim(0) * cache.dim(1);
  for (int32_t s : batch.slot_mapping)
    R1_CHECK(s >= 0 && s < slots, "slot {} outside cache of {} slots", s, slots);
  if (cur_ != nullptr) cur_->num_slots = slots;
  a = mma_args(qa, cache, cache, batch, num_heads, 16, 0, scale, out);
  DevBatch& d = dev_batch(batch);
  plan_splits(a, d, (num_heads + 15) / 16, kv_lora_rank, attn_fresh_helper_enabled());
  a.rope_q = q.data<uint16_t>() + q_offset;
  a.rope_q_row = q.row_size();
  a.rope_q_stride = q_stride;
  a.latent_kv = kv.data<uint16_t>();
  a.latent_kv_row = kv.row_size();
  a.latent_w = kv_norm.data<float>();
  a.latent_eps = eps;
  a.slots = d.slot_mapping;
  a.inv_freq = dev_floats(rope.inv_freq);
  a.rope_factor = rope.attention_factor;
  a.rope_q_early = early_input(q) ? 1 : 0;
  a.latent_kv_early = early_input(kv) ? 1 : 0;
  a.trigger_first = q.dim(0) == 1 && attn_trigger_first_enabled() ? 1 : 0;
  a.defer_merge = defer && a.splits > 1 ? 1 : 0;
  launch_mla_attention(a, kv_lora_rank, rope_dim, stream_);
  note_early(a.trigger_first != 0);
  return true;
}

// ---- MLA prefill over decompressed keys and values ----

namespace {

// R1SERVE_CUDA_MLA_PREFILL=0 keeps every step on the absorbed form.
bool decompressed_mla_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("R1SERVE_CUDA_MLA_PREFILL");
    return e == nullptr || std::string(e) != "0";
  }();
  return on;
}

// The decompressed keys and values of one step are held at once; a step that
// would need more stays on the absorbed form.
constexpr int64_t kMaxDecompressedBytes = int64_t{512} << 20;

// Per-layer cost of the two forms, from rates measured on an H200
// (docs/performance-history.md): the absorbed kernel does ~70 TFLOP/s on prefill steps
// (2 (2r + p) FLOPs per query-key pair and head); decompression is a cuBLAS
// GEMM (~500 TFLOP/s, 2 r (dn + dv) per key and head), the prefill kernel
// ~150 TFLOP/s (2 (dn + p + dv) per pair and head).
constexpr double kAbsorbedTflops = 70.0, kGemmTflops = 500.0, kPrefillTflops = 150.0;

struct ContextCounts {
  int64_t keys = 0, pairs = 0;
  bool multi_token = false;
};

ContextCounts count_context(const BatchInfo& b) {
  ContextCounts c;
  for (int32_t s = 0; s < b.num_seqs(); ++s) {
    int32_t last = -1;
    for (int32_t t = b.query_start[s]; t < b.query_start[s + 1]; ++t) {
      const int32_t pos = b.positions[static_cast<size_t>(t)];
      last = std::max(last, pos);
      c.pairs += pos + 1;
    }
    c.keys += last + 1;
    c.multi_token = c.multi_token || b.query_len(s) > 1;
  }
  return c;
}

}  // namespace

bool CudaBackend::mla_decompressed_available(const MlaDims& d) const {
  return !f32_act_ && decompressed_mla_enabled() && mla_prefill_supported(d.dn, d.p, d.dv) &&
         d.r % 8 == 0;
}

bool CudaBackend::prefers_decompressed_mla(const BatchInfo& batch, const MlaDims& d) const {
  if (!mla_decompressed_available(d)) return false;
  const ContextCounts c = count_context(batch);
  if (!c.multi_token || c.keys * d.heads * (d.dn + d.dv) * 2 > kMaxDecompressedBytes) return false;
  const double absorbed = static_cast<double>(c.pairs) * (2 * d.r + d.p) / kAbsorbedTflops;
  const double decompressed = static_cast<double>(c.keys) * d.r * (d.dn + d.dv) / kGemmTflops +
                              static_cast<double>(c.pairs) * (d.dn + d.p + d.dv) / kPrefillTflops;
  return decompressed < absorbed;
}

const MlaContextPlan& CudaBackend::mla_context(DevBatch& db, int64_t block_size) {
  MlaContextPlan& m = db.mla_ctx;
  if (m.block_size == block_size) return m;
  if (capturing_) capture_broken_ = true;
  const BatchInfo& b = db.host;
  const int32_t rows = mla_prefill_rows_per_tile();
  std::vector<int32_t> slots, starts;
  std::vector<MlaPrefillTile> tiles;
  for (int32_t s = 0; s < b.num_seqs(); ++s) {
    const int32_t t0 = b.query_start[s], t1 = b.query_start[s + 1];
    int32_t last = -1;
    for (int32_t t = t0; t < t1; ++t) last = std::max(last, b.positions[static_cast<size_t>(t)]);
    starts.push_back(static_cast<int32_t>(slots.size()));
    for (int32_t j = 0; j <= last; ++j) {
      const int32_t block = b.block_of(s, j, static_cast<int32_t>(block_size));
      R1_CHECK(block >= 0, "mla prefill: sequence {} has no cache block for position {}", s, j);
      slots.push_back(block * static_cast<int32_t>(block_size) +
                      j % static_cast<int32_t>(block_size));
    }
    for (int32_t t = t0; t < t1; t += rows) {
      const int32_t n = std::min(rows, t1 - t);
      int32_t kmax = 0;
      for (int32_t i = t; i < t + n; ++i)
        kmax = std::max(kmax, b.positions[static_cast<size_t>(i)] + 1);
      tiles.push_back(MlaPrefillTile{s, t, n, kmax});
    }
  }
  // The longest tiles first, so the last wave of blocks is the short ones.
  std::stable_sort(
      tiles.begin(), tiles.end(),
      [](const MlaPrefillTile& x, const MlaPrefillTile& y) { return x.kmax > y.kmax; });
  std::vector<int32_t> packed(slots);
  packed.insert(packed.end(), starts.begin(), starts.end());
  const size_t tile_at = packed.size();
  packed.resize(tile_at + tiles.size() * 4);
  std::memcpy(packed.data() + tile_at, tiles.data(), tiles.size() * sizeof(MlaPrefillTile));
  m.storage = alloc({static_cast<int64_t>(std::max<size_t>(1, packed.size()))}, DType::kI32);
  R1_CUDA_OK(cudaMemcpyAsync(m.storage.raw(), packed.data(), packed.size() * 4,
                             cudaMemcpyHostToDevice, stream_));
  const int32_t* base = m.storage.data<int32_t>();
  m.slots = base;
  m.ctx_start = base + slots.size();
  m.tiles = reinterpret_cast<const MlaPrefillTile*>(base + tile_at);
  m.keys = static_cast<int64_t>(slots.size());
  m.num_tiles = static_cast<int32_t>(tiles.size());
  m.block_size = block_size;
  return m;
}

void CudaBackend::mla_decompressed_attention(const Tensor& q, const Tensor& latent_cache,
                                             const Linear& kv_b, const BatchInfo& batch,
                                             const MlaDims& d, float scale, Tensor& out) {
  OpTimer timer(*this, "mla_decompressed_attention");
  const int64_t width = d.r + d.p, dq = d.dn + d.p, dkv = d.dn + d.dv, nh = d.heads;
  R1_CHECK(latent_cache.dim(2) == width && q.row_size() == nh * dq && out.row_size() == nh * d.dv &&
               kv_b.out_features() == nh * dkv && kv_b.in_features() == d.r &&
               q.dim(0) == batch.num_tokens() && out.dim(0) == batch.num_tokens(),
           "mla_decompressed_attention q {} cache {} kv_b {} out {}", q.describe(),
           latent_cache.describe(), kv_b.weight.describe(), out.describe());
  R1_CHECK(!f32_act_ && is_bf16(q) && is_bf16(out) && is_bf16(latent_cache) &&
               mla_prefill_supported(d.dn, d.p, d.dv) && d.r % 8 == 0,
           "mla_decompressed_attention: needs BF16 activations and cache, and (dn, p, dv) = (128, "
           "64, 128), "
           "(32, 16, 32) or (32, 32, 32); got ({}, {}, {})",
           d.dn, d.p, d.dv);
  DevBatch& db = dev_batch(batch);
  const MlaContextPlan& m = mla_context(db, latent_cache.dim(1));
  const int64_t keys = m.keys;
  Tensor lat = Tensor::wrap(workspace(13, static_cast<size_t>(keys * d.r) * 2), {keys, d.r},
                            DType::kBF16, nullptr, Device::kCuda);
  auto* pe = static_cast<uint16_t*>(workspace(14, static_cast<size_t>(keys * d.p) * 2));
  launch_mla_gather(latent_cache.data<uint16_t>(), width, d.r, m.slots, keys, lat.data<uint16_t>(),
                    pe, stream_);
  Tensor kv = Tensor::wrap(workspace(15, static_cast<size_t>(keys * nh * dkv) * 2),
                           {keys, nh * dkv}, DType::kBF16, nullptr, Device::kCuda);
  linear(lat, kv_b, kv);
  MlaPrefillArgs a{};
  a.q = q.data<uint16_t>();
  a.q_row = q.row_size();
  a.kv = kv.data<uint16_t>();
  a.kv_row = nh * dkv;
  a.pe = pe;
  a.pe_row = d.p;
  a.ctx_start = m.ctx_start;
  a.positions = db.positions;
  a.tiles = m.tiles;
  a.num_tiles = m.num_tiles;
  a.H = static_cast<int32_t>(nh);
  a.scale = scale;
  a.out = out.data<uint16_t>();
  a.out_row = out.row_size();
  launch_mla_prefill(a, d.dn, d.p, d.dv, stream_);
}

}  // namespace r1::backend::cuda
