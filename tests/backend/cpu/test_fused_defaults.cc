// The Backend's default fused forms of the dense layer (linear_add,
// rms_norm_linear, rms_norm_linear_swiglu) and of the MoE layer's experts
// (rms_norm_moe_shared_experts_add), which the CPU backend keeps, equal the
// plain op sequences they stand for bit for bit, and write their scratch
// (tmp / normed / gu) as those ops do: F32 and BF16 weights, with and without
// a bias, several token counts.
#include <array>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "backend/paged_batches.h"
#include "core/dtype.h"
#include "core/tensor.h"

namespace r1::backend {
namespace {

using testing::random_f32;

// A weight [N, K] in `dtype` (F32 or BF16) from N(0, scale^2) values.
Tensor random_weight(int64_t N, int64_t K, DType dtype, std::mt19937& rng, float scale) {
  Tensor f = random_f32({N, K}, rng, scale);
  if (dtype == DType::kF32) return f;
  Tensor b = Tensor::empty({N, K}, DType::kBF16);
  for (int64_t i = 0; i < f.numel(); ++i) b.data<uint16_t>()[i] = f32_to_bf16(f.data<float>()[i]);
  return b;
}

Tensor copy_of(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype());
  std::memcpy(c.raw(), t.raw(), t.nbytes());
  return c;
}

void expect_bits_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.nbytes(), want.nbytes()) << what;
  const float* g = got.data<float>();
  const float* w = want.data<float>();
  int64_t diff = 0, first = -1;
  for (int64_t i = 0; i < got.numel(); ++i)
    if (std::memcmp(g + i, w + i, sizeof(float)) != 0) {
      if (first < 0) first = i;
      ++diff;
    }
  EXPECT_EQ(diff, 0) << what << ": " << diff << " values differ, first at " << first << " ("
                     << (first >= 0 ? g[first] : 0.0f) << " vs " << (first >= 0 ? w[first] : 0.0f)
                     << ")";
}

class FusedDefaults : public ::testing::TestWithParam<DType> {
 protected:
  std::unique_ptr<Backend> be_ = make_cpu_backend(2);
  std::mt19937 rng_{99};
  // A random [N, K] projection in the parameter's dtype, with an F32 bias if asked.
  Linear random_linear(int64_t N, int64_t K, bool bias) {
    Linear w;
    w.weight = random_weight(N, K, GetParam(), rng_, 0.1f);
    if (bias) w.bias = random_f32({N}, rng_, 1.0f);
    return w;
  }
  static std::string label(int64_t T, int64_t K, int64_t N, bool bias) {
    return "T " + std::to_string(T) + " K " + std::to_string(K) + " N " + std::to_string(N) +
           (bias ? " bias" : "");
  }
};

TEST_P(FusedDefaults, LinearAddIsLinearThenAdd) {
  Backend& be = *be_;
  for (auto [T, K, N] :
       std::vector<std::array<int64_t, 3>>{{1, 64, 48}, {4, 96, 130}, {7, 40, 9}}) {
    for (bool bias : {false, true}) {
      const std::string what = label(T, K, N, bias);
      const Linear w = random_linear(N, K, bias);
      Tensor x = random_f32({T, K}, rng_, 1.0f), r0 = random_f32({T, N}, rng_, 3.0f);
      // Plain ops.
      Tensor want_r = copy_of(r0), want_tmp = Tensor::zeros({T, N}, DType::kF32);
      be.linear(x, w, want_tmp);
      be.add(want_r, want_tmp, want_r);
      // The fused form.
      Tensor got_r = copy_of(r0), got_tmp = Tensor::zeros({T, N}, DType::kF32);
      be.linear_add(x, w, got_r, got_tmp);
      expect_bits_equal(got_r, want_r, "linear_add residual " + what);
      expect_bits_equal(got_tmp, want_tmp, "linear_add tmp " + what);
      // It added something: the residual changed.
      EXPECT_NE(std::memcmp(got_r.raw(), r0.raw(), r0.nbytes()), 0) << what;
    }
  }
}

TEST_P(FusedDefaults, RmsNormLinearIsRmsNormThenLinear) {
  Backend& be = *be_;
  for (auto [T, K, N] :
       std::vector<std::array<int64_t, 3>>{{1, 64, 48}, {3, 96, 130}, {6, 40, 9}}) {
    for (bool bias : {false, true}) {
      const std::string what = label(T, K, N, bias);
      const Linear w = random_linear(N, K, bias);
      Tensor x = random_f32({T, K}, rng_, 2.0f), nw = random_f32({K}, rng_, 1.0f);
      const float eps = 1e-6f;
      Tensor want_n = Tensor::zeros({T, K}, DType::kF32), want = Tensor::zeros({T, N}, DType::kF32);
      be.rms_norm(x, nw, eps, want_n);
      be.linear(want_n, w, want);
      Tensor got_n = Tensor::zeros({T, K}, DType::kF32), got = Tensor::zeros({T, N}, DType::kF32);
      be.rms_norm_linear(x, nw, eps, got_n, w, got);
      expect_bits_equal(got, want, "rms_norm_linear out " + what);
      expect_bits_equal(got_n, want_n, "rms_norm_linear normed " + what);
    }
  }
}

TEST_P(FusedDefaults, RmsNormLinearSwigluIsRmsNormThenLinearSwiglu) {
  Backend& be = *be_;
  for (auto [T, K, I] : std::vector<std::array<int64_t, 3>>{{1, 64, 40}, {4, 96, 77}, {5, 32, 8}}) {
    const std::string what =
        "T " + std::to_string(T) + " K " + std::to_string(K) + " I " + std::to_string(I);
    Linear gate_up;
    gate_up.weight = random_weight(2 * I, K, GetParam(), rng_, 0.1f);
    Tensor x = random_f32({T, K}, rng_, 2.0f), nw = random_f32({K}, rng_, 1.0f);
    const float eps = 1e-5f;
    Tensor want_n = Tensor::zeros({T, K}, DType::kF32),
           want_gu = Tensor::zeros({T, 2 * I}, DType::kF32),
           want = Tensor::zeros({T, I}, DType::kF32);
    be.rms_norm(x, nw, eps, want_n);
    be.linear_swiglu(want_n, gate_up, want_gu, want);
    // And linear_swiglu itself is the product then silu_mul (what the fused GPU kernels mirror).
    Tensor plain_gu = Tensor::zeros({T, 2 * I}, DType::kF32),
           plain = Tensor::zeros({T, I}, DType::kF32);
    be.linear(want_n, gate_up, plain_gu);
    be.silu_mul(plain_gu, plain);
    expect_bits_equal(want, plain, "linear_swiglu vs linear + silu_mul " + what);
    Tensor got_n = Tensor::zeros({T, K}, DType::kF32),
           got_gu = Tensor::zeros({T, 2 * I}, DType::kF32),
           got = Tensor::zeros({T, I}, DType::kF32);
    be.rms_norm_linear_swiglu(x, nw, eps, got_n, gate_up, got_gu, got);
    expect_bits_equal(got, want, "rms_norm_linear_swiglu out " + what);
    expect_bits_equal(got_n, want_n, "rms_norm_linear_swiglu normed " + what);
    expect_bits_equal(got_gu, want_gu, "rms_norm_linear_swiglu gu " + what);
  }
}

// The dense layer's residual stream over two "layers" of the new sequence
// (linear_add of o and down into x, norms in the products' prologues) equals the
// old one (the FFN output carried as a delta into the next add_rms_norm).
TEST_P(FusedDefaults, ResidualStreamMatchesTheDeferredAdd) {
  Backend& be = *be_;
  const int64_t T = 3, H = 64, I = 48;
  const float eps = 1e-6f;
  Linear o, gate_up, down;
  o.weight = random_weight(H, H, GetParam(), rng_, 0.1f);
  gate_up.weight = random_weight(2 * I, H, GetParam(), rng_, 0.1f);
  down.weight = random_weight(H, I, GetParam(), rng_, 0.1f);
  Tensor n1 = random_f32({H}, rng_, 1.0f), n2 = random_f32({H}, rng_, 1.0f);
  Tensor att = random_f32({T, H}, rng_, 1.0f), x0 = random_f32({T, H}, rng_, 2.0f);
  Tensor a = Tensor::zeros({T, H}, DType::kF32), h = Tensor::zeros({T, H}, DType::kF32),
         gu = Tensor::zeros({T, 2 * I}, DType::kF32), act = Tensor::zeros({T, I}, DType::kF32),
         f = Tensor::zeros({T, H}, DType::kF32);
  // Old: delta carried; the layer's o product added in add_rms_norm, f added by the next one.
  Tensor xo = copy_of(x0), delta;
  for (int layer = 0; layer < 2; ++layer) {
    if (delta.defined())
      be.add_rms_norm(xo, delta, n1, eps, a);
    else
      be.rms_norm(xo, n1, eps, a);
    be.linear(att, o, h);
    be.add_rms_norm(xo, h, n2, eps, a);
    be.linear_swiglu(a, gate_up, gu, act);
    be.linear(act, down, f);
    delta = f;
  }
  be.add(xo, delta, xo);
  // New: every add in a product's epilogue.
  Tensor xn = copy_of(x0);
  for (int layer = 0; layer < 2; ++layer) {
    be.linear_add(att, o, xn, h);
    be.rms_norm_linear_swiglu(xn, n2, eps, a, gate_up, gu, act);
    be.linear_add(act, down, xn, h);
  }
  expect_bits_equal(xn, xo, "residual stream");
}

// The MoE layer's experts with the shared experts' MLP in one op equal the
// model's plain sequence (rms_norm, the shared MLP into `shared`, the routed
// experts with shared added in the combine, the residual add), the residual
// being x itself as in the model.
TEST_P(FusedDefaults, RmsNormMoeSharedExpertsAddIsThePlainOps) {
  Backend& be = *be_;
  const int64_t E = 8, H = 64, I = 24, K = 2;
  const float eps = 1e-6f;
  auto random_in_dtype = [&](const Shape& s, float scale) {
    Tensor f = random_f32(s, rng_, scale);
    if (GetParam() == DType::kF32) return f;
    Tensor b = Tensor::empty(s, DType::kBF16);
    for (int64_t i = 0; i < f.numel(); ++i) b.data<uint16_t>()[i] = f32_to_bf16(f.data<float>()[i]);
    return b;
  };
  ExpertWeights w;
  w.gate_up = random_in_dtype({E, 2 * I, H}, 0.1f);
  w.down = random_in_dtype({E, H, I}, 0.1f);
  Linear sg, sd;
  sg.weight = random_weight(2 * I, H, GetParam(), rng_, 0.1f);
  sd.weight = random_weight(H, I, GetParam(), rng_, 0.1f);
  RouterParams p;
  p.top_k = K;
  p.normalize = true;
  for (int64_t T : {1, 3}) {
    const std::string what = "T " + std::to_string(T);
    Tensor x0 = random_f32({T, H}, rng_, 2.0f), nw = random_f32({H}, rng_, 1.0f);
    Tensor logits = random_f32({T, E}, rng_, 2.0f);
    Tensor ids = Tensor::zeros({T, K}, DType::kI32), wts = Tensor::zeros({T, K}, DType::kF32);
    be.moe_route(logits, Tensor(), p, ids, wts);
    auto zeros = [](int64_t n, int64_t m) { return Tensor::zeros({n, m}, DType::kF32); };
    // The model's plain sequence.
    Tensor want = copy_of(x0), m = zeros(T, H), gu = zeros(T, 2 * I), act = zeros(T, I),
           sh = zeros(T, H), tmp = zeros(T, H);
    be.rms_norm(want, nw, eps, m);
    be.linear_swiglu(m, sg, gu, act);
    be.linear(act, sd, sh);
    be.moe_experts(m, w, ids, wts, tmp);
    be.add(tmp, sh, tmp);
    be.add(want, tmp, want);
    // The op.
    Tensor got = copy_of(x0), gm = zeros(T, H), ggu = zeros(T, 2 * I), gact = zeros(T, I),
           gsh = zeros(T, H), gtmp = zeros(T, H);
    be.rms_norm_moe_shared_experts_add(got, nw, eps, gm, w, ids, wts, sg, sd, ggu, gact, gsh, got,
                                       gtmp);
    expect_bits_equal(got, want, "rms_norm_moe_shared_experts_add " + what);
    expect_bits_equal(gsh, sh, "rms_norm_moe_shared_experts_add shared " + what);
    EXPECT_NE(std::memcmp(got.raw(), x0.raw(), x0.nbytes()), 0) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Weights, FusedDefaults, ::testing::Values(DType::kF32, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return i.param == DType::kF32 ? std::string("F32") : std::string("BF16");
                         });

}  // namespace
}  // namespace r1::backend
