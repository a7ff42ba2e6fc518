// The fixture of the CUDA op tests (a GPU backend and a CPU one to compare with,
// shared by the test files of backend_test_cuda_ops) and the batches they build.
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda_test_util.h"
#include "backend/paged_batches.h"

namespace r1::backend::testing {

// got == want bit for bit.
inline void expect_same(const std::vector<float>& got, const std::vector<float>& want,
                        const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t diff = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
      if (diff == 0) first = i;
      ++diff;
    }
  EXPECT_EQ(diff, 0u) << what << ": " << diff << " of " << got.size() << " values differ, first at "
                      << first << " (" << (diff ? got[first] : 0.0f) << " vs "
                      << (diff ? want[first] : 0.0f) << ")";
}

// A routing case of the route tests: T tokens of E experts, top K of the
// topk_group best of n_group groups, scaled by 2.5.
struct RouteCase {
  int64_t T, E, K, n_group, topk_group;
  Scoring scoring;
  bool bias, normalize;
  RouterParams params() const {
    RouterParams p;
    p.scoring = scoring;
    p.top_k = K;
    p.n_group = n_group;
    p.topk_group = topk_group;
    p.normalize = normalize;
    p.scale = 2.5f;
    return p;
  }
};

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    R1_SKIP_WITHOUT_GPU();
    if (!gpu_) gpu_ = make_cuda_backend(0, 0.5);
    if (!cpu_) cpu_ = make_cpu_backend(2);
  }
  static void TearDownTestSuite() {
    gpu_.reset();
    cpu_.reset();
  }
  Backend& gpu() { return *gpu_; }
  Backend& cpu() { return *cpu_; }
  // Device BF16 activation from host F32 values.
  Tensor dev(const Tensor& host) { return gpu().upload(host, DType::kBF16).reshape(host.shape()); }
  // Device F32 tensor of any rank (vectors keep F32 on upload).
  Tensor dev_f32(const Tensor& host) {
    return gpu().upload(host.reshape({host.numel()}), DType::kF32).reshape(host.shape());
  }
  Tensor dev_i32(const Tensor& host) { return gpu().upload(host, DType::kI32); }
  Tensor galloc(const Shape& s, DType d = DType::kBF16) { return gpu().alloc(s, d); }
  Tensor calloc(const Shape& s, DType d = DType::kF32) { return Tensor::zeros(s, d); }
  // GPU and CPU latent caches (one layer) for plan p, with the same random
  // BF16 rows written for its cached and its new tokens.
  std::pair<KvCache, KvCache> mla_caches(const Plan& p, int64_t r, int64_t rope, int bs) {
    const KvCacheSpec spec = mla_spec(r, rope);
    KvCache gc = gpu().alloc_kv_cache(spec, p.blocks, bs);
    KvCache cc = cpu().alloc_kv_cache(spec, p.blocks, bs);
    for (const BatchInfo* b : {&p.history, &p.step}) {
      const int64_t T = b->num_tokens();
      if (T == 0) continue;
      Tensor lat = random_bf16({T, r + rope}, rng_);
      gpu().cache_write(dev(lat), *b, gc.latent[0]);
      cpu().cache_write(lat, *b, cc.latent[0]);
    }
    return {std::move(gc), std::move(cc)};
  }
  // Random BF16 SwiGLU experts (E of them, H wide, I inner) as CPU and GPU weights.
  std::pair<ExpertWeights, ExpertWeights> random_experts(int64_t E, int64_t H, int64_t I,
                                                         float scale) {
    ExpertWeights cw, gw;
    cw.gate_up = random_bf16({E, 2 * I, H}, rng_, scale);
    cw.down = random_bf16({E, H, I}, rng_, scale);
    gw.gate_up = gpu().upload(cw.gate_up, DType::kBF16);
    gw.down = gpu().upload(cw.down, DType::kBF16);
    return {std::move(cw), std::move(gw)};
  }
  std::mt19937 rng_{1234};
  inline static std::unique_ptr<Backend> gpu_, cpu_;
};
// One sequence of T new tokens over block table `table` (block size bs): token t
// at position t * pos_step + pos_offset, in slot t of the table's blocks.
inline BatchInfo one_sequence(int64_t T, int64_t bs, const std::vector<int32_t>& table,
                              int32_t pos_step, int32_t pos_offset) {
  BatchInfo b;
  for (int64_t t = 0; t < T; ++t) {
    b.token_ids.push_back(0);
    b.positions.push_back(static_cast<int32_t>(t) * pos_step + pos_offset);
    b.slot_mapping.push_back(table[static_cast<size_t>(t / bs)] * static_cast<int32_t>(bs) +
                             static_cast<int32_t>(t % bs));
  }
  b.query_start = {0, static_cast<int32_t>(T)};
  b.context_lens = {static_cast<int32_t>(T)};
  b.block_tables = table;
  b.max_blocks_per_seq = static_cast<int32_t>(table.size());
  return b;
}

}  // namespace r1::backend::testing
