// MLA's two forms on the CPU backend: attention over keys and values
// decompressed from the latents (mla_decompressed_attention, the prefill form)
// equals the weight-absorbed form (W_UK^T folded into the query, mla_attention
// over the latent cache, then W_UV) -- the latter computed here from the same
// kv_b with host loops around mla_attention, which the model tests prove
// against transformers. Several sequences, cached context, chunks.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "backend/paged_batches.h"

namespace r1::backend {
namespace {

using testing::make_plan;
using testing::Plan;
using testing::random_f32;

TEST(CpuMlaForms, DecompressedEqualsAbsorbed) {
  struct Case {
    MlaDims d;
    std::vector<std::pair<int, int>> seqs;  // (cached, new)
  };
  auto be = make_cpu_backend(2);
  std::mt19937 rng(99);
  for (const Case& c : std::vector<Case>{{{4, 64, 32, 16, 32}, {{0, 37}, {5, 9}, {20, 1}}},
                                         {{2, 128, 32, 32, 32}, {{0, 70}, {130, 2}, {33, 17}}},
                                         {{3, 512, 128, 64, 128}, {{40, 20}, {0, 5}}}}) {
    const MlaDims& d = c.d;
    const int64_t nh = d.heads, W = d.r + d.p, dq = d.dn + d.p, dkv = d.dn + d.dv;
    const int bs = 16;
    Plan p = make_plan(c.seqs, bs, rng);
    KvCache cache = be->alloc_kv_cache(testing::mla_spec(d.r, d.p), p.blocks, bs);
    for (BatchInfo* b : {&p.history, &p.step})
      if (b->num_tokens() > 0)
        be->cache_write(random_f32({b->num_tokens(), W}, rng, 1.0f), *b, cache.latent[0]);
    Tensor kvb = random_f32({nh * dkv, d.r}, rng, 1.0f / std::sqrt(static_cast<float>(d.r)));
    Linear kv_b;
    kv_b.weight = be->upload(kvb, DType::kF32);
    const int64_t T = p.step.num_tokens();
    Tensor q = random_f32({T, nh * dq}, rng, 0.5f);
    const float scale = 1.0f / std::sqrt(static_cast<float>(dq));

    Tensor got = Tensor::zeros({T, nh * d.dv}, DType::kF32);
    be->mla_decompressed_attention(q, cache.latent[0], kv_b, p.step, d, scale, got);

    // Absorbed: q_abs [T, nh, r + p] = [W_UK^T q_nope | q_pe]; o = W_UV o_lat.
    const float* w = kvb.data<float>();
    Tensor qa = Tensor::zeros({T, nh * W}, DType::kF32);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < nh; ++h) {
        const float* qh = q.data<float>() + t * nh * dq + h * dq;
        float* out = qa.data<float>() + t * nh * W + h * W;
        for (int64_t j = 0; j < d.r; ++j) {
          double acc = 0;
          for (int64_t e = 0; e < d.dn; ++e) acc += double(qh[e]) * w[(h * dkv + e) * d.r + j];
          out[j] = static_cast<float>(acc);
        }
        std::copy(qh + d.dn, qh + dq, out + d.r);
      }
    Tensor olat = Tensor::zeros({T, nh * d.r}, DType::kF32);
    be->mla_attention(qa, cache.latent[0], p.step, nh, d.r, d.p, scale, olat);
    double num = 0, den = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < nh; ++h)
        for (int64_t e = 0; e < d.dv; ++e) {
          double ref = 0;
          for (int64_t j = 0; j < d.r; ++j)
            ref += double(w[(h * dkv + d.dn + e) * d.r + j]) *
                   olat.data<float>()[t * nh * d.r + h * d.r + j];
          const double g = got.data<float>()[t * nh * d.dv + h * d.dv + e];
          ASSERT_FALSE(std::isnan(g));
          num += (g - ref) * (g - ref);
          den += ref * ref;
        }
    EXPECT_GT(den, 0.0);
    EXPECT_LE(std::sqrt(num / den), 2e-5) << "heads " << nh << " r " << d.r;
  }
}

TEST(CpuMlaForms, CpuKeepsTheAbsorbedForm) {
  auto be = make_cpu_backend(1);
  BatchInfo b;
  b.token_ids = {0, 0, 0};
  b.positions = {0, 1, 2};
  b.slot_mapping = {0, 1, 2};
  b.query_start = {0, 3};
  b.context_lens = {3};
  b.block_tables = {0};
  b.max_blocks_per_seq = 1;
  EXPECT_FALSE(be->prefers_decompressed_mla(b, MlaDims{4, 64, 32, 16, 32}));
  EXPECT_FALSE(be->mla_decompressed_available(MlaDims{4, 64, 32, 16, 32}));
}

TEST(CpuMlaFormsDeathTest, MismatchedShapesAbortWithTheShapes) {
  auto be = make_cpu_backend(1);
  KvCache cache = be->alloc_kv_cache(testing::mla_spec(64, 16), 1, 16);
  BatchInfo b;
  b.token_ids = {0};
  b.positions = {0};
  b.slot_mapping = {0};
  b.query_start = {0, 1};
  b.context_lens = {1};
  b.block_tables = {0};
  b.max_blocks_per_seq = 1;
  Linear kv_b;
  kv_b.weight = Tensor::zeros({4 * 64, 64}, DType::kF32);
  Tensor q = Tensor::zeros({1, 4 * 48}, DType::kF32), out = Tensor::zeros({1, 4 * 32}, DType::kF32);
  // kv_b has 64 rows per head where dn + dv = 64 -- fine; a q of the wrong width is not.
  Tensor bad_q = Tensor::zeros({1, 4 * 40}, DType::kF32);
  EXPECT_NO_THROW(
      be->mla_decompressed_attention(q, cache.latent[0], kv_b, b, {4, 64, 32, 16, 32}, 0.1f, out));
  // Shapes come from the model, so a mismatch is an internal error naming the tensors.
  EXPECT_DEATH(be->mla_decompressed_attention(bad_q, cache.latent[0], kv_b, b, {4, 64, 32, 16, 32},
                                              0.1f, out),
               "mla_decompressed_attention q F32\\[1, 160\\]");
}

}  // namespace
}  // namespace r1::backend
