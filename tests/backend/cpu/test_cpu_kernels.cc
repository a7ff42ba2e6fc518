// CPU kernels against plain double-precision loops: gemm (F32 and BF16
// weights, every tile shape), for every ISA table this CPU can run; and the
// batch invariance that the engine's determinism rests on (row m of a gemm is
// bit-identical whatever M is).
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"
#include "core/dtype.h"

namespace r1::backend::cpu {
namespace {

std::vector<const Kernels*> runnable_tables() {
  std::vector<const Kernels*> v = {&kernels_generic()};
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) v.push_back(&kernels_avx2());
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    v.push_back(&kernels_avx512());
#endif
  return v;
}

TEST(CpuKernels, GemmMatchesReferenceForEveryIsaAndShape) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  for (const Kernels* k : runnable_tables()) {
    for (int64_t M : {1, 2, 3, 4, 5, 9}) {
      for (int64_t N : {1, 7, 8, 17}) {
        for (int64_t K : {1, 15, 16, 33, 130}) {
          std::vector<float> x(static_cast<size_t>(M * K)), wf(static_cast<size_t>(N * K)),
              bias(static_cast<size_t>(N));
          std::vector<uint16_t> wb(static_cast<size_t>(N * K));
          for (auto& v : x) v = nd(rng);
          for (size_t i = 0; i < wf.size(); ++i) {
            wb[i] = f32_to_bf16(nd(rng));
            wf[i] = bf16_to_f32(wb[i]);
          }
          for (auto& v : bias) v = nd(rng);
          std::vector<float> o1(static_cast<size_t>(M * N)), o2(static_cast<size_t>(M * N));
          k->gemm(x.data(), K, M, wf.data(), WeightType::kF32, K, N, K, nullptr, bias.data(),
                  o1.data(), N);
          k->gemm(x.data(), K, M, wb.data(), WeightType::kBF16, K, N, K, nullptr, bias.data(),
                  o2.data(), N);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
              double ref = bias[static_cast<size_t>(n)];
              for (int64_t kk = 0; kk < K; ++kk)
                ref += double(x[static_cast<size_t>(m * K + kk)]) *
                       wf[static_cast<size_t>(n * K + kk)];
              const double tol = 1e-5 * (std::sqrt(double(K)) + 1) * 4;
              ASSERT_NEAR(o1[static_cast<size_t>(m * N + n)], ref, tol)
                  << k->isa << " M" << M << " N" << N << " K" << K;
              // BF16 weights hold the same values (contraction may differ by an ulp).
              ASSERT_NEAR(o2[static_cast<size_t>(m * N + n)], ref, tol) << k->isa << " bf16";
            }
        }
      }
    }
  }
}

TEST(CpuKernels, GemmRowsDoNotDependOnBatchSize) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  const int64_t N = 37, K = 301;
  std::vector<float> w(static_cast<size_t>(N * K)), x(static_cast<size_t>(11 * K));
  for (auto& v : w) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  for (const Kernels* k : runnable_tables()) {
    std::vector<float> alone(static_cast<size_t>(N));
    for (int64_t M = 1; M <= 11; ++M) {
      std::vector<float> out(static_cast<size_t>(M * N));
      k->gemm(x.data(), K, M, w.data(), WeightType::kF32, K, N, K, nullptr, nullptr, out.data(), N);
      for (int64_t m = 0; m < M; ++m) {
        k->gemm(x.data() + m * K, K, 1, w.data(), WeightType::kF32, K, N, K, nullptr, nullptr,
                alone.data(), N);
        for (int64_t n = 0; n < N; ++n)
          ASSERT_EQ(out[static_cast<size_t>(m * N + n)], alone[static_cast<size_t>(n)])
              << k->isa << " M=" << M << " row " << m;
      }
    }
  }
}

TEST(CpuBackend, MoeRouteGroupLimitedTopK) {
  CpuBackend be(1);
  // 8 experts in 4 groups of 2; choose top-2 groups then top-3 experts.
  const float logits[8] = {0.1f, 0.2f, 2.0f, 1.9f, -1.0f, -2.0f, 1.0f, 0.9f};
  const float bias_v[8] = {0, 0, 0, 0, 5.0f, 0, 0, 0};  // lifts group 2 (experts 4,5) for selection
  Tensor lg = Tensor::empty({1, 8}, DType::kF32), bias = Tensor::empty({8}, DType::kF32);
  std::copy(logits, logits + 8, lg.data<float>());
  std::copy(bias_v, bias_v + 8, bias.data<float>());
  Tensor ids = Tensor::empty({1, 3}, DType::kI32), w = Tensor::empty({1, 3}, DType::kF32);
  RouterParams p;
  p.scoring = Scoring::kSigmoid;
  p.top_k = 3;
  p.n_group = 4;
  p.topk_group = 2;
  p.normalize = true;
  p.scale = 2.5f;
  be.moe_route(lg, bias, p, ids, w);
  // Group scores (top-2 sums of sigmoid+bias): g0 ~1.07, g1 ~1.75, g2 ~5.39, g3 ~1.44.
  // Kept: g2, g1. Experts by biased score: 4 (5.27), 2 (0.88), 3 (0.87).
  EXPECT_EQ(ids.data<int32_t>()[0], 4);
  EXPECT_EQ(ids.data<int32_t>()[1], 2);
  EXPECT_EQ(ids.data<int32_t>()[2], 3);
  auto sig = [](float v) { return 1.0f / (1.0f + std::exp(-v)); };
  const float s4 = sig(-1.0f), s2 = sig(2.0f), s3 = sig(1.9f), sum = s4 + s2 + s3;
  // Weights use the unbiased scores, renormalized and scaled.
  EXPECT_NEAR(w.data<float>()[0], s4 / sum * 2.5f, 1e-6);
  EXPECT_NEAR(w.data<float>()[1], s2 / sum * 2.5f, 1e-6);
  EXPECT_NEAR(w.data<float>()[2], s3 / sum * 2.5f, 1e-6);
}

}  // namespace
}  // namespace r1::backend::cpu
