// The routed experts of one token streamed through shared memory
// (moe_stream.cu: no sort, the combine in the down kernel) against the warp-per-row GEMVs (moe.cu)
// bit for bit, and against the CPU backend within BF16 rounding, with and without the shared
// experts' output added (and the routing read before pdl_wait, a kernel after
// the route kernel); the routing done by the streamed kernels themselves
// against the route kernel; several tokens (the GEMVs either way) against the CPU;
// moe_experts_add against the plain ops; and rms_norm_moe_experts_add (the norm
// folded into the streamed gate/up kernel) against rms_norm followed by
// moe_experts_add; larger batches on the tensor cores (moe_mma.cu) against the
// grouped cuBLAS GEMMs and the CPU. Skips without a GPU.
#include <algorithm>
#include <array>
#include <map>
#include <string>
#include <vector>

#include "backend/cuda/kernels.h"
#include "backend/cuda_ops_fixture.h"

namespace r1::backend::testing {
namespace {

struct MoeCase {
  int64_t E, H, I, K;
};

// Sigmoid top-K routing, renormalized and scaled by 2.5 (DeepSeek-V3's form, no groups).
RouterParams topk_normalized(int64_t K) {
  RouterParams p;
  p.top_k = K;
  p.normalize = true;
  p.scale = 2.5f;
  return p;
}

// The routing kernels' limits (host code: runs without a GPU): at most 256
// experts, 1 <= top-k <= min(32, E), groups dividing E (the backend turns a
// refusal into a kUnsupported error naming the widths).
TEST(MoeRouteArgs, LimitsAreCheckedOnTheHost) {
  auto args = [](int E, int K, int groups, int topk_groups) {
    cuda::RouteArgs r;
    r.E = E;
    r.K = K;
    r.n_group = groups;
    r.topk_group = topk_groups;
    return r;
  };
  for (const cuda::RouteArgs& good : {args(256, 8, 8, 4), args(64, 6, 1, 1), args(4, 4, 2, 2)})
    EXPECT_TRUE(cuda::route_args_ok(good)) << "E=" << good.E << " K=" << good.K;
  for (const cuda::RouteArgs& bad :
       {args(257, 8, 1, 1), args(64, 33, 1, 1), args(8, 9, 1, 1), args(64, 0, 1, 1),
        args(96, 8, 7, 2), args(64, 8, 8, 9), args(64, 8, 64, 1), args(64, 8, 8, 0)})
    EXPECT_FALSE(cuda::route_args_ok(bad))
        << "E=" << bad.E << " K=" << bad.K << " groups=" << bad.n_group << "/" << bad.topk_group;
}

TEST_F(CudaOps, MoeStreamedEqualsWarpGemvs) {
  // Tiny, odd widths (H, I not multiples of 256: lanes past the row's end), and
  // the bench-r1-9b widths (8 of its 64 experts, all of them chosen).
  for (const MoeCase c :
       {MoeCase{16, 128, 64, 4}, MoeCase{8, 136, 72, 3}, MoeCase{8, 2048, 1408, 8}}) {
    const auto [E, H, I, K] = c;
    const auto [cw, gw] = random_experts(E, H, I, 0.05f);
    const RouterParams p = topk_normalized(K);
    for (int64_t T : {1, 2, 3, 8}) {
      const std::string what = " E=" + std::to_string(E) + " H=" + std::to_string(H) +
                               " I=" + std::to_string(I) + " T=" + std::to_string(T);
      Tensor x = random_bf16({T, H}, rng_), logits = random_bf16({T, E}, rng_),
             sh = random_bf16({T, H}, rng_);
      Tensor ids = galloc({T, K}, DType::kI32), wts = galloc({T, K}, DType::kF32);
      gpu().moe_route(dev_f32(logits), Tensor(), p, ids, wts);
      Tensor cids = calloc({T, K}, DType::kI32), cwts = calloc({T, K});
      gpu().to_host(ids, cids.raw());
      gpu().to_host(wts, cwts.raw());
      Tensor gx = dev(x), gsh = dev(sh);
      for (bool plus : {false, true}) {
        const std::string wp = what + (plus ? " plus shared" : "");
        std::vector<float> got[3];
        // 2: streamed, the down kernel reading act from global memory per item.
        for (int streamed = 0; streamed < 3; ++streamed) {
          cuda_set_moe_stream(gpu(), streamed >= 1);
          cuda::set_moe_down_act_smem(streamed != 2);
          Tensor o = galloc({T, H});
          // With the shared experts' output the routing is re-run and a kernel
          // launched in between (as the model does), so the streamed gate/up
          // kernel reads the routing before pdl_wait.
          if (plus) {
            gpu().moe_route(dev_f32(logits), Tensor(), p, ids, wts);
            Tensor tmp = galloc({T, H});
            gpu().add(gsh, gsh, tmp);
          }
          if (plus)
            gpu().moe_experts_plus(gx, gw, ids, wts, gsh, o);
          else
            gpu().moe_experts(gx, gw, ids, wts, o);
          got[streamed] = fetch(gpu(), o);
        }
        cuda::set_moe_down_act_smem(true);
        expect_same(got[1], got[0], "streamed vs warp GEMVs" + wp);
        expect_same(got[2], got[0], "streamed (act from global memory) vs warp GEMVs" + wp);
        Tensor co = calloc({T, H});
        if (plus)
          cpu().moe_experts_plus(x, cw, cids, cwts, sh, co);
        else
          cpu().moe_experts(x, cw, cids, cwts, co);
        expect_close(got[1], host_values(co), 1.5e-2, "streamed vs CPU" + wp);
      }
    }
  }
  cuda_set_moe_stream(gpu(), true);
}

// A one-token step's routing done by the streamed kernels themselves (the
// route op held back until they run) against the route kernel: the experts'
// sum bit for bit, and the route op's outputs (written by the gate/up kernel)
// equal; DeepSeek's grouped, biased routing over 64 experts (two a lane) and
// 256 (eight a lane); logits uploaded (routed after pdl_wait) or made by a
// product two launches back (routed before it); the down kernel reading the
// gate/up kernel's routing (its ready word) or routing again; two tokens'
// layers back to back (the second's down kernel must not take the first's
// routing); and the route op read on its own (to_host launches the held-back
// route kernel).
TEST_F(CudaOps, MoeInlineRouteEqualsRouteKernel) {
  for (const int64_t E : {64, 256}) {
    const int64_t H = 256, I = 128, K = 8;
    const auto [cw, gw] = random_experts(E, H, I, 0.05f);
    RouterParams p = topk_normalized(K);
    p.n_group = 8;
    p.topk_group = 4;
    const Tensor bias = gpu().upload(random_bf16({E}, rng_, 0.1f), DType::kF32);
    Linear router;
    router.weight = dev(random_bf16({E, H}, rng_, 0.2f));
    for (bool made : {false, true}) {
      const std::string what = " E=" + std::to_string(E) + (made ? " logits made two back" : "");
      Tensor x = random_bf16({1, H}, rng_), sh = random_bf16({1, H}, rng_);
      Tensor x2 = random_bf16({1, H}, rng_);
      Tensor gx = dev(x), gsh = dev(sh), gx2 = dev(x2);
      Tensor uploaded = dev_f32(random_bf16({1, E}, rng_, 2.0f));
      Tensor uploaded2 = dev_f32(random_bf16({1, E}, rng_, 2.0f));
      // 0: the route kernel; 1: inline, the down kernel reading the gate/up
      // kernel's routing; 2: inline, the down kernel routing again.
      std::vector<float> got[3], got2[3], wts_got[3];
      std::vector<int32_t> ids_got[3];
      for (int inl = 0; inl < 3; ++inl) {
        cuda_set_moe_inline_route(gpu(), inl > 0);
        cuda::set_moe_route_ready(inl == 1);
        Tensor ids = galloc({1, K}, DType::kI32), wts = galloc({1, K}, DType::kF32);
        Tensor o = galloc({1, H}), o2 = galloc({1, H});
        for (int tok = 0; tok < 2; ++tok) {  // the same ids and wts buffers, as in a model
          const Tensor& xin = tok == 0 ? gx : gx2;
          Tensor logits = tok == 0 ? uploaded : uploaded2;
          if (made) {  // the model's order: router product, a kernel, then the experts
            logits = galloc({1, E}, DType::kF32);
            gpu().linear(xin, router, logits);
          }
          gpu().moe_route(logits, bias, p, ids, wts);
          Tensor tmp = galloc({1, H});
          gpu().add(gsh, gsh, tmp);
          gpu().moe_experts_plus(xin, gw, ids, wts, gsh, tok == 0 ? o : o2);
          if (tok == 0) {
            got[inl] = fetch(gpu(), o);
            ids_got[inl].resize(static_cast<size_t>(K));
            gpu().to_host(ids, ids_got[inl].data());
            wts_got[inl] = fetch(gpu(), wts);
          }
        }
        got2[inl] = fetch(gpu(), o2);
      }
      cuda::set_moe_route_ready(true);
      for (int inl = 1; inl < 3; ++inl) {
        const std::string mode =
            inl == 1 ? " (routing read by the down kernel)" : " (routed twice)";
        expect_same(got[inl], got[0], "inline route vs route kernel" + what + mode);
        expect_same(got2[inl], got2[0], "second token: inline route vs route kernel" + what + mode);
        EXPECT_EQ(ids_got[inl], ids_got[0]) << what << mode;
        expect_same(wts_got[inl], wts_got[0], "route weights" + what + mode);
      }
      // The route op alone: held back, then launched by to_host.
      Tensor ids = galloc({1, K}, DType::kI32), wts = galloc({1, K}, DType::kF32);
      gpu().moe_route(uploaded, bias, p, ids, wts);
      std::vector<int32_t> alone(static_cast<size_t>(K));
      gpu().to_host(ids, alone.data());
      if (!made) {
        EXPECT_EQ(alone, ids_got[0]) << "route op read on its own" << what;
      }
    }
  }
  cuda_set_moe_inline_route(gpu(), true);  // the default
}

// route.cuh's E == 64 shuffle form against its general form, bit for bit, on
// logits and biases with many ties (a few distinct values), so that the
// tie-breaks (groups and experts to the lower index) are exercised, and on
// plain random logits.
TEST_F(CudaOps, MoeRouteFastFormEqualsGeneral) {
  std::uniform_int_distribution<int> level(-2, 2);
  for (const RouteCase& rc :
       std::vector<RouteCase>{{1, 64, 8, 8, 4, Scoring::kSigmoid, true, true},
                              {6, 64, 8, 8, 4, Scoring::kSigmoid, true, true},
                              {5, 64, 6, 8, 3, Scoring::kSoftmax, false, true},
                              {4, 64, 6, 1, 1, Scoring::kSoftmax, false, false},
                              {3, 64, 7, 8, 2, Scoring::kSigmoid, false, true}}) {
    const RouterParams p = rc.params();
    for (const bool ties : {true, false}) {
      Tensor logits = random_bf16({rc.T, rc.E}, rng_, 2.0f), bias = random_bf16({rc.E}, rng_, 0.1f);
      if (ties) {
        for (int64_t i = 0; i < logits.numel(); ++i)
          logits.data<float>()[i] = 0.5f * static_cast<float>(level(rng_));
        for (int64_t i = 0; i < bias.numel(); ++i)
          bias.data<float>()[i] = 0.25f * static_cast<float>(level(rng_) % 2);
      }
      const Tensor gl = dev_f32(logits), gb = gpu().upload(bias, DType::kF32);
      std::vector<int32_t> ids[2];
      std::vector<float> wts[2];
      for (int fast = 0; fast < 2; ++fast) {
        cuda::set_route_fast(fast == 1);
        Tensor gi = galloc({rc.T, rc.K}, DType::kI32), gw = galloc({rc.T, rc.K}, DType::kF32);
        gpu().moe_route(gl, rc.bias ? gb : Tensor(), p, gi, gw);
        ids[fast].resize(static_cast<size_t>(rc.T * rc.K));
        gpu().to_host(gi, ids[fast].data());
        wts[fast] = fetch(gpu(), gw);
      }
      cuda::set_route_fast(true);
      const std::string what = "T=" + std::to_string(rc.T) + " K=" + std::to_string(rc.K) +
                               " groups " + std::to_string(rc.n_group) + (ties ? " (ties)" : "");
      EXPECT_EQ(ids[1], ids[0]) << what;
      expect_same(wts[1], wts[0], "route weights, fast vs general, " + what);
      // The ids of each token are distinct experts.
      for (int64_t t = 0; t < rc.T; ++t) {
        std::vector<int32_t> row(ids[1].begin() + t * rc.K, ids[1].begin() + (t + 1) * rc.K);
        std::sort(row.begin(), row.end());
        EXPECT_TRUE(std::adjacent_find(row.begin(), row.end()) == row.end()) << what;
      }
    }
  }
}

// moe_experts_add (the residual add in the streamed down kernel's epilogue at
// one token; the two ops otherwise, through the expert GEMVs at 3 tokens, the
// tensor-core kernels at 40 and the grouped cuBLAS GEMMs at 300) against
// moe_experts(_plus) followed by add, bit for bit, with and without the shared
// experts' output, streamed and not.
TEST_F(CudaOps, MoeExpertsAddEqualsPlainOps) {
  const int64_t E = 16, H = 256, I = 128, K = 4;
  const auto [cw, gw] = random_experts(E, H, I, 0.05f);
  const RouterParams p = topk_normalized(K);
  for (int64_t T : {1, 3, 40, 300})
    for (bool plus : {false, true})
      for (bool streamed : {true, false}) {
        const std::string what = " T=" + std::to_string(T) + (plus ? " plus shared" : "") +
                                 (streamed ? " streamed" : " warp GEMVs");
        cuda_set_moe_stream(gpu(), streamed);
        Tensor x = random_bf16({T, H}, rng_), logits = random_bf16({T, E}, rng_),
               sh = random_bf16({T, H}, rng_), r = random_bf16({T, H}, rng_, 0.5f);
        Tensor ids = galloc({T, K}, DType::kI32), wts = galloc({T, K}, DType::kF32);
        gpu().moe_route(dev_f32(logits), Tensor(), p, ids, wts);
        Tensor gx = dev(x), gsh = plus ? dev(sh) : Tensor();
        Tensor o = galloc({T, H}), pr = dev(r);
        if (plus)
          gpu().moe_experts_plus(gx, gw, ids, wts, gsh, o);
        else
          gpu().moe_experts(gx, gw, ids, wts, o);
        gpu().add(pr, o, pr);
        Tensor fr = dev(r), tmp = galloc({T, H});
        gpu().moe_experts_add(gx, gw, ids, wts, gsh, fr, tmp);
        const std::vector<float> got = fetch(gpu(), fr);
        expect_same(got, fetch(gpu(), pr), "moe_experts_add vs plain ops" + what);
        Tensor cids = calloc({T, K}, DType::kI32), cwts = calloc({T, K});
        gpu().to_host(ids, cids.raw());
        gpu().to_host(wts, cwts.raw());
        Tensor cr = Tensor::empty({T, H}, DType::kF32), ct = calloc({T, H});
        const std::vector<float> rv = host_values(r);
        std::copy(rv.begin(), rv.end(), cr.data<float>());
        cpu().moe_experts_add(x, cw, cids, cwts, plus ? sh : Tensor(), cr, ct);
        expect_close(got, host_values(cr), 3e-2, "moe_experts_add vs CPU" + what);
      }
  cuda_set_moe_stream(gpu(), true);
}

// rms_norm_moe_experts_add onto its own input (the model's x += experts(norm(x))
// + shared): at one token, streamed, the norm folded into the gate/up kernel,
// against rms_norm + moe_experts_add within the rounding of the normed row the
// fold skips; otherwise (several tokens, or the warp GEMVs) those two ops bit
// for bit; and the CPU's defaults within BF16 rounding.
TEST_F(CudaOps, MoeFoldedNormEqualsPlainOps) {
  for (const MoeCase c : {MoeCase{16, 256, 128, 4}, MoeCase{8, 2048, 1408, 8}}) {
    const auto [E, H, I, K] = c;
    const auto [cw, gw] = random_experts(E, H, I, 0.05f);
    const RouterParams p = topk_normalized(K);
    for (int64_t T : {1, 3})
      for (bool streamed : {true, false}) {
        const std::string what = " H=" + std::to_string(H) + " T=" + std::to_string(T) +
                                 (streamed ? " streamed" : " warp GEMVs");
        cuda_set_moe_stream(gpu(), streamed);
        Tensor x = random_bf16({T, H}, rng_, 3.0f), nw = random_bf16({H}, rng_, 2.0f),
               logits = random_bf16({T, E}, rng_), sh = random_bf16({T, H}, rng_);
        const Tensor gnw = gpu().upload(nw, DType::kF32);
        Tensor ids = galloc({T, K}, DType::kI32), wts = galloc({T, K}, DType::kF32);
        gpu().moe_route(dev_f32(logits), Tensor(), p, ids, wts);
        Tensor gsh = dev(sh), pr = dev(x), pn = galloc({T, H}), pt = galloc({T, H});
        gpu().rms_norm(pr, gnw, 1e-6f, pn);
        gpu().moe_experts_add(pn, gw, ids, wts, gsh, pr, pt);
        Tensor fr = dev(x), fn = galloc({T, H}), ft = galloc({T, H});
        gpu().rms_norm_moe_experts_add(fr, gnw, 1e-6f, fn, gw, ids, wts, gsh, fr, ft);
        const std::vector<float> got = fetch(gpu(), fr), plain = fetch(gpu(), pr);
        if (T == 1 && streamed)
          expect_close(got, plain, 1e-2, "folded norm vs rms_norm + moe_experts_add" + what);
        else
          expect_same(got, plain, "rms_norm_moe_experts_add vs plain ops" + what);
        Tensor cids = calloc({T, K}, DType::kI32), cwts = calloc({T, K});
        gpu().to_host(ids, cids.raw());
        gpu().to_host(wts, cwts.raw());
        Tensor cr = Tensor::empty({T, H}, DType::kF32), cn = calloc({T, H}), ct = calloc({T, H});
        const std::vector<float> xv = host_values(x);
        std::copy(xv.begin(), xv.end(), cr.data<float>());
        cpu().rms_norm_moe_experts_add(cr, nw, 1e-6f, cn, cw, cids, cwts, sh, cr, ct);
        expect_close(got, host_values(cr), 3e-2, "rms_norm_moe_experts_add vs CPU" + what);
      }
  }
  cuda_set_moe_stream(gpu(), true);
}

// The MoE layer's op with the shared experts' MLP (rms_norm_moe_shared_experts_add):
// at one token the GPU runs that MLP inside the streamed expert kernels (its
// rows first, before the routing). Against the same op with the MLP in its own
// GEMVs (R1SERVE_CUDA_MOE_SHARED_STREAM=0: what the default composes; the two
// differ in the shared products' summation order only) and the CPU; the
// routing held back for the kernels (the model's order: router, then the op)
// or read from the route kernel; 3 tokens (the composed ops on both); the
// residual being x itself, as in the model; and the gate/up kernel's balanced
// units against its shared and routed units split apart, bit for bit.
TEST_F(CudaOps, MoeSharedExpertsInStreamedKernels) {
  for (const MoeCase c : {MoeCase{64, 256, 128, 8}, MoeCase{16, 2048, 1408, 8}}) {
    const auto [E, H, I, K] = c;
    const auto [cw, gw] = random_experts(E, H, I, 0.05f);
    RouterParams p = topk_normalized(K);
    Linear csg, csd, gsg, gsd;
    csg.weight = random_bf16({2 * I, H}, rng_, 0.05f);
    csd.weight = random_bf16({H, I}, rng_, 0.05f);
    gsg.weight = dev(csg.weight);
    gsd.weight = dev(csd.weight);
    for (int64_t T : {1, 3})
      for (int mode = 0; mode < 2; ++mode) {  // 0: inline routing, 1: the route kernel
        const std::string what = " H=" + std::to_string(H) + " T=" + std::to_string(T) +
                                 (mode == 0 ? " inline routing" : " route kernel");
        cuda_set_moe_inline_route(gpu(), mode == 0);
        Tensor x = random_bf16({T, H}, rng_, 3.0f), nw = random_bf16({H}, rng_, 2.0f);
        Tensor logits = dev_f32(random_bf16({T, E}, rng_, 2.0f));
        const Tensor gnw = gpu().upload(nw, DType::kF32);
        std::vector<float> got[3];
        std::vector<int32_t> ids_host[3];
        std::vector<float> wts_host[3];
        // 2: fused, the gate/up kernel's shared and routed units split apart
        // instead of balanced (at the 9B's widths; the small ones always split).
        for (int fused = 2; fused >= 0; --fused) {
          cuda::set_moe_shared_stream(fused >= 1);
          cuda::set_moe_gu_balance(fused != 2);
          Tensor ids = galloc({T, K}, DType::kI32), wts = galloc({T, K}, DType::kF32);
          gpu().moe_route(logits, Tensor(), p, ids, wts);
          Tensor r = dev(x), n = galloc({T, H}), gu = galloc({T, 2 * I}), act = galloc({T, I}),
                 sh = galloc({T, H}), tmp = galloc({T, H});
          gpu().rms_norm_moe_shared_experts_add(r, gnw, 1e-6f, n, gw, ids, wts, gsg, gsd, gu, act,
                                                sh, r, tmp);
          got[fused] = fetch(gpu(), r);
          ids_host[fused].resize(static_cast<size_t>(T * K));
          gpu().to_host(ids, ids_host[fused].data());
          wts_host[fused] = fetch(gpu(), wts);
        }
        cuda::set_moe_shared_stream(true);
        cuda::set_moe_gu_balance(true);
        expect_same(got[2], got[1], "balanced units vs split apart" + what);
        EXPECT_EQ(ids_host[1], ids_host[0]) << what;
        expect_same(wts_host[1], wts_host[0], "route weights" + what);
        if (T == 1)
          expect_close(got[1], got[0], 1e-2,
                       "shared MLP in the streamed kernels vs its GEMVs" + what);
        else
          expect_same(got[1], got[0], "composed ops either way" + what);
        Tensor cids = calloc({T, K}, DType::kI32), cwts = calloc({T, K});
        std::copy(ids_host[1].begin(), ids_host[1].end(), cids.data<int32_t>());
        std::copy(wts_host[1].begin(), wts_host[1].end(), cwts.data<float>());
        Tensor cr = Tensor::empty({T, H}, DType::kF32), cn = calloc({T, H}),
               cgu = calloc({T, 2 * I}), cact = calloc({T, I}), csh = calloc({T, H}),
               ct = calloc({T, H});
        const std::vector<float> xv = host_values(x);
        std::copy(xv.begin(), xv.end(), cr.data<float>());
        cpu().rms_norm_moe_shared_experts_add(cr, nw, 1e-6f, cn, cw, cids, cwts, csg, csd, cgu,
                                              cact, csh, cr, ct);
        expect_close(got[1], host_values(cr), 3e-2,
                     "rms_norm_moe_shared_experts_add vs CPU" + what);
      }
  }
  cuda_set_moe_inline_route(gpu(), true);  // the default
}

// Batches past the expert GEMVs: the tensor-core kernels (moe_mma.cu, driven by
// the sort's slot_info on the device) against the grouped cuBLAS GEMMs and the
// CPU. Odd widths (partial 64-column stages, partial 64-row tiles), the
// bench-r1-9b widths, both token widths of a pass (32 and 64), an expert that
// every token picks (several passes over its weights, at either width), and F32
// inputs (gathered to BF16 first).
TEST_F(CudaOps, MoeMmaEqualsGroupedGemmAndCpu) {
  struct MmaCase {
    int64_t E, H, I, K, T;
    bool skew, f32_in;
  };
  std::map<std::array<int64_t, 3>, std::pair<ExpertWeights, ExpertWeights>> experts;
  for (const MmaCase c :
       {MmaCase{16, 136, 72, 4, 17, false, false}, MmaCase{16, 136, 72, 4, 200, false, false},
        MmaCase{16, 256, 128, 4, 100, true, false}, MmaCase{16, 256, 128, 4, 60, true, false},
        MmaCase{16, 256, 128, 4, 40, false, true}, MmaCase{16, 2048, 1408, 8, 9, false, false},
        MmaCase{16, 2048, 1408, 8, 60, false, false},
        MmaCase{16, 2048, 1408, 8, 120, true, false}}) {
    const std::string what = " E=" + std::to_string(c.E) + " H=" + std::to_string(c.H) +
                             " I=" + std::to_string(c.I) + " T=" + std::to_string(c.T) +
                             (c.skew ? " skewed" : "") + (c.f32_in ? " f32 x" : "");
    // Each width's experts made once (the bench-r1-9b widths with 16 of its 64 experts:
    // random weights for all 64 take most of a minute on the host).
    const std::array<int64_t, 3> key{c.E, c.H, c.I};
    if (experts.count(key) == 0) experts.emplace(key, random_experts(c.E, c.H, c.I, 0.05f));
    const auto& [cw, gw] = experts.at(key);
    Tensor x = random_bf16({c.T, c.H}, rng_);
    Tensor cids = calloc({c.T, c.K}, DType::kI32), cwts = calloc({c.T, c.K});
    std::uniform_real_distribution<float> wd(0.1f, 1.0f);
    for (int64_t t = 0; t < c.T; ++t) {
      // Distinct experts a token; skewed: expert 3 in every token.
      const int64_t first = c.skew ? 3 : (t * 7) % c.E, stride = 1 + t % 3;
      for (int64_t j = 0; j < c.K; ++j) {
        cids.data<int32_t>()[t * c.K + j] = static_cast<int32_t>((first + j * stride) % c.E);
        cwts.data<float>()[t * c.K + j] = wd(rng_);
      }
    }
    Tensor ids = dev_i32(cids), wts = dev_f32(cwts);
    Tensor gx = c.f32_in ? dev_f32(x) : dev(x);
    std::vector<float> got[2];
    for (int mma = 0; mma < 2; ++mma) {
      cuda_set_moe_mma(gpu(), mma == 1);
      Tensor o = galloc({c.T, c.H});
      gpu().moe_experts(gx, gw, ids, wts, o);
      got[mma] = fetch(gpu(), o);
    }
    cuda_set_moe_mma(gpu(), true);
    // cuBLAS rounds gate/up and y to BF16 where the kernels keep F32: BF16 rounding apart.
    expect_close(got[1], got[0], 1e-2, "moe mma vs grouped cuBLAS" + what);
    Tensor co = calloc({c.T, c.H});
    cpu().moe_experts(x, cw, cids, cwts, co);
    expect_close(got[1], host_values(co), 1.5e-2, "moe mma vs CPU" + what);
  }
}

}  // namespace
}  // namespace r1::backend::testing
