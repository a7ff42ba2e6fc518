// Attention on the CPU over the paged KV cache: dense GQA and absorbed MLA
// share one routine (scores = Q K^T over the key blocks, softmax, P V). Each
// query row is computed alone and in a fixed order, so results do not depend
// on how tokens are batched or chunked.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/check.h"

namespace r1::backend::cpu {
namespace {

// Where the keys (or values) of one sequence live: row j of the sequence is at
// base + slot(j) * row_stride + offset.
struct PagedRows {
  const float* base;
  int64_t row_stride;
  int64_t offset;
  const int32_t* block_table;
  int64_t block_size;
  const float* row(int64_t j) const {
    return base +
           (static_cast<int64_t>(block_table[j / block_size]) * block_size + j % block_size) *
               row_stride +
           offset;
  }
};

// out[g, :dv] = softmax(scale * q[g] . keys[0..n)) . values[0..n) for G query
// rows that share the same keys (heads of one KV group, or all MLA heads).
void attend(const Kernels& k, const float* q, int64_t ldq, int64_t G, int64_t dk, int64_t n,
            const PagedRows& keys, const PagedRows& values, int64_t dv, float scale, float* out,
            int64_t ldo, std::vector<float>& scores) {
  scores.resize(static_cast<size_t>(G * n));
  float* s = scores.data();
  // Scores block by block: keys of one block are contiguous rows.
  for (int64_t j0 = 0; j0 < n;) {
    const int64_t in_block = keys.block_size - j0 % keys.block_size;
    const int64_t nb = std::min(in_block, n - j0);
    k.gemm(q, ldq, G, keys.row(j0), WeightType::kF32, keys.row_stride, nb, dk, nullptr, nullptr,
           s + j0, n);
    j0 += nb;
  }
  for (int64_t g = 0; g < G; ++g) {
    float* sg = s + g * n;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      sg[j] *= scale;
      mx = std::max(mx, sg[j]);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      sg[j] = std::exp(sg[j] - mx);
      sum += sg[j];
    }
    const float inv = 1.0f / sum;
    float* og = out + g * ldo;
    std::memset(og, 0, static_cast<size_t>(dv) * 4);
    for (int64_t j = 0; j < n; ++j) k.axpy(og, sg[j] * inv, values.row(j), dv);
  }
}

}  // namespace

void CpuBackend::paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                 const BatchInfo& batch, int64_t num_heads, int64_t num_kv_heads,
                                 int64_t head_dim, float scale, Tensor& out) {
  OpTimer timer(*this, [] { return std::string("paged_attention"); });
  const int64_t group = num_heads / num_kv_heads;
  const int64_t block_size = k_cache.dim(1), kv_row = k_cache.dim(2);
  R1_CHECK(kv_row == num_kv_heads * head_dim && q.row_size() == num_heads * head_dim,
           "paged_attention q {} cache {}", q.describe(), k_cache.describe());
  const int32_t T = batch.num_tokens();
  // token -> sequence
  std::vector<int32_t> seq_of(static_cast<size_t>(T));
  for (int32_t s = 0; s < batch.num_seqs(); ++s)
    for (int32_t t = batch.query_start[s]; t < batch.query_start[s + 1]; ++t) seq_of[t] = s;
  const float* qp = q.data<float>();
  float* op = out.data<float>();
  pool_.parallel_for(static_cast<int64_t>(T) * num_kv_heads, 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> scores;
    for (int64_t task = b; task < e; ++task) {
      const int64_t t = task / num_kv_heads, g = task % num_kv_heads;
      const int32_t s = seq_of[static_cast<size_t>(t)];
      const int64_t n = batch.positions[static_cast<size_t>(t)] + 1;
      const int32_t* table =
          batch.block_tables.data() + static_cast<int64_t>(s) * batch.max_blocks_per_seq;
      PagedRows keys{k_cache.data<float>(), kv_row, g * head_dim, table, block_size};
      PagedRows values{v_cache.data<float>(), kv_row, g * head_dim, table, block_size};
      attend(k_, qp + t * q.row_size() + g * group * head_dim, head_dim, group, head_dim, n, keys,
             values, head_dim, scale, op + t * out.row_size() + g * group * head_dim, head_dim,
             scores);
    }
  });
}

void CpuBackend::mla_attention(const Tensor& q, const Tensor& latent_cache, const BatchInfo& batch,
                               int64_t num_heads, int64_t kv_lora_rank, int64_t rope_dim,
                               float scale, Tensor& out) {
  OpTimer timer(*this, [] { return std::string("mla_attention"); });
  const int64_t width = kv_lora_rank + rope_dim, block_size = latent_cache.dim(1);
  R1_CHECK(latent_cache.dim(2) == width && q.row_size() == num_heads * width &&
               out.row_size() == num_heads * kv_lora_rank,
           "mla_attention q {} cache {} out {}", q.describe(), latent_cache.describe(),
           out.describe());
  const int32_t T = batch.num_tokens();
  std::vector<int32_t> seq_of(static_cast<size_t>(T));
  for (int32_t s = 0; s < batch.num_seqs(); ++s)
    for (int32_t t = batch.query_start[s]; t < batch.query_start[s + 1]; ++t) seq_of[t] = s;
  // Heads are split into groups so that small batches still use every thread;
  // all heads of a group read each key once.
  const int64_t heads_per_task = T >= pool_.num_threads() * 2
                                     ? num_heads
                                     : std::max<int64_t>(1, num_heads / (pool_.num_threads() * 2));
  const int64_t groups = (num_heads + heads_per_task - 1) / heads_per_task;
  const float* qp = q.data<float>();
  float* op = out.data<float>();
  pool_.parallel_for(static_cast<int64_t>(T) * groups, 1, [&](int64_t b, int64_t e) {
    thread_local std::vector<float> scores;
    for (int64_t task = b; task < e; ++task) {
      const int64_t t = task / groups, h0 = (task % groups) * heads_per_task;
      const int64_t nh = std::min(heads_per_task, num_heads - h0);
      const int32_t s = seq_of[static_cast<size_t>(t)];
      const int64_t n = batch.positions[static_cast<size_t>(t)] + 1;
      const int32_t* table =
          batch.block_tables.data() + static_cast<int64_t>(s) * batch.max_blocks_per_seq;
      PagedRows keys{latent_cache.data<float>(), width, 0, table, block_size};
      attend(k_, qp + t * q.row_size() + h0 * width, width, nh, width, n, keys, keys, kv_lora_rank,
             scale, op + t * out.row_size() + h0 * kv_lora_rank, kv_lora_rank, scores);
    }
  });
}

void CpuBackend::mla_decompressed_attention(const Tensor& q, const Tensor& latent_cache,
                                            const Linear& kv_b, const BatchInfo& batch,
                                            const MlaDims& d, float scale, Tensor& out) {
  OpTimer timer(*this, [] { return std::string("mla_decompressed_attention"); });
  const int64_t width = d.r + d.p, dq = d.dn + d.p, dkv = d.dn + d.dv, nh = d.heads;
  const int64_t block_size = latent_cache.dim(1);
  R1_CHECK(latent_cache.dim(2) == width && q.row_size() == nh * dq && out.row_size() == nh * d.dv &&
               kv_b.out_features() == nh * dkv && kv_b.in_features() == d.r,
           "mla_decompressed_attention q {} cache {} kv_b {} out {}", q.describe(),
           latent_cache.describe(), kv_b.weight.describe(), out.describe());
  const float* qp = q.data<float>();
  float* op = out.data<float>();
  for (int32_t s = 0; s < batch.num_seqs(); ++s) {
    const int32_t t0 = batch.query_start[s], t1 = batch.query_start[s + 1];
    if (t1 == t0) continue;
    const int64_t n = batch.positions[static_cast<size_t>(t1 - 1)] + 1;
    const int32_t* table =
        batch.block_tables.data() + static_cast<int64_t>(s) * batch.max_blocks_per_seq;
    const PagedRows cache{latent_cache.data<float>(), width, 0, table, block_size};
    // The context's latents [n, r], decompressed: kv [n, heads * (dn + dv)];
    // keys [n, heads * (dn + p)] = per head [k_nope | k_pe].
    Tensor lat = Tensor::empty({n, d.r}, DType::kF32);
    for (int64_t j = 0; j < n; ++j)
      std::memcpy(lat.data<float>() + j * d.r, cache.row(j), static_cast<size_t>(d.r) * 4);
    Tensor kv = Tensor::empty({n, nh * dkv}, DType::kF32);
    linear(lat, kv_b, kv);
    Tensor keys = Tensor::empty({n, nh * dq}, DType::kF32);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t h = 0; h < nh; ++h) {
        float* kr = keys.data<float>() + j * nh * dq + h * dq;
        std::memcpy(kr, kv.data<float>() + j * nh * dkv + h * dkv, static_cast<size_t>(d.dn) * 4);
        std::memcpy(kr + d.dn, cache.row(j) + d.r, static_cast<size_t>(d.p) * 4);
      }
    // Contiguous rows: one block that holds them all.
    const int32_t whole = 0;
    pool_.parallel_for(static_cast<int64_t>(t1 - t0) * nh, 1, [&](int64_t b, int64_t e) {
      thread_local std::vector<float> scores;
      for (int64_t task = b; task < e; ++task) {
        const int64_t t = t0 + task / nh, h = task % nh;
        const int64_t nt = batch.positions[static_cast<size_t>(t)] + 1;
        const PagedRows k_rows{keys.data<float>(), nh * dq, h * dq, &whole, n};
        const PagedRows v_rows{kv.data<float>(), nh * dkv, h * dkv + d.dn, &whole, n};
        attend(k_, qp + t * q.row_size() + h * dq, dq, 1, dq, nt, k_rows, v_rows, d.dv, scale,
               op + t * out.row_size() + h * d.dv, d.dv, scores);
      }
    });
  }
}

}  // namespace r1::backend::cpu
