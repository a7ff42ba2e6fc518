// Attention dispatch on the CUDA backend: the tensor-core kernel
// (mla_attention.cu) for absorbed MLA and for GQA with head_dim 64/128, its
// split plan and workspaces; the CUDA-core tile kernel (attention.cu) for other
// shapes; the exact F32 kernel in the validation mode.
#include <algorithm>

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
    const int32_t qs = b.query_start[s], rows = (b.query_start[s + 1] - qs) * static_cast<int32_t>(G);
    for (int32_t kvh = 0; kvh < nkv; ++kvh)
      for (int32_t i0 = 0; i0 < rows; i0 += 16) {
        int32_t kmax = 0;
        const int32_t last = std::min(rows, i0 + 16) - 1;
        for (int32_t t = qs + i0 / static_cast<int32_t>(G); t <= qs + last / static_cast<int32_t>(G); ++t)
          kmax = std::max(kmax, b.positions[static_cast<size_t>(t)] + 1);
        tiles.push_back(AttnTile{s, kvh, i0, kmax});
      }
  }
  Tensor dev = alloc({static_cast<int64_t>(std::max<size_t>(1, tiles.size())) * 4}, DType::kI32);
  if (!tiles.empty() && !capturing_)
    R1_CUDA_OK(cudaMemcpyAsync(dev.raw(), tiles.data(), tiles.size() * sizeof(AttnTile), cudaMemcpyHostToDevice,
                               stream_));
  const int32_t n = static_cast<int32_t>(tiles.size());
  db.tiles[key] = {dev, n};
  return {dev.data<AttnTile>(), n};
}

// ---- attention ----

void CudaBackend::attention(const Tensor& q, int64_t q_head_stride, const Tensor& k, const Tensor& v,
                            int64_t k_head_off, const BatchInfo& batch, int64_t num_heads, int64_t nkv, int64_t dk,
                            int64_t dv, float scale, Tensor& out, int64_t out_head_stride) {
  if (f32_act_) {
    // Validation mode: exact softmax in F32 over the (F32) cache.
    R1_CHECK(q.dim(0) == batch.num_tokens() && out.dim(0) == batch.num_tokens(), "attention: q {} for {} tokens",
             q.describe(), batch.num_tokens());
    R1_CHECK(k.dtype() == v.dtype() && (is_bf16(k) || k.dtype() == DType::kF32), "attention cache {}",
             k.describe());
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
    Tensor ob = Tensor::wrap(workspace(12, static_cast<size_t>(out.numel()) * 2), out.shape(), DType::kBF16, nullptr,
                             Device::kCuda);
    if (!is_bf16(out)) launch_convert(out.raw(), false, ob.raw(), true, out.numel(), stream_);
    attention(qb, q_head_stride, k, v, k_head_off, batch, num_heads, nkv, dk, dv, scale, ob, out_head_stride);
    launch_convert(ob.raw(), true, out.raw(), is_bf16(out), out.numel(), stream_);
    return;
  }
  R1_CHECK(q.dim(0) == batch.num_tokens() && out.dim(0) == batch.num_tokens(), "attention: q {} for {} tokens",
           q.describe(), batch.num_tokens());
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
  const int64_t keys = d.fixed ? int64_t{d.host.max_blocks_per_seq} * a.block_size : d.max_position + 1;
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
                                  const BatchInfo& batch, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                                  float scale, Tensor& out) {
  OpTimer timer(*this, "paged_attention");
  R1_CHECK(num_heads % num_kv_heads == 0 && k_cache.dim(2) == num_kv_heads * head_dim &&
               q.row_size() == num_heads * head_dim && out.row_size() == num_heads * head_dim,
           "paged_attention q {} cache {} out {}", q.describe(), k_cache.describe(), out.describe());
  const int64_t G = num_heads / num_kv_heads;
  if (!f32_act_ && is_bf16(q) && is_bf16(out) && is_bf16(k_cache) && is_bf16(v_cache) && gqa_mma_supported(G, head_dim)) {
    MlaArgs a = mma_args(q, k_cache, v_cache, batch, num_heads, static_cast<int32_t>(G), head_dim, scale, out);
    plan_splits(a, dev_batch(batch), num_kv_heads, head_dim);
    launch_gqa_attention(a, head_dim, stream_);
    return;
  }
  attention(q, head_dim, k_cache, v_cache, head_dim, batch, num_heads, num_kv_heads, head_dim, head_dim, scale, out,
            head_dim);
}

MlaArgs CudaBackend::mma_args(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const BatchInfo& batch,
                              int64_t num_heads, int32_t group_rows, int64_t kv_off, float scale, Tensor& out) {
  R1_CHECK(q.dim(0) == batch.num_tokens() && out.dim(0) == batch.num_tokens(), "attention: q {} for {} tokens",
           q.describe(), batch.num_tokens());
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
  a.H = static_cast<int32_t>(num_heads);
  a.scale = scale;
  a.out = out.data<uint16_t>();
  a.out_row = out.row_size();
  return a;
}

// Splits a token's keys across blocks when tokens x head groups cannot fill the GPU
// (decode). A recorded step plans for the block table's capacity.
void CudaBackend::plan_splits(MlaArgs& a, DevBatch& d, int64_t groups, int64_t dv) {
  const int64_t step = mla_keys_per_step();
  const int64_t keys = d.fixed ? int64_t{d.host.max_blocks_per_seq} * a.block_size : d.max_position + 1;
  const int64_t chunks = (keys + step - 1) / step;
  const int64_t blocks = int64_t{a.T} * groups;
  int64_t splits = blocks < 2 * sm_count_ ? std::min<int64_t>(chunks, (2 * sm_count_ + blocks - 1) / blocks) : 1;
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, mla_max_splits()));
  const int64_t per = (chunks + splits - 1) / splits;
  splits = std::max<int64_t>(1, (chunks + per - 1) / per);
  a.splits = static_cast<int32_t>(splits);
  a.keys_per_split = static_cast<int32_t>(per * step);
  if (splits > 1) {
    const size_t rows = static_cast<size_t>(splits) * static_cast<size_t>(a.T) * static_cast<size_t>(a.H);
    a.ws_acc = static_cast<float*>(workspace(1, rows * static_cast<size_t>(dv) * 4));
    a.ws_ml = static_cast<float*>(workspace(2, rows * 2 * 4));
    a.counters = zeroed_counters(static_cast<size_t>(blocks));
  }
}

void CudaBackend::mla_attention(const Tensor& q, const Tensor& latent_cache, const BatchInfo& batch,
                                int64_t num_heads, int64_t kv_lora_rank, int64_t rope_dim, float scale, Tensor& out) {
  OpTimer timer(*this, "mla_attention");
  const int64_t width = kv_lora_rank + rope_dim;
  R1_CHECK(latent_cache.dim(2) == width && q.row_size() == num_heads * width &&
               out.row_size() == num_heads * kv_lora_rank,
           "mla_attention q {} cache {} out {}", q.describe(), latent_cache.describe(), out.describe());
  if (!f32_act_ && is_bf16(q) && is_bf16(out) && is_bf16(latent_cache) && mla_mma_supported(kv_lora_rank, rope_dim)) {
    MlaArgs a = mma_args(q, latent_cache, latent_cache, batch, num_heads, 16, 0, scale, out);
    plan_splits(a, dev_batch(batch), (num_heads + 15) / 16, kv_lora_rank);
    launch_mla_attention(a, kv_lora_rank, rope_dim, stream_);
    return;
  }
  attention(q, width, latent_cache, latent_cache, 0, batch, num_heads, 1, width, kv_lora_rank, scale, out,
            kv_lora_rank);
}

}  // namespace r1::backend::cuda
