// The split-K tensor-core products of decode batches (skinny_gemm.cu) against
// cuBLAS and the CPU backend at the batch sizes that use it (5-32 rows): both
// token-tile sizes (16, 32), 2 to 8 splits (a ragged last one), odd output
// counts, F32 and BF16 outputs, per-head products with strides wider than the heads.
#include <fmt/format.h>

#include <array>
#include <vector>

#include "backend/cuda/kernels.h"
#include "backend/cuda_ops_fixture.h"

namespace r1::backend::testing {
namespace {

int sm_count() {
  int n = 0;
  cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, 0);
  return n;
}

class SkinnyOn {
 public:
  explicit SkinnyOn(Backend& be) : be_(be) {}
  ~SkinnyOn() { cuda_set_skinny_gemm(be_, true); }
  void set(bool on) { cuda_set_skinny_gemm(be_, on); }

 private:
  Backend& be_;
};

}  // namespace

// The launch plan (host code: runs without a GPU). Splits cover K exactly once,
// in 64-column stages, at most 8 (a portable cluster) and at least two stages
// each; products with enough output tiles to fill the GPU are not split (the
// backend leaves those to cuBLAS).
TEST(SkinnyPlan, SplitsCoverKWhereTilesAreFew) {
  for (int64_t M : {5, 8, 16, 17, 32})
    for (auto [N, K] : std::vector<std::array<int64_t, 2>>{
             {64, 2048}, {576, 2048}, {3072, 768}, {2048, 1408}, {4500, 1416}, {129280, 2048}}) {
      const cuda::SkinnyPlan p = cuda::plan_skinny_gemm(M, N, K, 1, 132);
      EXPECT_EQ(p.nt, M <= 16 ? 2 : 4);
      EXPECT_EQ(p.tok_tiles, 1);
      EXPECT_EQ(p.row_tiles, (N + 127) / 128);
      EXPECT_GE(p.splits, 1);
      EXPECT_LE(p.splits, 8);
      EXPECT_EQ(p.kc % 64, 0);
      EXPECT_GE(p.splits * p.kc, K);
      EXPECT_LT((p.splits - 1) * p.kc, K);
      if (p.splits > 1) {
        EXPECT_GE(p.kc, 128);
      }
      if (p.row_tiles >= 264) {
        EXPECT_EQ(p.splits, 1) << N;
      }
    }
  // o_proj at batch 32 on 132 SMs: 16 row tiles, 8 splits of 256 columns.
  const cuda::SkinnyPlan o = cuda::plan_skinny_gemm(32, 2048, 2048, 1, 132);
  EXPECT_EQ(o.splits, 8);
  EXPECT_EQ(o.kc, 256);
  // W_UV (16 heads of 128 x 512) at batch 8: 4 splits of 128 columns.
  const cuda::SkinnyPlan uv = cuda::plan_skinny_gemm(8, 128, 512, 16, 132);
  EXPECT_EQ(uv.splits, 4);
  EXPECT_EQ(uv.kc, 128);
}

TEST_F(CudaOps, SkinnyGemmEqualsCublasAndCpu) {
  SkinnyOn sw(gpu());
  // (T, K, N): q_a/kv_a, q_b, o_proj-like, a router (N = 64), a ragged split
  // (K = 1416), long rows (K = 4096), odd N.
  for (auto [T, K, N] : std::vector<std::array<int64_t, 3>>{{5, 2048, 576},
                                                            {16, 768, 3072},
                                                            {17, 2048, 64},
                                                            {32, 2048, 2048},
                                                            {31, 1416, 4500},
                                                            {8, 520, 130},
                                                            {24, 2048, 1344},
                                                            {20, 4096, 1000}}) {
    // Each shape takes the kernel (the plan splits K), not cuBLAS twice.
    const cuda::SkinnyPlan plan = cuda::plan_skinny_gemm(T, N, K, 1, sm_count());
    ASSERT_GE(plan.splits, 2) << T << " " << K << " " << N;
    ASSERT_TRUE(cuda::skinny_plan_fits(plan)) << plan.splits << " blocks a cluster";
    Tensor x = random_bf16({T, K}, rng_), w = random_bf16({N, K}, rng_, 0.05f);
    Linear gl, cl;
    gl.weight = gpu().upload(w, DType::kBF16);
    cl.weight = w;
    Tensor co = calloc({T, N});
    cpu().linear(x, cl, co);
    const Tensor gx = dev(x);
    for (DType od : {DType::kF32, DType::kBF16}) {
      const std::string what =
          fmt::format("T={} K={} N={} {}", T, K, N, od == DType::kF32 ? "f32" : "bf16");
      Tensor on = galloc({T, N}, od), off = galloc({T, N}, od);
      sw.set(true);
      gpu().linear(gx, gl, on);
      sw.set(false);
      gpu().linear(gx, gl, off);
      const std::vector<float> a = fetch(gpu(), on), b = fetch(gpu(), off);
      expect_close(a, host_values(co), od == DType::kF32 ? 1e-4 : 1e-2, what + " vs cpu");
      // Against cuBLAS: the same F32 sums in another order (BF16: plus one rounding).
      expect_close(a, b, od == DType::kF32 ? 1e-5 : 8e-3, what + " vs cublas");
      // A second launch gives the same bits (the split counters were left at zero).
      sw.set(true);
      Tensor again = galloc({T, N}, od);
      gpu().linear(gx, gl, again);
      expect_same(fetch(gpu(), again), a, what + " relaunch");
    }
  }
}

TEST_F(CudaOps, SkinnyHeadLinearEqualsCublasAndCpu) {
  SkinnyOn sw(gpu());
  // MLA's absorbing products at decode batches: [T, H * xs] x [H, N, K] -> [T, H * os]
  // (W_UV's shape splits K; W_UK^T's, K = 128, is too short to split and stays on cuBLAS).
  for (auto [T, H, N, K, xs, os] :
       std::vector<std::array<int64_t, 6>>{{8, 16, 128, 512, 512, 128},
                                           {32, 16, 128, 512, 512, 128},
                                           {100, 16, 128, 512, 512, 136},
                                           {128, 4, 72, 256, 264, 80},
                                           {32, 16, 512, 128, 192, 576}}) {
    EXPECT_EQ(cuda::plan_skinny_gemm(T, N, K, H, sm_count()).splits >= 2, K >= 256)
        << T << " " << K;
    Tensor x = random_bf16({T, H * xs}, rng_), w = random_bf16({H, N, K}, rng_, 0.1f);
    Tensor init = random_bf16({T, H * os}, rng_);
    Tensor co = calloc({T, H * os});
    std::memcpy(co.raw(), init.raw(), init.nbytes());
    cpu().head_linear(x, xs, w, co, os);
    const Tensor gw = gpu().upload(w, DType::kBF16), gx = dev(x);
    Tensor on = dev(init), off = dev(init);
    sw.set(true);
    gpu().head_linear(gx, xs, gw, on, os);
    sw.set(false);
    gpu().head_linear(gx, xs, gw, off, os);
    const std::string what = fmt::format("T={} H={} N={} K={}", T, H, N, K);
    const std::vector<float> a = fetch(gpu(), on);
    expect_close(a, host_values(co), 1e-2, what + " vs cpu");
    expect_close(a, fetch(gpu(), off), 8e-3, what + " vs cublas");
    // Columns past N of each head (os > N) keep their initial values.
    const std::vector<float> init_v = host_values(init);
    size_t touched = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t n = N; n < os; ++n) {
          const size_t i = static_cast<size_t>((t * H + h) * os + n);
          touched += a[i] != init_v[i];
        }
    EXPECT_EQ(touched, 0u) << what;
  }
}

}  // namespace r1::backend::testing
