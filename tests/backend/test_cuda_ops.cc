// Every CUDA op against the CPU backend on random inputs of several shapes.
// Inputs are BF16-representable so both backends see the same values; the
// GPU keeps activations in BF16, so results agree to BF16 rounding (relative
// L2 error <= 1e-2), integer outputs exactly. Skips without a GPU. The fused
// GEMV forms are in test_cuda_fused.cc.
#include <algorithm>
#include <numeric>
#include <tuple>

#include "backend/cuda_ops_fixture.h"
#include "core/status.h"

namespace r1::backend::testing {
namespace {

TEST_F(CudaOps, Embedding) {
  for (int64_t H : {64, 2048}) {
    Tensor table = random_bf16({300, H}, rng_);
    std::vector<int32_t> ids = {5, 0, 299, 17, 17, 123};
    Tensor g = galloc({6, H}), c = calloc({6, H});
    gpu().embedding(gpu().upload(table, DType::kBF16), ids, g);
    cpu().embedding(table, ids, c);
    expect_close(fetch(gpu(), g), host_values(c), 0.0, "embedding");
  }
}

TEST_F(CudaOps, RmsNormAndResidual) {
  for (auto [T, H, n] :
       std::vector<std::array<int64_t, 3>>{{3, 64, 64}, {17, 2048, 2048}, {5, 96, 64}}) {
    Tensor x = random_bf16({T, H}, rng_, 3.0f), w = random_bf16({n}, rng_),
           r = random_bf16({T, H}, rng_);
    Tensor gx = dev(x), gw = gpu().upload(w, DType::kF32);
    Tensor go = galloc({T, H}), co = calloc({T, H});
    gpu().rms_norm(gx, gw, 1e-6f, go);
    cpu().rms_norm(x, w, 1e-6f, co);
    auto got = fetch(gpu(), go);
    std::vector<float> g2, c2;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < n; ++i) {
        g2.push_back(got[t * H + i]);
        c2.push_back(co.data<float>()[t * H + i]);
      }
    expect_close(g2, c2, 1e-2, "rms_norm");
    if (n == H) {
      Tensor gr = dev(r), cr = r;
      cr = Tensor::empty({T, H}, DType::kF32);
      std::memcpy(cr.raw(), r.raw(), r.nbytes());
      gpu().add_rms_norm(gr, gx, gw, 1e-6f, go);
      cpu().add_rms_norm(cr, x, w, 1e-6f, co);
      expect_close(fetch(gpu(), gr), host_values(cr), 1e-2, "add_rms_norm residual");
      expect_close(fetch(gpu(), go), host_values(co), 1e-2, "add_rms_norm out");
    }
  }
}

TEST_F(CudaOps, AddSiluGatherCopyHeads) {
  Tensor a = random_bf16({7, 96}, rng_), b = random_bf16({7, 96}, rng_);
  Tensor go = galloc({7, 96}), co = calloc({7, 96});
  gpu().add(dev(a), dev(b), go);
  cpu().add(a, b, co);
  expect_close(fetch(gpu(), go), host_values(co), 1e-2, "add");

  Tensor gu = random_bf16({9, 2 * 80}, rng_, 2.0f);
  Tensor gs = galloc({9, 80}), cs = calloc({9, 80});
  gpu().silu_mul(dev(gu), gs);
  cpu().silu_mul(gu, cs);
  expect_close(fetch(gpu(), gs), host_values(cs), 1e-2, "silu_mul");

  std::vector<int32_t> rows = {6, 0, 3};
  Tensor gg = galloc({3, 96}), cg = calloc({3, 96});
  gpu().gather_rows(dev(a), rows, gg);
  cpu().gather_rows(a, rows, cg);
  expect_close(fetch(gpu(), gg), host_values(cg), 0.0, "gather_rows");

  // copy_heads: the rope part of 4 heads of width 48 into heads of width 40 at offset 8.
  Tensor src = random_bf16({5, 4 * 48}, rng_), dst = random_bf16({5, 4 * 40}, rng_);
  Tensor gd = dev(dst), cd = Tensor::empty({5, 160}, DType::kF32);
  std::memcpy(cd.raw(), dst.raw(), dst.nbytes());
  gpu().copy_heads(dev(src), 48, 16, gd, 40, 8, 32, 4);
  cpu().copy_heads(src, 48, 16, cd, 40, 8, 32, 4);
  expect_close(fetch(gpu(), gd), host_values(cd), 0.0, "copy_heads");
}

TEST_F(CudaOps, LinearBf16AndF32Outputs) {
  for (auto [T, K, N] : std::vector<std::array<int64_t, 3>>{{1, 64, 48},
                                                            {33, 256, 130},
                                                            {4, 2048, 1000},
                                                            {1, 1416, 4500},
                                                            {2, 2048, 4224},
                                                            {3, 520, 9000},
                                                            {2, 256, 17000},
                                                            {6, 264, 70}}) {
    for (bool bias : {false, true}) {
      for (DType od : {DType::kBF16, DType::kF32}) {
        Tensor x = random_bf16({T, K}, rng_), w = random_bf16({N, K}, rng_, 0.05f),
               bv = random_bf16({N}, rng_);
        Linear gl, cl;
        gl.weight = gpu().upload(w, DType::kBF16);
        if (bias) gl.bias = gpu().upload(bv, DType::kF32);
        cl.weight = w;
        if (bias) cl.bias = bv;
        Tensor go = galloc({T, N}, od), co = calloc({T, N});
        gpu().linear(dev(x), gl, go);
        cpu().linear(x, cl, co);
        expect_close(fetch(gpu(), go), host_values(co), od == DType::kF32 ? 1e-4 : 1e-2, "linear");
      }
    }
  }
}

// Every launch plan of the dense GEMV (split warps per row, rows per warp,
// unroll) gives the CPU's products, plain with a bias and SwiGLU, with partial
// last blocks (N not a multiple of the outputs per block).
TEST_F(CudaOps, LinearEveryGemvPlan) {
  for (auto [T, K, N] :
       std::vector<std::array<int64_t, 3>>{{1, 2048, 77}, {3, 1024, 130}, {4, 4096, 9}}) {
    Tensor x = random_bf16({T, K}, rng_), w = random_bf16({2 * N, K}, rng_, 0.05f),
           bv = random_bf16({2 * N}, rng_);
    Linear gl, cl;
    gl.weight = gpu().upload(w, DType::kBF16);
    gl.bias = gpu().upload(bv, DType::kF32);
    cl.weight = w;
    cl.bias = bv;
    Linear gsw, csw;
    gsw.weight = gl.weight;
    csw.weight = w;
    Tensor co = calloc({T, 2 * N}), cgu = calloc({T, 2 * N}), cact = calloc({T, N});
    cpu().linear(x, cl, co);
    cpu().linear_swiglu(x, csw, cgu, cact);
    for (int split : {1, 2, 4, 8})
      for (int rows : {1, 2})
        for (int unroll : {4, 8}) {
          cuda_set_gemv_plan(split, rows, unroll);
          const std::string plan = " split " + std::to_string(split) + " rows " +
                                   std::to_string(rows) + " unroll " + std::to_string(unroll) +
                                   " T " + std::to_string(T);
          Tensor go = galloc({T, 2 * N});
          gpu().linear(dev(x), gl, go);
          expect_close(fetch(gpu(), go), host_values(co), 1e-2, "linear" + plan);
          if (rows == 2) {
            Tensor ggu = galloc({T, 2 * N}), gact = galloc({T, N});
            gpu().linear_swiglu(dev(x), gsw, ggu, gact);
            expect_close(fetch(gpu(), gact), host_values(cact), 1e-2, "linear_swiglu" + plan);
          }
        }
    cuda_set_gemv_plan(0, 1, 4);
  }
}

// Rows of up to 4095 values take one block; longer ones are split into chunks
// (float4 loads when V % 4 == 0, scalar otherwise) merged by the last block of
// the row: the ties below straddle chunk boundaries, the second call checks the
// counters were reset, and 300 rows grow the partials' buffer.
TEST_F(CudaOps, ArgmaxRowsTakesTheFirstMaximum) {
  for (int64_t V : {int64_t{7}, int64_t{1000}, int64_t{129280}, int64_t{152064}, int64_t{152067}}) {
    const int64_t n = V == 152067 ? 300 : 6;
    Tensor x = random_bf16({n, V}, rng_);
    float* p = x.data<float>();
    // Row 1: a tie of the maximum, the later one must lose; row 2: all equal; row 3: -inf mostly.
    p[1 * V + V / 3] = 50.0f;
    p[1 * V + V - 1] = 50.0f;
    for (int64_t v = 0; v < V; ++v) p[2 * V + v] = 0.25f;
    for (int64_t v = 0; v < V; ++v) p[3 * V + v] = -INFINITY;
    p[3 * V + V / 2] = -1.0f;
    // Row 4: the maximum at both ends of the row and in the middle (chunk boundaries).
    p[4 * V + V - 1] = 60.0f;
    p[4 * V + V / 2] = 60.0f;
    p[4 * V + V / 2 + 1] = 60.0f;
    Tensor gi = galloc({n}, DType::kI32), ci = calloc({n}, DType::kI32);
    Tensor xd = dev_f32(x);
    cpu().argmax_rows(x, ci);
    for (int call = 0; call < 2; ++call) {
      gpu().argmax_rows(xd, gi);
      std::vector<int32_t> got(static_cast<size_t>(n));
      gpu().to_host(gi, got.data());
      for (int64_t i = 0; i < n; ++i)
        EXPECT_EQ(got[static_cast<size_t>(i)], ci.data<int32_t>()[i])
            << "V=" << V << " row " << i << " call " << call;
      EXPECT_EQ(got[1], V / 3);
      EXPECT_EQ(got[2], 0);
      EXPECT_EQ(got[3], V / 2);
      EXPECT_EQ(got[4], V / 2);
    }
  }
}

// The fused rope_copy against the CPU's copy_heads + rope (its default).
TEST_F(CudaOps, RopeCopyEqualsCopyThenRope) {
  for (bool interleaved : {true, false}) {
    RopeParams p;
    p.interleaved = interleaved;
    p.attention_factor = interleaved ? 1.3f : 1.0f;
    for (int i = 0; i < 32; ++i) p.inv_freq.push_back(std::pow(10000.0f, -2.0f * i / 64.0f));
    // q [T, heads * 192] (nope 128 | pe 64) -> dst [T, heads * 576] at offset 512, as MLA's
    // absorbed query.
    const int64_t T = 7, heads = 5, src_stride = 192, src_off = 128, dst_stride = 576,
                  dst_off = 512;
    Tensor q = random_bf16({T, heads * src_stride}, rng_);
    std::vector<int32_t> pos(T);
    for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(t * 911 % 7000);
    Tensor g = galloc({T, heads * dst_stride}), c = calloc({T, heads * dst_stride});
    gpu().rope_copy(dev(q), src_stride, src_off, g, dst_stride, dst_off, heads, pos, p);
    cpu().rope_copy(q, src_stride, src_off, c, dst_stride, dst_off, heads, pos, p);
    // Compare only the windows written.
    std::vector<float> got = fetch(gpu(), g), want = host_values(c), gw, cw;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < 64; ++i) {
          const size_t k =
              static_cast<size_t>(t * heads * dst_stride + h * dst_stride + dst_off + i);
          gw.push_back(got[k]);
          cw.push_back(want[k]);
        }
    expect_close(gw, cw, 1e-2, interleaved ? "rope_copy interleaved" : "rope_copy neox");
  }
}

// Interleaved rotary parameters of MLA's `rope` rotated columns (theta 10000,
// attention factor 1.1).
RopeParams mla_rope(int64_t rope) {
  RopeParams p;
  p.interleaved = true;
  p.attention_factor = 1.1f;
  for (int64_t i = 0; i < rope / 2; ++i)
    p.inv_freq.push_back(
        std::pow(10000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(rope)));
  return p;
}

// The fused MLA latent write (norm + rope + cache write in one kernel) against the
// CPU's four plain ops, on a shuffled block table.
TEST_F(CudaOps, MlaLatentWriteEqualsPlainOps) {
  for (const auto& [r, rope_dim] : std::vector<std::pair<int64_t, int64_t>>{{512, 64}, {128, 32}}) {
    const RopeParams p = mla_rope(rope_dim);
    const int64_t W = r + rope_dim, T = 11, bs = 4, blocks = 8;
    const BatchInfo b = one_sequence(T, bs, {5, 2, 7, 0}, 1, 0);
    KvCacheSpec spec;
    spec.mla = true;
    spec.num_layers = 1;
    spec.kv_lora_rank = r;
    spec.rope_dim = rope_dim;
    KvCache gc = gpu().alloc_kv_cache(spec, blocks, bs),
            cc = cpu().alloc_kv_cache(spec, blocks, bs);
    Tensor kv = random_bf16({T, W}, rng_, 2.0f), w = random_bf16({r}, rng_);
    Tensor gl = galloc({T, W}), cl = calloc({T, W});
    gpu().mla_latent_write(dev(kv), gpu().upload(w, DType::kF32), 1e-6f, p, b, gl, gc.latent[0]);
    cpu().mla_latent_write(kv, w, 1e-6f, p, b, cl, cc.latent[0]);
    std::vector<float> got = fetch(gpu(), gc.latent[0]), want = host_values(cc.latent[0]), gw, cw;
    for (int32_t slot : b.slot_mapping)
      for (int64_t i = 0; i < W; ++i) {
        gw.push_back(got[static_cast<size_t>(slot * W + i)]);
        cw.push_back(want[static_cast<size_t>(slot * W + i)]);
      }
    expect_close(gw, cw, 1e-2, "mla_latent_write r=" + std::to_string(r));
  }
}

// The SwiGLU GEMV (gate and up rows of one output in one warp, silu(g) * u in
// its epilogue) against the CPU's product then silu_mul, on the few-token
// steps it serves and on a larger T (the plain ops on the GPU).
TEST_F(CudaOps, LinearSwigluEqualsLinearThenSiluMul) {
  for (auto [T, K, I] : std::vector<std::array<int64_t, 3>>{{1, 64, 40},
                                                            {2, 2048, 1408},
                                                            {4, 520, 3000},
                                                            {3, 3584, 96},
                                                            {1, 256, 9000},
                                                            {9, 256, 72}}) {
    Tensor x = random_bf16({T, K}, rng_), w = random_bf16({2 * I, K}, rng_, 0.08f);
    Linear gl, cl;
    gl.weight = gpu().upload(w, DType::kBF16);
    cl.weight = w;
    Tensor ggu = galloc({T, 2 * I}), go = galloc({T, I}), cgu = calloc({T, 2 * I}),
           co = calloc({T, I});
    gpu().linear_swiglu(dev(x), gl, ggu, go);
    cpu().linear_swiglu(x, cl, cgu, co);
    expect_close(fetch(gpu(), go), host_values(co), 1e-2, "linear_swiglu T=" + std::to_string(T));
  }
}

// One kernel for q rope, k rope + cache write and v cache write from the stacked
// qkv projection, against the CPU's copies, ropes and cache writes.
TEST_F(CudaOps, QkvRopeCacheWriteEqualsPlainOps) {
  for (auto [nh, nkv, d] :
       std::vector<std::array<int64_t, 3>>{{4, 2, 64}, {7, 1, 128}, {28, 4, 128}}) {
    RopeParams p;
    p.interleaved = false;
    p.attention_factor = 1.0f;
    for (int64_t i = 0; i < d / 2; ++i)
      p.inv_freq.push_back(std::pow(1e6f, -2.0f * static_cast<float>(i) / static_cast<float>(d)));
    const int64_t T = 6, bs = 4, blocks = 6, W = (nh + 2 * nkv) * d;
    const BatchInfo b = one_sequence(T, bs, {3, 0}, 37, 5);
    KvCacheSpec spec;
    spec.num_layers = 1;
    spec.num_kv_heads = nkv;
    spec.head_dim = d;
    KvCache gc = gpu().alloc_kv_cache(spec, blocks, bs),
            cc = cpu().alloc_kv_cache(spec, blocks, bs);
    Tensor qkv = random_bf16({T, W}, rng_, 2.0f);
    Tensor gq = galloc({T, nh * d}), gk = galloc({T, nkv * d}), gv = galloc({T, nkv * d});
    Tensor cq = calloc({T, nh * d}), ck = calloc({T, nkv * d}), cv = calloc({T, nkv * d});
    gpu().qkv_rope_cache_write(dev(qkv), nh, nkv, d, p, b, gq, gk, gv, gc.k[0], gc.v[0]);
    cpu().qkv_rope_cache_write(qkv, nh, nkv, d, p, b, cq, ck, cv, cc.k[0], cc.v[0]);
    const std::string shape =
        std::to_string(nh) + "/" + std::to_string(nkv) + "/" + std::to_string(d);
    expect_close(fetch(gpu(), gq), host_values(cq), 1e-2, "qkv q " + shape);
    for (int which = 0; which < 2; ++which) {
      std::vector<float> got = fetch(gpu(), which ? gc.v[0] : gc.k[0]);
      std::vector<float> want = host_values(which ? cc.v[0] : cc.k[0]), gw, cw;
      for (int32_t slot : b.slot_mapping)
        for (int64_t i = 0; i < nkv * d; ++i) {
          gw.push_back(got[static_cast<size_t>(slot * nkv * d + i)]);
          cw.push_back(want[static_cast<size_t>(slot * nkv * d + i)]);
        }
      // v is a plain copy of BF16 values: exact.
      expect_close(gw, cw, which ? 0.0 : 1e-2, (which ? "qkv v cache " : "qkv k cache ") + shape);
    }
  }
}

TEST_F(CudaOps, HeadLinear) {
  // T <= 4: the per-head GEMV (MLA's absorbed shapes at decode; rows of K <= 256
  // by the short-row kernel, 1-4 rows a lane, blocks that cross heads); T = 13: cuBLAS.
  for (auto [T, H, N, K, xs, os] :
       std::vector<std::array<int64_t, 6>>{{1, 4, 32, 32, 64, 48},
                                           {2, 16, 512, 128, 192, 576},
                                           {1, 16, 512, 128, 192, 576},
                                           {4, 16, 512, 128, 192, 576},
                                           {3, 3, 40, 128, 136, 48},
                                           {1, 2, 100, 256, 264, 104},
                                           {2, 5, 24, 8, 16, 24},
                                           {1, 16, 128, 512, 512, 128},
                                           {13, 16, 512, 128, 192, 576}}) {
    Tensor x = random_bf16({T, H * xs}, rng_), w = random_bf16({H, N, K}, rng_, 0.1f);
    // Fill outputs identically so untouched columns compare equal.
    Tensor init = random_bf16({T, H * os}, rng_);
    Tensor co = calloc({T, H * os});
    std::memcpy(co.raw(), init.raw(), init.nbytes());
    cpu().head_linear(x, xs, w, co, os);
    const Tensor gw = gpu().upload(w, DType::kBF16);
    for (bool short_rows : {false, true}) {  // the plain GEMV, then the short-row kernel
      cuda_set_batch1_paths(gpu(), short_rows);
      Tensor go = dev(init);
      gpu().head_linear(dev(x), xs, gw, go, os);
      expect_close(fetch(gpu(), go), host_values(co), 1e-2,
                   "head_linear T=" + std::to_string(T) + " K=" + std::to_string(K) +
                       (short_rows ? " short rows" : ""));
    }
    cuda_set_batch1_paths(gpu(), true);  // the default
  }
}

TEST_F(CudaOps, RopeInterleavedAndNeox) {
  for (bool interleaved : {true, false}) {
    RopeParams p;
    p.interleaved = interleaved;
    p.attention_factor = interleaved ? 1.2f : 1.0f;
    for (int i = 0; i < 32; ++i) p.inv_freq.push_back(std::pow(10000.0f, -2.0f * i / 64.0f));
    const int64_t T = 9, heads = 3, stride = 96, offset = interleaved ? 32 : 0;
    Tensor x = random_bf16({T, heads * stride}, rng_);
    std::vector<int32_t> pos(T);
    for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(t * 577 % 5000);
    Tensor gx = dev(x), cx = Tensor::empty(x.shape(), DType::kF32);
    std::memcpy(cx.raw(), x.raw(), x.nbytes());
    gpu().rope(gx, pos, p, heads, stride, offset);
    cpu().rope(cx, pos, p, heads, stride, offset);
    expect_close(fetch(gpu(), gx), host_values(cx), 1e-2,
                 interleaved ? "rope interleaved" : "rope neox");
  }
}

TEST_F(CudaOps, MoeRouteMatchesCpuExactly) {
  for (const RouteCase& rc :
       std::vector<RouteCase>{{5, 16, 4, 4, 2, Scoring::kSigmoid, true, true},
                              {33, 64, 6, 1, 1, Scoring::kSoftmax, false, false},
                              {9, 64, 6, 8, 3, Scoring::kSoftmax, false, true},
                              {130, 256, 8, 8, 4, Scoring::kSigmoid, true, true},
                              {3, 64, 8, 8, 4, Scoring::kSigmoid, true, true},
                              {4, 96, 6, 8, 2, Scoring::kSigmoid, true, false},
                              // one token: the route op held back, then run by to_host
                              {1, 64, 8, 8, 4, Scoring::kSigmoid, true, true},
                              {1, 256, 8, 8, 4, Scoring::kSigmoid, true, true}}) {
    const RouterParams p = rc.params();
    Tensor logits = random_bf16({rc.T, rc.E}, rng_, 2.0f), bias = random_bf16({rc.E}, rng_, 0.1f);
    Tensor gi = galloc({rc.T, rc.K}, DType::kI32), gw = galloc({rc.T, rc.K}, DType::kF32);
    Tensor ci = calloc({rc.T, rc.K}, DType::kI32), cw = calloc({rc.T, rc.K});
    gpu().moe_route(dev_f32(logits), rc.bias ? gpu().upload(bias, DType::kF32) : Tensor(), p, gi,
                    gw);
    cpu().moe_route(logits, rc.bias ? bias : Tensor(), p, ci, cw);
    std::vector<int32_t> ids(static_cast<size_t>(rc.T * rc.K));
    gpu().to_host(gi, ids.data());
    EXPECT_TRUE(std::equal(ids.begin(), ids.end(), ci.data<int32_t>())) << "E=" << rc.E;
    expect_close(fetch(gpu(), gw), host_values(cw), 1e-5, "route weights");
  }
}

TEST_F(CudaOps, MoeExpertsGemvAndGroupedPaths) {
  const int64_t E = 16, H = 128, I = 64, K = 4;
  const auto [cw, gw] = random_experts(E, H, I, 0.1f);
  RouterParams p;
  p.top_k = K;
  p.n_group = 4;
  p.topk_group = 2;
  p.normalize = true;
  for (int64_t T : {1, 5, 40, 300}) {
    Tensor x = random_bf16({T, H}, rng_), logits = random_bf16({T, E}, rng_);
    Tensor ids = galloc({T, K}, DType::kI32), wts = galloc({T, K}, DType::kF32);
    gpu().moe_route(dev_f32(logits), Tensor(), p, ids, wts);
    Tensor cids = calloc({T, K}, DType::kI32), cwts = calloc({T, K});
    gpu().to_host(ids, cids.raw());
    gpu().to_host(wts, cwts.raw());
    Tensor go = galloc({T, H}), co = calloc({T, H});
    gpu().moe_experts(dev(x), gw, ids, wts, go);
    cpu().moe_experts(x, cw, cids, cwts, co);
    expect_close(fetch(gpu(), go), host_values(co), 1.5e-2, "moe_experts T=" + std::to_string(T));
    // The shared experts' output added in the combine, against the CPU's two plain ops.
    Tensor sh = random_bf16({T, H}, rng_);
    Tensor gp = galloc({T, H}), cp = calloc({T, H});
    gpu().moe_experts_plus(dev(x), gw, ids, wts, dev(sh), gp);
    cpu().moe_experts_plus(x, cw, cids, cwts, sh, cp);
    expect_close(fetch(gpu(), gp), host_values(cp), 1.5e-2,
                 "moe_experts_plus T=" + std::to_string(T));
  }
}

// Random inputs of an absorbed MLA step of T tokens: interleaved rotary
// parameters of `rope` columns, the new tokens' kv rows [T, r + rope], the
// latent norm weights, q [T, heads * qk] and the absorbed query [T, heads * (r + rope)].
std::tuple<RopeParams, Tensor, Tensor, Tensor, Tensor> absorbed_inputs(int64_t T, int64_t heads,
                                                                       int64_t r, int64_t rope,
                                                                       int64_t qk,
                                                                       std::mt19937& rng) {
  RopeParams rp = mla_rope(rope);
  Tensor kv = random_bf16({T, r + rope}, rng, 2.0f), nw = random_bf16({r}, rng);
  Tensor q = random_bf16({T, heads * qk}, rng, 0.5f);
  Tensor qa = random_bf16({T, heads * (r + rope)}, rng, 0.2f);
  return {std::move(rp), std::move(kv), std::move(nw), std::move(q), std::move(qa)};
}

// n decode sequences (one new token each) with contexts first, first + step, ...
std::vector<std::pair<int, int>> decode_seqs(int n, int first, int step) {
  std::vector<std::pair<int, int>> seqs;
  for (int i = 0; i < n; ++i) seqs.emplace_back(first + i * step, 1);
  return seqs;
}

// Decode attention's two merges of split blocks (each block a slice, when the
// grid fits on the GPU at once; or the last block all of them) give the same
// outputs bit for bit; returns them.
template <typename Run>
std::vector<float> both_merges(Backend& gpu, const std::string& what, Run run) {
  std::vector<float> got[2];
  for (int spread = 0; spread < 2; ++spread) {
    cuda_set_attn_spread_merge(gpu, spread == 1);
    got[spread] = run();
  }
  expect_same(got[1], got[0], "spread vs last-block merge " + what);
  return got[1];
}

TEST_F(CudaOps, MlaAttentionPrefillChunkedAndDecode) {
  struct Case {
    int64_t heads, r, rope;
    std::vector<std::pair<int, int>> seqs;  // (cached, new)
  };
  for (const Case& c : std::vector<Case>{{4, 128, 32, {{0, 37}, {5, 9}, {20, 1}}},
                                         {16, 512, 64, {{700, 1}}},
                                         {16, 512, 64, {{0, 70}, {130, 1}, {33, 17}, {1000, 1}}},
                                         {16, 512, 64, {{1000, 1}, {130, 1}, {5, 1}}},
                                         {16, 512, 64, decode_seqs(20, 300, 37)},
                                         {128, 512, 64, {{300, 1}, {64, 3}}},
                                         {128, 512, 64, {{300, 1}, {64, 1}}}}) {
    const int bs = 16;
    Plan p = make_plan(c.seqs, bs, rng_);
    const int64_t W = c.r + c.rope;
    auto [gc, cc] = mla_caches(p, c.r, c.rope, bs);
    const int64_t T = p.step.num_tokens();
    Tensor q = random_bf16({T, c.heads * W}, rng_, 0.2f);
    Tensor go = galloc({T, c.heads * c.r}), co = calloc({T, c.heads * c.r});
    const float scale = 1.0f / std::sqrt(192.0f);
    const std::string what =
        "mla_attention heads=" + std::to_string(c.heads) + " tokens=" + std::to_string(T);
    const Tensor gq = dev(q);
    const auto got = both_merges(gpu(), what, [&] {
      gpu().mla_attention(gq, gc.latent[0], p.step, c.heads, c.r, c.rope, scale, go);
      return fetch(gpu(), go);
    });
    cpu().mla_attention(q, cc.latent[0], p.step, c.heads, c.r, c.rope, scale, co);
    expect_close(got, host_values(co), 1e-2, what);
  }
}

// The absorbed step with its inputs (latent write, the query's rotation,
// attention): at decode the GPU makes the latents and the rotation inside the
// attention kernel; that equals its plain kernels bit for bit (outputs and the
// cache rows written; with the own key taken by a spare split block -- the
// plan then keeps one -- the outputs to rounding) and the CPU's plain ops to
// BF16 rounding. Cases cover one
// and many splits, the own key in a split's first and later key steps, the
// first token of a sequence, 128 heads (8 head groups), the narrow widths and a
// step that is not decode (the plain ops on both).
TEST_F(CudaOps, MlaAbsorbedAttentionMakesItsInputs) {
  struct Case {
    int64_t heads, r, rope;
    std::vector<std::pair<int, int>> seqs;  // (cached, new)
  };
  for (const Case& c : std::vector<Case>{{16, 512, 64, {{700, 1}}},
                                         {16, 512, 64, {{1000, 1}, {130, 1}, {0, 1}}},
                                         {16, 512, 64, decode_seqs(20, 300, 37)},
                                         {128, 512, 64, {{300, 1}, {64, 1}}},
                                         {4, 128, 32, {{20, 1}, {100, 1}}},
                                         {16, 512, 64, {{5, 9}, {20, 1}}}}) {
    const int bs = 16;
    Plan p = make_plan(c.seqs, bs, rng_);
    const int64_t W = c.r + c.rope, T = p.step.num_tokens(), dn = 128, qk = dn + c.rope;
    auto [rp, kv, nw, q, qa] = absorbed_inputs(T, c.heads, c.r, c.rope, qk, rng_);
    const float scale = 1.0f / std::sqrt(192.0f);
    const std::string what =
        "mla_absorbed_attention heads=" + std::to_string(c.heads) + " tokens=" + std::to_string(T);
    const Tensor gkv = dev(kv), gq = dev(q), gnw = gpu().upload(nw, DType::kF32);
    KvCache cc = mla_caches(p, c.r, c.rope, bs).second;
    // 0: plain kernels; 1: made in the kernel by the split holding the own key;
    // 2: by a spare split block (the own key as a partial state of its own).
    std::vector<float> out[3], rows[3];
    for (int fused = 0; fused < 3; ++fused) {  // each on a copy of the same cache
      cuda_set_mla_fused_inputs(gpu(), fused >= 1);
      cuda_set_attn_fresh_helper(gpu(), fused == 2);
      Tensor gcache = dev(cc.latent[0]);
      Tensor gqa = dev(qa), gl = galloc({T, W}), go = galloc({T, c.heads * c.r});
      gpu().mla_absorbed_attention(gkv, gnw, 1e-6f, rp, p.step, gl, gcache, gq, qk, dn, gqa,
                                   c.heads, c.r, c.rope, scale, go);
      out[fused] = fetch(gpu(), go);
      const std::vector<float> cache = fetch(gpu(), gcache);
      for (int32_t slot : p.step.slot_mapping)
        rows[fused].insert(rows[fused].end(), cache.begin() + slot * W,
                           cache.begin() + (slot + 1) * W);
    }
    cuda_set_mla_fused_inputs(gpu(), true);
    cuda_set_attn_fresh_helper(gpu(), true);  // the defaults
    expect_same(out[1], out[0], "fused vs plain kernels " + what);
    expect_same(rows[1], rows[0], "fused vs plain kernels, cache rows " + what);
    // The helper's score sums in another order: equal to a few BF16 roundings.
    expect_close(out[2], out[0], 5e-3, "fused with the helper vs plain kernels " + what);
    expect_same(rows[2], rows[0], "fused with the helper vs plain kernels, cache rows " + what);
    Tensor cl = calloc({T, W}), co = calloc({T, c.heads * c.r});
    cpu().mla_absorbed_attention(kv, nw, 1e-6f, rp, p.step, cl, cc.latent[0], q, qk, dn, qa,
                                 c.heads, c.r, c.rope, scale, co);
    expect_close(out[2], host_values(co), 1e-2, what);
    std::vector<float> want;
    const std::vector<float> cache = host_values(cc.latent[0]);
    for (int32_t slot : p.step.slot_mapping)
      want.insert(want.end(), cache.begin() + slot * W, cache.begin() + (slot + 1) * W);
    expect_close(rows[2], want, 1e-2, "cache rows " + what);
  }
}

// The absorbed attention followed by W_UV as one op: at decode with splits the
// GPU leaves the attention's merge to the product's prologue; that equals the
// attention's own merge followed by the plain per-head GEMV bit for bit (with
// and without the own-key helper; tokens of one split, whose rows the attention
// writes, beside tokens of many), and the CPU's two ops to BF16 rounding.
TEST_F(CudaOps, MlaAbsorbedAttentionUvMergesInTheProduct) {
  struct Case {
    int64_t heads, r, rope, dv;
    std::vector<std::pair<int, int>> seqs;  // (cached, new)
  };
  for (const Case& c : std::vector<Case>{{16, 512, 64, 128, {{700, 1}}},
                                         {16, 512, 64, 128, {{20, 1}}},
                                         {16, 512, 64, 128, {{1000, 1}, {5, 1}, {130, 1}}},
                                         {16, 512, 64, 128, {{3000, 1}, {64, 1}}},
                                         {128, 512, 64, 128, {{300, 1}, {64, 1}}},
                                         {4, 128, 32, 32, {{20, 1}, {100, 1}}},
                                         {16, 512, 64, 128, {{5, 9}, {20, 1}}}}) {
    const int bs = 16;
    Plan p = make_plan(c.seqs, bs, rng_);
    const int64_t W = c.r + c.rope, T = p.step.num_tokens(), dn = 128, qk = dn + c.rope;
    auto [rp, kv, nw, q, qa] = absorbed_inputs(T, c.heads, c.r, c.rope, qk, rng_);
    Tensor wuv = random_bf16({c.heads, c.dv, c.r}, rng_, 0.1f);
    const float scale = 1.0f / std::sqrt(192.0f);
    const Tensor gkv = dev(kv), gq = dev(q), gnw = gpu().upload(nw, DType::kF32);
    const Tensor gw = gpu().upload(wuv, DType::kBF16);
    KvCache cc = mla_caches(p, c.r, c.rope, bs).second;
    // The CPU's two ops on a copy of the cache (they write the new rows).
    Tensor ccache = Tensor::zeros(cc.latent[0].shape(), cc.latent[0].dtype());
    std::memcpy(ccache.raw(), cc.latent[0].raw(), ccache.nbytes());
    Tensor cl = calloc({T, W}), clo = calloc({T, c.heads * c.r}), co = calloc({T, c.heads * c.dv});
    cpu().mla_absorbed_attention_uv(kv, nw, 1e-6f, rp, p.step, cl, ccache, q, qk, dn, qa, c.heads,
                                    c.r, c.rope, scale, clo, wuv, co, c.dv);
    for (bool helper : {true, false}) {
      const std::string what = "mla_absorbed_attention_uv heads=" + std::to_string(c.heads) +
                               " tokens=" + std::to_string(T) + (helper ? " helper" : "");
      cuda_set_attn_fresh_helper(gpu(), helper);
      std::vector<float> out[2];
      for (int defer = 0; defer < 2; ++defer) {  // each on a copy of the same cache
        cuda_set_mla_defer_merge(gpu(), defer == 1);
        cuda_set_batch1_paths(gpu(), defer == 1);  // off: W_UV by the plain per-head GEMV
        Tensor gcache = dev(cc.latent[0]);
        Tensor gqa = dev(qa), gl = galloc({T, W}), glo = galloc({T, c.heads * c.r});
        Tensor go = galloc({T, c.heads * c.dv});
        gpu().mla_absorbed_attention_uv(gkv, gnw, 1e-6f, rp, p.step, gl, gcache, gq, qk, dn, gqa,
                                        c.heads, c.r, c.rope, scale, glo, gw, go, c.dv);
        out[defer] = fetch(gpu(), go);
      }
      expect_same(out[1], out[0], "merged in the product vs by the attention " + what);
      expect_close(out[1], host_values(co), 2e-2, what);
    }
  }
  cuda_set_attn_fresh_helper(gpu(), true);  // the defaults
  cuda_set_mla_defer_merge(gpu(), true);
  cuda_set_batch1_paths(gpu(), true);
}

// The prefill form (keys and values decompressed from the latents, the
// flash-attention kernel over 64-token query tiles) against the CPU's, with
// cached context, several sequences, tiles that end mid-chunk and BF16 kv_b.
TEST_F(CudaOps, MlaDecompressedAttentionMatchesCpu) {
  struct Case {
    MlaDims d;
    std::vector<std::pair<int, int>> seqs;  // (cached, new)
  };
  for (const Case& c :
       std::vector<Case>{{{4, 64, 32, 16, 32}, {{0, 37}, {5, 9}, {20, 1}}},
                         {{4, 128, 32, 32, 32}, {{0, 130}, {64, 64}}},
                         {{16, 512, 128, 64, 128}, {{0, 200}, {300, 70}, {0, 1}, {17, 64}}},
                         {{128, 512, 128, 64, 128}, {{10, 65}}}}) {
    const MlaDims& d = c.d;
    const int64_t nh = d.heads, dq = d.dn + d.p, dkv = d.dn + d.dv;
    const int bs = 16;
    Plan p = make_plan(c.seqs, bs, rng_);
    auto [gc, cc] = mla_caches(p, d.r, d.p, bs);
    Tensor kvb = random_bf16({nh * dkv, d.r}, rng_, 1.0f / std::sqrt(static_cast<float>(d.r)));
    Linear gw, cw;
    gw.weight = gpu().upload(kvb, DType::kBF16);
    cw.weight = cpu().upload(kvb, DType::kF32);
    const int64_t T = p.step.num_tokens();
    Tensor q = random_bf16({T, nh * dq}, rng_, 0.3f);
    Tensor go = galloc({T, nh * d.dv}), co = calloc({T, nh * d.dv});
    const float scale = 1.0f / std::sqrt(static_cast<float>(dq));
    gpu().mla_decompressed_attention(dev(q), gc.latent[0], gw, p.step, d, scale, go);
    cpu().mla_decompressed_attention(q, cc.latent[0], cw, p.step, d, scale, co);
    expect_close(
        fetch(gpu(), go), host_values(co), 1.5e-2,
        "mla_decompressed_attention heads=" + std::to_string(nh) + " r=" + std::to_string(d.r));
  }
}

// Prefill steps take the decompressed form on the GPU, decode steps (one token
// per sequence) and steps whose decompressed context would be large do not.
TEST_F(CudaOps, MlaFormChoice) {
  const MlaDims r1{128, 512, 128, 64, 128}, bench{16, 512, 128, 64, 128};
  Plan prefill = make_plan({{0, 512}, {0, 512}}, 16, rng_);
  Plan decode = make_plan({{700, 1}, {30, 1}, {5, 1}}, 16, rng_);
  Plan mixed = make_plan({{0, 64}, {4000, 1}, {4000, 1}, {4000, 1}, {4000, 1}}, 16, rng_);
  Plan huge = make_plan({{60000, 2048}}, 64, rng_);
  EXPECT_TRUE(gpu().prefers_decompressed_mla(prefill.step, bench));
  EXPECT_TRUE(gpu().prefers_decompressed_mla(prefill.step, r1));
  EXPECT_FALSE(gpu().prefers_decompressed_mla(decode.step, bench));
  EXPECT_FALSE(gpu().prefers_decompressed_mla(mixed.step, bench));
  EXPECT_FALSE(gpu().prefers_decompressed_mla(huge.step, r1));  // 62k keys x 128 heads x 256 x 2 B
  EXPECT_FALSE(gpu().prefers_decompressed_mla(prefill.step, MlaDims{16, 512, 96, 64, 128}));
  EXPECT_TRUE(gpu().mla_decompressed_available(bench));
  EXPECT_FALSE(gpu().mla_decompressed_available(MlaDims{16, 512, 96, 64, 128}));
}

TEST_F(CudaOps, GqaPagedAttention) {
  struct Case {
    int64_t nh, nkv, d;
    std::vector<std::pair<int, int>> seqs;
  };
  for (const Case& c : std::vector<Case>{{4, 2, 32, {{0, 29}, {7, 4}}},
                                         {28, 4, 128, {{0, 40}, {500, 1}, {3, 1}}},
                                         {32, 8, 128, {{2000, 1}}},
                                         {28, 4, 128, {{1000, 1}}},  // 16 splits
                                         {28, 4, 128, decode_seqs(5, 600, 101)},
                                         {8, 8, 64, {{60, 20}}}}) {
    const int bs = 16;
    Plan p = make_plan(c.seqs, bs, rng_);
    KvCacheSpec spec;
    spec.num_layers = 1;
    spec.num_kv_heads = c.nkv;
    spec.head_dim = c.d;
    KvCache gc = gpu().alloc_kv_cache(spec, p.blocks, bs);
    KvCache cc = cpu().alloc_kv_cache(spec, p.blocks, bs);
    for (BatchInfo* b : {&p.history, &p.step}) {
      const int64_t T = b->num_tokens();
      if (T == 0) continue;
      Tensor k = random_bf16({T, c.nkv * c.d}, rng_), v = random_bf16({T, c.nkv * c.d}, rng_);
      gpu().cache_write(dev(k), *b, gc.k[0]);
      gpu().cache_write(dev(v), *b, gc.v[0]);
      cpu().cache_write(k, *b, cc.k[0]);
      cpu().cache_write(v, *b, cc.v[0]);
    }
    const int64_t T = p.step.num_tokens();
    Tensor q = random_bf16({T, c.nh * c.d}, rng_, 0.3f);
    Tensor go = galloc({T, c.nh * c.d}), co = calloc({T, c.nh * c.d});
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    const std::string what =
        "paged_attention d=" + std::to_string(c.d) + " tokens=" + std::to_string(T);
    const Tensor gq = dev(q);
    const auto got = both_merges(gpu(), what, [&] {
      gpu().paged_attention(gq, gc.k[0], gc.v[0], p.step, c.nh, c.nkv, c.d, scale, go);
      return fetch(gpu(), go);
    });
    cpu().paged_attention(q, cc.k[0], cc.v[0], p.step, c.nh, c.nkv, c.d, scale, co);
    expect_close(got, host_values(co), 1e-2, what);
  }
}

// The F32 validation mode: linear, head_linear and the routed experts take F32
// activations unrounded, so they match the CPU to float rounding (1e-5), and
// the KV cache it allocates is F32.
TEST_F(CudaOps, F32ValidationModeIsF32) {
  auto g32 = make_cuda_backend(0, 0.2, /*f32_activations=*/true);
  Backend& g = *g32;
  Tensor x = Tensor::empty({5, 96}, DType::kF32);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = d(rng_);  // not BF16-representable
  Tensor w = random_bf16({40, 96}, rng_, 0.1f);
  Linear gl, cl;
  gl.weight = g.upload(w, DType::kBF16);
  cl.weight = w;
  Tensor gx = g.upload(x.reshape({x.numel()}), DType::kF32).reshape(x.shape());
  Tensor go = g.alloc({5, 40}, DType::kF32), co = calloc({5, 40});
  g.linear(gx, gl, go);
  cpu().linear(x, cl, co);
  expect_close(fetch(g, go), host_values(co), 1e-5, "f32 linear");
  // head_linear: 3 heads of 32 inputs -> 8 outputs each (stride 10).
  Tensor hw = random_bf16({3, 8, 32}, rng_, 0.1f);
  Tensor gho = g.alloc({5, 30}, DType::kF32), cho = calloc({5, 30});
  g.head_linear(gx, 32, g.upload(hw, DType::kBF16), gho, 10);
  cpu().head_linear(x, 32, hw, cho, 10);
  std::vector<float> a = fetch(g, gho), b = host_values(cho);
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t h = 0; h < 3; ++h)
      for (int64_t j = 8; j < 10; ++j) a[t * 30 + h * 10 + j] = b[t * 30 + h * 10 + j] = 0.0f;
  expect_close(a, b, 1e-5, "f32 head_linear");
  // Routed experts with fixed ids and weights.
  const int64_t E = 6, H = 96, I = 24, K = 2;
  Tensor gu = random_bf16({E, 2 * I, H}, rng_, 0.1f), down = random_bf16({E, H, I}, rng_, 0.1f);
  ExpertWeights cw, gw;
  cw.gate_up = gu;
  cw.down = down;
  gw.gate_up = g.upload(gu, DType::kBF16);
  gw.down = g.upload(down, DType::kBF16);
  Tensor ids = Tensor::empty({5, K}, DType::kI32), wt = Tensor::empty({5, K}, DType::kF32);
  for (int64_t i = 0; i < 5 * K; ++i) {
    ids.data<int32_t>()[i] = static_cast<int32_t>((i * 7) % E);
    wt.data<float>()[i] = 0.3f + 0.1f * static_cast<float>(i);
  }
  Tensor gmo = g.alloc({5, H}, DType::kF32), cmo = calloc({5, H});
  g.moe_experts(gx, gw, g.upload(ids, DType::kI32),
                g.upload(wt.reshape({wt.numel()}), DType::kF32).reshape(wt.shape()), gmo);
  cpu().moe_experts(x, cw, ids, wt, cmo);
  expect_close(fetch(g, gmo), host_values(cmo), 1e-5, "f32 moe_experts");
  KvCacheSpec spec;
  spec.mla = true;
  spec.num_layers = 1;
  spec.kv_lora_rank = 32;
  spec.rope_dim = 8;
  KvCache kv = g.alloc_kv_cache(spec, 2, 4);
  EXPECT_EQ(kv.latent[0].dtype(), DType::kF32);
  // int8 row scales are CPU-only: a clear error.
  Linear sl = gl;
  sl.scale = g.upload(Tensor::zeros({40}, DType::kF32), DType::kF32);
  try {
    g.linear(gx, sl, go);
    ADD_FAILURE() << "a defined int8 scale was accepted";
  } catch (const r1::Error& e) {
    EXPECT_NE(std::string(e.what()).find("CPU-only"), std::string::npos) << e.what();
  }
}

TEST_F(CudaOps, OutOfMemoryIsAClearError) {
  try {
    Tensor t = gpu().alloc({int64_t{1} << 40}, DType::kU8);
    FAIL() << "a 1 TiB allocation succeeded";
  } catch (const r1::Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of GPU memory"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace r1::backend::testing
