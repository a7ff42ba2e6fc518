// Dense GEMVs for steps of a few tokens (BF16 weights read once with 16-byte
// loads, F32 accumulation): plain products with an optional bias, the SwiGLU
// form (gate and up row of one output per warp), per-head products over a grid
// of heads, and the launch plan (warps per row, rows per warp, unroll) chosen
// from a measured sweep. Every kernel follows the pdl_wait rule and issues its
// first weight loads before waiting.
#include <algorithm>
#include <cstdlib>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

constexpr int kGemvTokens = 4;  // tokens per launch (more are done in chunks of this)

// The weight loads of U x 256 columns from `kb` of R rows (zeros past k_end).
template <int R, int U>
__device__ __forceinline__ void load_rows(uint4 (&wv)[U][R], const uint16_t* const (&wr)[R],
                                          int64_t kb, int64_t k_end) {
#pragma unroll
  for (int u = 0; u < U; ++u)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t k0 = kb + 256 * u;
      wv[u][r] = k0 < k_end ? ld_stream(wr[r] + k0) : make_uint4(0, 0, 0, 0);
    }
}

// acc[r][t] += wv[u][r] . x[t, kb + 256 u ...] (x BF16) for the stretch loaded from kb.
template <int T, int R, int U>
__device__ __forceinline__ void fma_rows(float (&acc)[R][T], const uint4 (&wv)[U][R],
                                         const uint16_t* x, int64_t ldx, int64_t kb,
                                         int64_t k_end) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t k0 = kb + 256 * u;
    if (k0 < k_end) {
#pragma unroll
      for (int t = 0; t < T; ++t) {
        float x8[8];
        unpack8(*reinterpret_cast<const uint4*>(x + t * ldx + k0), x8);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float w8[8];
          unpack8(wv[u][r], w8);
#pragma unroll
          for (int c = 0; c < 8; ++c) acc[r][t] = fmaf(w8[c], x8[c], acc[r][t]);
        }
      }
    }
  }
}

// silu(g) * u, g and u first rounded to BF16 when the output is BF16 (what a
// product into a BF16 [T, 2N] buffer followed by silu_mul computes).
__device__ __forceinline__ float swiglu_of(float g, float u, bool bf) {
  if (bf) {
    g = round_bf16(g);
    u = round_bf16(u);
  }
  return g / (1.0f + expf(-g)) * u;
}

// Dense GEMV for T (<= 4) BF16 rows of x: S warps share each of a block's 8 / S
// outputs (each warp a contiguous K / S stretch; the S partial sums are added
// in a fixed order, and S depends only on N and K, so results do not depend on
// T); each warp covers R rows, U x 256 columns of each per round trip (all
// those loads issued before any FMA). The first stretch of weights is loaded
// (and, with `prefetch`, the warp's rows start moving into L2) before pdl_wait,
// while the previous kernel may still run. out[t, n] = W[n] . x[t] (+ bias[n]);
// SWIGLU: W is [2N, K] (gate rows, then up rows), R = 2 covers gate row n and
// up row N + n, and out[t, n] = silu(g) * u.
template <int T, int R, int U, bool SWIGLU>
__global__ void __launch_bounds__(256)
    dense_gemv_kernel(const uint16_t* x, int64_t ldx, const uint16_t* w, int64_t N, int64_t K,
                      int S, const float* bias, bool prefetch, void* out, bool out_bf, int64_t ldo,
                      HeadStrides hs) {
  static_assert(!SWIGLU || R == 2, "SwiGLU pairs two rows");
  // Per-head products: grid row blockIdx.y is head h (x, W and out advance by their head strides).
  x += blockIdx.y * hs.x;
  w += blockIdx.y * hs.w;
  out = static_cast<char*>(out) + blockIdx.y * hs.out * (out_bf ? 2 : 4);
  constexpr int kRowsApart = SWIGLU ? 0 : 1;  // rows of a warp: n0 + r (plain) or n + r N (SwiGLU)
  __shared__ float red[8][R][T];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t unit =
      static_cast<int64_t>(blockIdx.x) * (8 / S) + warp / S;  // output (group) of this warp
  const int64_t n0 = SWIGLU ? unit : unit * R;
  const int part = warp % S;
  const int64_t klen = K / S, k_begin = part * klen, k_end = k_begin + klen;
  const uint16_t* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r)
    wr[r] = kRowsApart ? w + min(n0 + r, N - 1) * K : w + (min(n0, N - 1) + r * N) * K;
  uint4 wv[U][R];
  const int64_t kb0 = k_begin + lane * 8;
  load_rows<R, U>(wv, wr, kb0, k_end);
  if (prefetch && n0 < N) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (lane == r && (SWIGLU || n0 + r < N))
        prefetch_l2(wr[r] + k_begin, static_cast<uint32_t>(klen * 2));
  }
  pdl_wait();
  pdl_trigger();
  float acc[R][T];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < T; ++t) acc[r][t] = 0.0f;
  if (n0 < N) {
    for (int64_t kb = kb0; kb < k_end; kb += 256 * U) {
      if (kb != kb0) load_rows<R, U>(wv, wr, kb, k_end);
      fma_rows<T, R, U>(acc, wv, x, ldx, kb, k_end);
    }
  }
  if (S == 1) {  // no partial sums to combine
    if (n0 >= N) return;
#pragma unroll
    for (int t = 0; t < T; ++t) {
      if constexpr (SWIGLU) {
        const float g = warp_sum(acc[0][t]), u = warp_sum(acc[1][t]);
        if (lane == 0) stf(out, t * ldo + n0, out_bf, swiglu_of(g, u, out_bf));
      } else {
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const float v = warp_sum(acc[r][t]);
          if (lane == 0 && n0 + r < N)
            stf(out, t * ldo + n0 + r, out_bf, bias ? v + bias[n0 + r] : v);
        }
      }
    }
    return;
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const float v = warp_sum(acc[r][t]);
      if (lane == 0) red[warp][r][t] = v;
    }
  __syncthreads();
  if (part == 0 && lane == 0 && n0 < N) {
#pragma unroll
    for (int t = 0; t < T; ++t) {
      float v[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        v[r] = 0.0f;
        for (int p = 0; p < S; ++p) v[r] += red[warp + p][r][t];
      }
      if constexpr (SWIGLU) {
        stf(out, t * ldo + n0, out_bf, swiglu_of(v[0], v[R - 1], out_bf));
      } else {
#pragma unroll
        for (int r = 0; r < R; ++r)
          if (n0 + r < N) stf(out, t * ldo + n0 + r, out_bf, bias ? v[r] + bias[n0 + r] : v[r]);
      }
    }
  }
}

// Matrices up to 16 MB are pulled into L2 whole before pdl_wait, while the
// kernel before runs (larger ones would evict each other's lines: L2 is 50 MB
// on H100/H200; measured on the 7B's 26-33 MB projections, prefetching them
// made the isolated GEMV ~3 us slower).
// R1SERVE_CUDA_PREFETCH_MB overrides the limit (0 turns the prefetch off).
int64_t prefetch_max_bytes() {
  static const int64_t limit = [] {
    const char* e = std::getenv("R1SERVE_CUDA_PREFETCH_MB");
    return (e != nullptr ? std::atoll(e) : int64_t{16}) << 20;
  }();
  return limit;
}

GemvPlan g_gemv_override{};  // split 0: use the heuristic

bool plan_valid(const GemvPlan& p, int64_t K, bool swiglu) {
  return (p.split == 1 || p.split == 2 || p.split == 4 || p.split == 8) &&
         (p.rows == 1 || p.rows == 2) && (p.unroll == 4 || p.unroll == 8) &&
         (!swiglu || p.rows == 2) && K % (8 * p.split) == 0;
}

template <int T, int R, bool SW>
void launch_plan_u(const GemvPlan& p, dim3 grid, const uint16_t* x, int64_t ldx, const uint16_t* w,
                   int64_t N, int64_t K, const float* bias, bool prefetch, void* out, bool out_bf,
                   int64_t ldo, HeadStrides hs, cudaStream_t s) {
  if (p.unroll == 8)
    pdl_launch(dense_gemv_kernel<T, R, 8, SW>, grid, 256, 0, s, x, ldx, w, N, K, p.split, bias,
               prefetch, out, out_bf, ldo, hs);
  else
    pdl_launch(dense_gemv_kernel<T, R, 4, SW>, grid, 256, 0, s, x, ldx, w, N, K, p.split, bias,
               prefetch, out, out_bf, ldo, hs);
}

// H > 1: H independent products (per-head), blocks planned for all H x N rows.
template <int T>
void launch_gemv_t(const uint16_t* x, int64_t ldx, const uint16_t* w, int64_t N, int64_t K,
                   const float* bias, bool swiglu, void* out, bool out_bf, int64_t ldo, int64_t H,
                   HeadStrides hs, int sms, cudaStream_t s) {
  GemvPlan p = gemv_plan(N * H, K, swiglu, sms);
  if (g_gemv_override.split != 0 && plan_valid(g_gemv_override, K, swiglu)) p = g_gemv_override;
  const bool prefetch = H * N * K * 2 * (swiglu ? 2 : 1) <= prefetch_max_bytes();
  const int64_t outs_per_block = 8 / p.split * (swiglu ? 1 : p.rows);
  const dim3 grid(static_cast<unsigned>((N + outs_per_block - 1) / outs_per_block),
                  static_cast<unsigned>(H));
  if (swiglu)
    launch_plan_u<T, 2, true>(p, grid, x, ldx, w, N, K, nullptr, prefetch, out, out_bf, ldo, hs, s);
  else if (p.rows == 2)
    launch_plan_u<T, 2, false>(p, grid, x, ldx, w, N, K, bias, prefetch, out, out_bf, ldo, hs, s);
  else
    launch_plan_u<T, 1, false>(p, grid, x, ldx, w, N, K, bias, prefetch, out, out_bf, ldo, hs, s);
}

int sm_count() {
  static int sms = 0;
  if (sms == 0) {
    int dev = 0;
    R1_CUDA_OK(cudaGetDevice(&dev));
    R1_CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  }
  return sms;
}

void launch_gemv_chunks(const uint16_t* x, int64_t ldx, const uint16_t* w, int64_t N, int64_t K,
                        int64_t T, const float* bias, bool swiglu, void* out, bool out_bf,
                        int64_t ldo, int64_t H, HeadStrides hs, cudaStream_t s) {
  const int sms = sm_count();
  const size_t osz = out_bf ? 2 : 4;
  for (int64_t t0 = 0; t0 < T; t0 += kGemvTokens) {
    const int n = static_cast<int>(std::min<int64_t>(kGemvTokens, T - t0));
    const uint16_t* xt = x + t0 * ldx;
    void* ot = static_cast<char*>(out) + static_cast<size_t>(t0 * ldo) * osz;
    switch (n) {
      case 1:
        launch_gemv_t<1>(xt, ldx, w, N, K, bias, swiglu, ot, out_bf, ldo, H, hs, sms, s);
        break;
      case 2:
        launch_gemv_t<2>(xt, ldx, w, N, K, bias, swiglu, ot, out_bf, ldo, H, hs, sms, s);
        break;
      case 3:
        launch_gemv_t<3>(xt, ldx, w, N, K, bias, swiglu, ot, out_bf, ldo, H, hs, sms, s);
        break;
      default:
        launch_gemv_t<4>(xt, ldx, w, N, K, bias, swiglu, ot, out_bf, ldo, H, hs, sms, s);
        break;
    }
  }
}

}  // namespace

GemvPlan gemv_plan(int64_t N, int64_t K, bool swiglu, int sms) {
  // From the plan sweep over the benchmark models' shapes (bench_cuda with
  // R1_BENCH_GEMV=1, H200, docs/performance.md): split each row across warps
  // until the grid has two blocks per SM or a warp's stretch is <= 8192 values;
  // one row per warp (a SwiGLU warp covers its gate and up row); unroll 4.
  GemvPlan p{1, swiglu ? 2 : 1, 4};
  const int64_t min_blocks = static_cast<int64_t>(sms) * 2;
  while (p.split < 8 && ((N + 7) / 8 * p.split < min_blocks || K / p.split > 8192) &&
         K % (8 * 2 * p.split) == 0)
    p.split *= 2;
  return p;
}

void set_gemv_override(const GemvPlan& plan) {
  g_gemv_override = plan;
}

void launch_dense_gemv(const void* x, bool x_bf, int64_t ldx, const uint16_t* w, int64_t N,
                       int64_t K, int64_t T, const float* bias, bool swiglu, void* out, bool out_bf,
                       int64_t ldo, cudaStream_t s) {
  R1_CUDA_REQUIRE(K % 8 == 0 && ldx % 8 == 0,
                  "dense gemv: K and the row stride must be multiples of 8");
  R1_CUDA_REQUIRE(x_bf, "dense gemv: BF16 activations");
  R1_CUDA_REQUIRE(!(swiglu && bias), "dense gemv: no bias with SwiGLU");
  if (T == 0 || N == 0) return;
  launch_gemv_chunks(static_cast<const uint16_t*>(x), ldx, w, N, K, T, bias, swiglu, out, out_bf,
                     ldo, 1, HeadStrides{}, s);
}

void launch_head_gemv(const uint16_t* x, int64_t ldx, int64_t x_head_stride, const uint16_t* w,
                      int64_t H, int64_t N, int64_t K, int64_t T, void* out, bool out_bf,
                      int64_t ldo, int64_t out_head_stride, cudaStream_t s) {
  R1_CUDA_REQUIRE(K % 8 == 0 && ldx % 8 == 0 && x_head_stride % 8 == 0,
                  "head gemv: K and the strides must be multiples of 8");
  if (T == 0 || N == 0 || H == 0) return;
  launch_gemv_chunks(x, ldx, w, N, K, T, nullptr, false, out, out_bf, ldo, H,
                     HeadStrides{x_head_stride, N * K, out_head_stride}, s);
}

}  // namespace r1::backend::cuda
