// The dense GEMV's fused forms on the GPU (RMSNorm folded into the products;
// the residual add, or q/k rope with the cache writes, in the epilogue) against
// the GPU's plain ops (bit for bit, or within the rounding of the normed rows
// the folded norm skips) and the CPU backend within BF16 rounding. Skips
// without a GPU.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/kernels.h"
#include "backend/cuda_ops_fixture.h"

namespace r1::backend::testing {
namespace {

// ---- The dense GEMV's folded RMSNorm and its epilogue (residual add) ----

// The folded norm against rms_norm followed by the product: the plain ops
// round the normed rows to BF16 (relative 2^-9 each), the folded norm does not,
// so BF16 outputs land one unit apart here and there (2^-8 relative), more so
// for SwiGLU outputs near zero. Both are held to the CPU's F32 ops within 1e-2
// (below), so they are within 2e-2 of each other; the CPU check is the one
// that holds the folded norm to the arithmetic.
constexpr double kFoldTol = 2e-2;

// Scratch the fused kernels need not write: filled with this value first, so a
// test can tell the fused path (left alone) from the plain ops (overwritten).
constexpr float kUntouched = 7.0f;
bool untouched(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float f) { return f == kUntouched; });
}

// One case of the fused forms on the GPU: against the GPU's plain ops (bit for
// bit) and the CPU backend (its defaults: the plain ops in F32).
struct FusedCase {
  int64_t T, K, N;
};

class CudaFused : public CudaOps {
 protected:
  // The same BF16 weight (and F32 bias, if defined) as a GPU and a CPU projection.
  std::pair<Linear, Linear> both_linear(const Tensor& w, const Tensor& bias = Tensor()) {
    Linear gl, cl;
    gl.weight = gpu().upload(w, DType::kBF16);
    cl.weight = w;
    if (bias.defined()) {
      gl.bias = gpu().upload(bias, DType::kF32);
      cl.bias = bias;
    }
    return {gl, cl};
  }
  Tensor filled(const Shape& s) {
    Tensor h = Tensor::empty(s, DType::kF32);
    std::fill(h.data<float>(), h.data<float>() + h.numel(), kUntouched);
    return dev(h);
  }
  // How the GEMVs take a norm for the checks below: folded into the products
  // (close to the plain ops) or the prologue (the plain ops bit for bit; rows
  // longer than 8192 are folded anyway).
  void set_fold(bool fold) { cuda_set_norm_fold(gpu(), fold ? (int64_t{1} << 40) : 0); }
  static bool folds(bool fold, int64_t K) { return fold || K > 8192; }
  // rms_norm_linear with a bias (the dense q/k/v projection), its scratch, and
  // whether the fused kernel ran (`fused`: T <= 4) with the norm folded.
  void check_norm_linear(const FusedCase& c, bool fused, bool fold, const std::string& what) {
    const auto [T, K, N] = c;
    const float eps = 1e-6f;
    Tensor x = random_bf16({T, K}, rng_, 2.0f), nw = random_bf16({K}, rng_),
           w = random_bf16({N, K}, rng_, 0.05f), bv = random_bf16({N}, rng_);
    const auto [gl, cl] = both_linear(w, bv);
    Tensor gx = dev(x), gnw = gpu().upload(nw, DType::kF32);
    Tensor pn = galloc({T, K}), po = galloc({T, N});
    gpu().rms_norm(gx, gnw, eps, pn);
    gpu().linear(pn, gl, po);
    Tensor fn = filled({T, K}), fo = galloc({T, N});
    gpu().rms_norm_linear(gx, gnw, eps, fn, gl, fo);
    const std::vector<float> got = fetch(gpu(), fo);
    if (fused && fold)
      expect_close(got, fetch(gpu(), po), kFoldTol, "rms_norm_linear vs rms_norm + linear" + what);
    else
      expect_same(got, fetch(gpu(), po), "rms_norm_linear vs rms_norm + linear" + what);
    if (fused)
      EXPECT_TRUE(untouched(fetch(gpu(), fn))) << "rms_norm_linear did not fuse" << what;
    else
      expect_same(fetch(gpu(), fn), fetch(gpu(), pn), "rms_norm_linear normed" + what);
    Tensor cn = calloc({T, K}), co = calloc({T, N});
    cpu().rms_norm_linear(x, nw, eps, cn, cl, co);
    expect_close(got, host_values(co), 1e-2, "rms_norm_linear vs CPU" + what);
  }
  // rms_norm_linear_swiglu (the gate/up projection, I = N).
  void check_norm_swiglu(const FusedCase& c, bool fused, bool fold, const std::string& what) {
    const auto [T, K, I] = c;
    const float eps = 1e-5f;
    Tensor x = random_bf16({T, K}, rng_, 0.7f), nw = random_bf16({K}, rng_, 2.0f),
           w = random_bf16({2 * I, K}, rng_, 0.05f);
    const auto [gl, cl] = both_linear(w);
    Tensor gx = dev(x), gnw = gpu().upload(nw, DType::kF32);
    Tensor pn = galloc({T, K}), pgu = galloc({T, 2 * I}), po = galloc({T, I});
    gpu().rms_norm(gx, gnw, eps, pn);
    gpu().linear_swiglu(pn, gl, pgu, po);
    Tensor fn = filled({T, K}), fgu = galloc({T, 2 * I}), fo = galloc({T, I});
    gpu().rms_norm_linear_swiglu(gx, gnw, eps, fn, gl, fgu, fo);
    const std::vector<float> got = fetch(gpu(), fo);
    if (fused && fold)
      expect_close(got, fetch(gpu(), po), kFoldTol, "rms_norm_linear_swiglu vs plain" + what);
    else
      expect_same(got, fetch(gpu(), po), "rms_norm_linear_swiglu vs plain" + what);
    if (fused)
      EXPECT_TRUE(untouched(fetch(gpu(), fn))) << "rms_norm_linear_swiglu did not fuse" << what;
    else
      expect_same(fetch(gpu(), fn), fetch(gpu(), pn), "rms_norm_linear_swiglu normed" + what);
    Tensor cn = calloc({T, K}), cgu = calloc({T, 2 * I}), co = calloc({T, I});
    cpu().rms_norm_linear_swiglu(x, nw, eps, cn, cl, cgu, co);
    expect_close(got, host_values(co), 1e-2, "rms_norm_linear_swiglu vs CPU" + what);
  }
  // linear_add into a residual of the products' magnitude (so rounding the
  // product before the add matters), with and without a bias.
  void check_linear_add(const FusedCase& c, bool fused, const std::string& what) {
    const auto [T, K, N] = c;
    Tensor x = random_bf16({T, K}, rng_), w = random_bf16({N, K}, rng_, 0.05f),
           bv = random_bf16({N}, rng_),
           r = random_bf16({T, N}, rng_, 0.05f * std::sqrt(static_cast<float>(K)));
    for (bool bias : {false, true}) {
      const std::string wb = what + (bias ? " bias" : "");
      const auto [gl, cl] = both_linear(w, bias ? bv : Tensor());
      Tensor gx = dev(x);
      Tensor pr = dev(r), pt = galloc({T, N});
      gpu().linear(gx, gl, pt);
      gpu().add(pr, pt, pr);
      Tensor fr = dev(r), ft = filled({T, N});
      gpu().linear_add(gx, gl, fr, ft);
      const std::vector<float> got = fetch(gpu(), fr);
      expect_same(got, fetch(gpu(), pr), "linear_add vs linear + add" + wb);
      if (fused)
        EXPECT_TRUE(untouched(fetch(gpu(), ft))) << "linear_add did not fuse" << wb;
      else
        expect_same(fetch(gpu(), ft), fetch(gpu(), pt), "linear_add tmp" + wb);
      Tensor cr = Tensor::empty({T, N}, DType::kF32), ct = calloc({T, N});
      std::memcpy(cr.raw(), r.raw(), r.nbytes());
      cpu().linear_add(x, cl, cr, ct);
      expect_close(got, host_values(cr), 1e-2, "linear_add vs CPU" + wb);
    }
  }
  static std::string name(const FusedCase& c) {
    return " T " + std::to_string(c.T) + " K " + std::to_string(c.K) + " N " + std::to_string(c.N);
  }
};

// T = 1..4 on the 7B's width (3584) and R1's (7168: 57 KB of normed rows at 4
// tokens in the prologue, above the default shared-memory limit), N that leave
// partial blocks and small N (rows split across warps); K = 9216 (too long for
// the prologue: folded either way; linear_add splits rows on K); T >= 5 (the
// plain ops). Each with the norm folded and in the prologue.
TEST_F(CudaFused, FusedGemvFormsEqualPlainOps) {
  for (const FusedCase& c : std::vector<FusedCase>{{1, 3584, 4608},
                                                   {2, 3584, 1001},
                                                   {3, 7168, 517},
                                                   {4, 7168, 129},
                                                   {4, 3584, 77},
                                                   {1, 520, 9},
                                                   {2, 64, 3},
                                                   {4, 9216, 520},
                                                   {5, 3584, 300},
                                                   {6, 7168, 45},
                                                   {9, 520, 33}}) {
    const bool gemv = c.T <= 4;
    for (bool fold : {false, true}) {
      set_fold(fold);
      const std::string what = name(c) + (folds(fold, c.K) ? " folded" : " prologue");
      check_norm_linear(c, gemv, folds(fold, c.K), what);
      check_norm_swiglu(c, gemv, folds(fold, c.K), what);
    }
    set_fold(false);
    check_linear_add(c, gemv, name(c));
  }
  cuda_set_norm_fold(gpu(), -1);
}

// Every launch plan of the dense GEMV: the fused forms reduce in the plan's
// order as the plain ones do (split rows combine their partial sums before the
// residual add).
TEST_F(CudaFused, FusedGemvFormsEveryPlan) {
  for (const FusedCase& c : std::vector<FusedCase>{{3, 1024, 130}, {4, 2048, 9}, {1, 4096, 77}})
    for (int split : {1, 2, 4, 8})
      for (int rows : {1, 2})
        for (int unroll : {4, 8}) {
          cuda_set_gemv_plan(split, rows, unroll);
          const std::string what = name(c) + " split " + std::to_string(split) + " rows " +
                                   std::to_string(rows) + " unroll " + std::to_string(unroll);
          for (bool fold : {false, true}) {
            set_fold(fold);
            check_norm_linear(c, true, fold, what + (fold ? " folded" : " prologue"));
            check_norm_swiglu(c, true, fold, what + (fold ? " folded" : " prologue"));
          }
          check_linear_add(c, true, what);
        }
  cuda_set_gemv_plan(0, 1, 4);
  cuda_set_norm_fold(gpu(), -1);
}

// A GEMV reading an rms_norm's output with a kernel in between computes before
// pdl_wait (GemvFusion::x_early; only its stores wait): the same products as
// right after the norm, bit for bit, for linear (with a bias), linear_swiglu,
// an rms_norm of a product and the folded norm of a product (rms_norm_linear),
// while the kernel in between writes a buffer of its own.
TEST_F(CudaFused, EarlyInputGemvEqualsPlain) {
  for (const FusedCase& c : std::vector<FusedCase>{{1, 2048, 576}, {3, 1024, 130}, {4, 520, 9}}) {
    const auto [T, K, N] = c;
    Tensor x = random_bf16({T, K}, rng_), nw = random_bf16({K}, rng_),
           w = random_bf16({2 * N, K}, rng_, 0.05f), bv = random_bf16({2 * N}, rng_),
           y = random_bf16({T, 4096}, rng_);
    const auto [gl, cl] = both_linear(w, bv);
    Linear gu;
    gu.weight = gl.weight;
    Tensor gx = dev(x), gnw = gpu().upload(nw, DType::kF32), gy = dev(y);
    Tensor n1 = galloc({T, K}), n2 = galloc({T, K}), ytmp = galloc({T, 4096});
    Tensor p_lin = galloc({T, 2 * N}), p_sw = galloc({T, N}), e_lin = galloc({T, 2 * N}),
           e_sw = galloc({T, N}), scratch = galloc({T, 2 * N});
    gpu().rms_norm(gx, gnw, 1e-6f, n1);  // plain: each product right after the norm
    gpu().linear(n1, gl, p_lin);
    gpu().rms_norm(gx, gnw, 1e-6f, n1);
    gpu().linear_swiglu(n1, gu, scratch, p_sw);
    gpu().rms_norm(gx, gnw, 1e-6f, n2);  // early: a kernel in between
    gpu().add(gy, gy, ytmp);
    gpu().linear(n2, gl, e_lin);
    gpu().linear_swiglu(n2, gu, scratch, e_sw);
    // rms_norm of a product, right after it and with a kernel in between (early).
    Tensor nw2 = gpu().upload(random_bf16({2 * N}, rng_), DType::kF32);
    Tensor pn = galloc({T, 2 * N}), en = galloc({T, 2 * N});
    gpu().rms_norm(p_lin, nw2, 1e-6f, pn);
    gpu().add(gy, gy, ytmp);
    gpu().rms_norm(e_lin, nw2, 1e-6f, en);
    // The folded norm of a product's output, right after it and with a kernel in between.
    Linear half;
    half.weight = gpu().upload(random_bf16({N, 2 * N}, rng_, 0.05f), DType::kBF16);
    Tensor pf = galloc({T, N}), ef = galloc({T, N}), fs = galloc({T, 2 * N});
    gpu().linear(n1, gl, p_lin);
    gpu().rms_norm_linear(p_lin, nw2, 1e-6f, fs, half, pf);
    gpu().linear(n1, gl, e_lin);
    gpu().add(gy, gy, ytmp);
    gpu().rms_norm_linear(e_lin, nw2, 1e-6f, fs, half, ef);
    const std::string what = name(c);
    expect_same(fetch(gpu(), ef), fetch(gpu(), pf), "early rms_norm_linear" + what);
    expect_same(fetch(gpu(), e_lin), fetch(gpu(), p_lin), "early linear" + what);
    expect_same(fetch(gpu(), e_sw), fetch(gpu(), p_sw), "early linear_swiglu" + what);
    expect_same(fetch(gpu(), en), fetch(gpu(), pn), "early rms_norm" + what);
  }
}

// Two products of one input in one launch: bit for bit the GPU's linear of the
// stacked matrix [w1; w2] split in two, and the CPU's two linears within BF16
// rounding; the same with the input's norm folded in (rms_norm_linear_pair
// against the stacked rms_norm_linear); T >= 5 takes two plain linears. Shapes: DeepSeek's q_a and
// kv_a (768 and 576 rows of 2048), small odd ones.
TEST_F(CudaFused, LinearPairEqualsStackedLinear) {
  struct Case {
    int64_t T, K, N1, N2;
  };
  for (const Case& c : std::vector<Case>{{1, 2048, 768, 576},
                                         {3, 2048, 768, 576},
                                         {4, 64, 24, 40},
                                         {2, 136, 8, 3},
                                         {6, 256, 40, 24}}) {
    const std::string what = " T=" + std::to_string(c.T) + " K=" + std::to_string(c.K) +
                             " N=" + std::to_string(c.N1) + "+" + std::to_string(c.N2);
    Tensor x = random_bf16({c.T, c.K}, rng_), w1 = random_bf16({c.N1, c.K}, rng_, 0.05f),
           w2 = random_bf16({c.N2, c.K}, rng_, 0.05f);
    Tensor ws = Tensor::empty({c.N1 + c.N2, c.K}, w1.dtype());
    std::memcpy(ws.raw(), w1.raw(), w1.nbytes());
    std::memcpy(static_cast<char*>(ws.raw()) + w1.nbytes(), w2.raw(), w2.nbytes());
    const auto [g1, c1] = both_linear(w1);
    const auto [g2, c2] = both_linear(w2);
    const auto [gs, cs] = both_linear(ws);
    const Tensor gx = dev(x);
    Tensor o1 = galloc({c.T, c.N1}), o2 = galloc({c.T, c.N2}), os = galloc({c.T, c.N1 + c.N2});
    gpu().linear_pair(gx, g1, o1, g2, o2);
    gpu().linear(gx, gs, os);
    const std::vector<float> got1 = fetch(gpu(), o1), got2 = fetch(gpu(), o2),
                             stacked = fetch(gpu(), os);
    std::vector<float> want1, want2;
    for (int64_t t = 0; t < c.T; ++t) {
      const auto row = stacked.begin() + t * (c.N1 + c.N2);
      want1.insert(want1.end(), row, row + c.N1);
      want2.insert(want2.end(), row + c.N1, row + c.N1 + c.N2);
    }
    if (c.T <= 4) {  // the pair's GEMV plan is the stacked matrix's
      expect_same(got1, want1, "linear_pair first" + what);
      expect_same(got2, want2, "linear_pair second" + what);
    }
    Tensor co1 = calloc({c.T, c.N1}), co2 = calloc({c.T, c.N2});
    cpu().linear(x, c1, co1);
    cpu().linear(x, c2, co2);
    expect_close(got1, host_values(co1), 1e-2, "linear_pair first vs CPU" + what);
    expect_close(got2, host_values(co2), 1e-2, "linear_pair second vs CPU" + what);
    // With the input norm folded in: the stacked matrix's rms_norm_linear, split.
    Tensor nw = random_bf16({c.K}, rng_, 2.0f);
    const Tensor gnw = gpu().upload(nw, DType::kF32);
    Tensor n1 = filled({c.T, c.K}), n2 = filled({c.T, c.K});
    gpu().rms_norm_linear_pair(gx, gnw, 1e-6f, n1, g1, o1, g2, o2);
    gpu().rms_norm_linear(gx, gnw, 1e-6f, n2, gs, os);
    const std::vector<float> ng1 = fetch(gpu(), o1), ng2 = fetch(gpu(), o2),
                             nstacked = fetch(gpu(), os);
    want1.clear();
    want2.clear();
    for (int64_t t = 0; t < c.T; ++t) {
      const auto row = nstacked.begin() + t * (c.N1 + c.N2);
      want1.insert(want1.end(), row, row + c.N1);
      want2.insert(want2.end(), row + c.N1, row + c.N1 + c.N2);
    }
    if (c.T <= 4) {  // one GEMV plan, as above
      expect_same(ng1, want1, "rms_norm_linear_pair first" + what);
      expect_same(ng2, want2, "rms_norm_linear_pair second" + what);
      EXPECT_TRUE(untouched(fetch(gpu(), n1))) << "the pair did not fold" << what;
    }
    Tensor cn = calloc({c.T, c.K});
    cpu().rms_norm_linear_pair(x, nw, 1e-6f, cn, c1, co1, c2, co2);
    expect_close(ng1, host_values(co1), 1e-2, "rms_norm_linear_pair first vs CPU" + what);
    expect_close(ng2, host_values(co2), 1e-2, "rms_norm_linear_pair second vs CPU" + what);
  }
}

// linear_add whose input is the residual itself must not race: the plain ops.
TEST_F(CudaFused, LinearAddOntoItsOwnInput) {
  const int64_t T = 2, H = 256;
  Tensor r = random_bf16({T, H}, rng_), w = random_bf16({H, H}, rng_, 0.05f);
  const auto [gl, cl] = both_linear(w);
  Tensor pr = dev(r), pt = galloc({T, H});
  gpu().linear(pr, gl, pt);
  gpu().add(pr, pt, pr);
  Tensor fr = dev(r), ft = filled({T, H});
  gpu().linear_add(fr, gl, fr, ft);
  expect_same(fetch(gpu(), fr), fetch(gpu(), pr), "linear_add onto its input");
  Tensor cr = Tensor::empty({T, H}, DType::kF32), ct = calloc({T, H});
  std::memcpy(cr.raw(), r.raw(), r.nbytes());
  cpu().linear_add(cr, cl, cr, ct);
  expect_close(fetch(gpu(), fr), host_values(cr), 1e-2, "linear_add onto its input vs CPU");
}

// The dense layer's attention inputs as one GEMV (norm folded in or in the prologue; rope of q and
// k, the cache writes of k and v in the epilogue) against rms_norm_linear followed by
// qkv_rope_cache_write on the GPU (bit for bit: q and both caches whole) and the CPU's defaults; T
// >= 5 takes the plain ops. Shapes: the 7B's heads (28 / 4 x 128, with q/k/v biases), a small GQA
// and MHA.
TEST_F(CudaFused, QkvProjectionWithRopeAndCacheWrite) {
  struct Case {
    int64_t T, K, nh, nkv, d;
  };
  const int bs = 16;
  for (bool fold : {false, true})
    for (const Case& c : std::vector<Case>{{1, 3584, 28, 4, 128},
                                           {3, 3584, 28, 4, 128},
                                           {4, 512, 8, 2, 64},
                                           {2, 256, 4, 4, 32},
                                           {6, 512, 8, 2, 64}}) {
      set_fold(fold);
      const std::string what = " T " + std::to_string(c.T) + " heads " + std::to_string(c.nh) +
                               "/" + std::to_string(c.nkv) + " d " + std::to_string(c.d) +
                               (fold ? " folded" : " prologue");
      const int64_t N = (c.nh + 2 * c.nkv) * c.d, W = c.nkv * c.d;
      RopeParams rope;
      for (int64_t i = 0; i < c.d / 2; ++i)
        rope.inv_freq.push_back(std::pow(10000.0f, -2.0f * static_cast<float>(i) / c.d));
      rope.attention_factor = 1.0f;
      // Tokens at positions 40.. of one sequence whose blocks are shuffled.
      const std::vector<int32_t> table = {3, 0, 5, 1, 4, 2};
      BatchInfo b = one_sequence(c.T, bs, table, 1, 40);
      for (int64_t t = 0; t < c.T; ++t)
        b.slot_mapping[static_cast<size_t>(t)] =
            table[static_cast<size_t>((40 + t) / bs)] * bs + static_cast<int32_t>((40 + t) % bs);
      const int64_t blocks = static_cast<int64_t>(table.size());
      Tensor x = random_bf16({c.T, c.K}, rng_, 1.5f), nw = random_bf16({c.K}, rng_),
             w = random_bf16({N, c.K}, rng_, 0.05f), bv = random_bf16({N}, rng_);
      Tensor old_cache = random_bf16({blocks, bs, W}, rng_);
      const auto [gl, cl] = both_linear(w, bv);
      Tensor gx = dev(x), gnw = gpu().upload(nw, DType::kF32);
      const float eps = 1e-6f;
      // Plain GPU ops.
      Tensor pn = galloc({c.T, c.K}), pqkv = galloc({c.T, N}), pq = galloc({c.T, c.nh * c.d}),
             pk = galloc({c.T, W}), pv = galloc({c.T, W});
      Tensor pkc = dev(old_cache), pvc = dev(old_cache);
      gpu().rms_norm_linear(gx, gnw, eps, pn, gl, pqkv);
      gpu().qkv_rope_cache_write(pqkv, c.nh, c.nkv, c.d, rope, b, pq, pk, pv, pkc, pvc);
      // Fused.
      Tensor fn = filled({c.T, c.K}), fqkv = filled({c.T, N}), fq = galloc({c.T, c.nh * c.d}),
             fk = galloc({c.T, W}), fv = galloc({c.T, W});
      Tensor fkc = dev(old_cache), fvc = dev(old_cache);
      gpu().rms_norm_qkv_rope_cache_write(gx, gnw, eps, fn, gl, fqkv, c.nh, c.nkv, c.d, rope, b, fq,
                                          fk, fv, fkc, fvc);
      const std::vector<float> gq = fetch(gpu(), fq), gkc = fetch(gpu(), fkc),
                               gvc = fetch(gpu(), fvc);
      expect_same(gq, fetch(gpu(), pq), "q" + what);
      expect_same(gkc, fetch(gpu(), pkc), "k cache" + what);
      expect_same(gvc, fetch(gpu(), pvc), "v cache" + what);
      if (c.T <= 4) {
        EXPECT_TRUE(untouched(fetch(gpu(), fqkv))) << "the q/k/v product did not fuse" << what;
      }
      // CPU defaults.
      Tensor cn = calloc({c.T, c.K}), cqkv = calloc({c.T, N}), cq = calloc({c.T, c.nh * c.d}),
             ck = calloc({c.T, W}), cv = calloc({c.T, W});
      Tensor ckc = Tensor::empty(old_cache.shape(), DType::kF32),
             cvc = Tensor::empty(old_cache.shape(), DType::kF32);
      std::memcpy(ckc.raw(), old_cache.raw(), old_cache.nbytes());
      std::memcpy(cvc.raw(), old_cache.raw(), old_cache.nbytes());
      cpu().rms_norm_qkv_rope_cache_write(x, nw, eps, cn, cl, cqkv, c.nh, c.nkv, c.d, rope, b, cq,
                                          ck, cv, ckc, cvc);
      expect_close(gq, host_values(cq), 1e-2, "q vs CPU" + what);
      expect_close(gkc, host_values(ckc), 1e-2, "k cache vs CPU" + what);
      expect_close(gvc, host_values(cvc), 1e-2, "v cache vs CPU" + what);
    }
  cuda_set_norm_fold(gpu(), -1);
}

// rms_norm_linear_head (MLA's absorbed query, q_b then W_UK): one token at the
// 9B's and R1's widths (q_absorb.cu's one kernel) against the two ops it replaces (bit for bit:
// both outputs), and against the CPU's default within BF16 rounding; two tokens and a width the
// kernel does not take go through the two ops.
TEST_F(CudaFused, AbsorbedQueryInOneKernel) {
  struct Case {
    int64_t T, K, H;
  };
  const int64_t qk = 192, N = 512, dn = 128, ohs = 576;
  for (const Case& c : std::vector<Case>{{1, 768, 16}, {1, 1536, 4}, {2, 768, 16}, {1, 512, 4}}) {
    const std::string what =
        " T " + std::to_string(c.T) + " K " + std::to_string(c.K) + " H " + std::to_string(c.H);
    const float eps = 1e-6f;
    Tensor x = random_bf16({c.T, c.K}, rng_, 2.0f), nw = random_bf16({c.K}, rng_),
           w = random_bf16({c.H * qk, c.K}, rng_, 0.05f),
           wuk = random_bf16({c.H, N, dn}, rng_, 0.1f);
    const auto [gl, cl] = both_linear(w);
    Tensor gx = dev(x), gnw = gpu().upload(nw, DType::kF32), guk = dev(wuk);
    std::vector<float> q[2], qa[2];
    for (int mode = 0; mode < 2; ++mode) {
      cuda::set_q_absorb(mode == 1);
      Tensor n = galloc({c.T, c.K}), gq = galloc({c.T, c.H * qk}), gqa = filled({c.T, c.H * ohs});
      gpu().rms_norm_linear_head(gx, gnw, eps, n, gl, gq, qk, guk, gqa, ohs);
      q[mode] = fetch(gpu(), gq);
      qa[mode] = fetch(gpu(), gqa);
    }
    cuda::set_q_absorb(true);
    expect_same(q[1], q[0], "q, one kernel vs two" + what);
    expect_same(qa[1], qa[0], "q_abs, one kernel vs two" + what);
    // The head columns past N are the attention's (the rotated q_pe): left alone.
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t i = N; i < ohs; ++i)
          EXPECT_EQ(qa[1][static_cast<size_t>((t * c.H + h) * ohs + i)], kUntouched) << what;
    Tensor cn = calloc({c.T, c.K}), cq = calloc({c.T, c.H * qk}), cqa = calloc({c.T, c.H * ohs});
    cpu().rms_norm_linear_head(x, nw, eps, cn, cl, cq, qk, wuk, cqa, ohs);
    expect_close(q[1], host_values(cq), 1e-2, "q vs CPU" + what);
    std::vector<float> got, want;  // the N products of each head
    const std::vector<float> cv = host_values(cqa);
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t i = 0; i < N; ++i) {
          got.push_back(qa[1][static_cast<size_t>((t * c.H + h) * ohs + i)]);
          want.push_back(cv[static_cast<size_t>((t * c.H + h) * ohs + i)]);
        }
    expect_close(got, want, 2e-2, "q_abs vs CPU" + what);
  }
}

}  // namespace
}  // namespace r1::backend::testing
