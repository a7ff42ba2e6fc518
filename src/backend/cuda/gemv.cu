// Dense GEMVs for steps of a few tokens (BF16 weights read once with 16-byte
// loads, F32 accumulation): plain products with an optional bias, the SwiGLU
// form (gate and up row of one output per warp), per-head products over a grid
// of heads, the fused forms (RMSNorm of x folded into the products, the residual
// add in the epilogue), and the launch plan (warps per row, rows per warp, unroll)
// chosen from a measured sweep. Every kernel follows the pdl_wait rule and
// issues its first weight loads before waiting.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

constexpr int kGemvTokens = 4;  // tokens per launch (more are done in chunks of this)
// The normalizing prologue covers rows of up to 8192 values (what launch_rms_norm's
// one-pass kernel covers, so the two agree bit for bit): 64 KB of shared memory at 4 tokens.
constexpr int64_t kNormMaxK = 256 * 8 * 4;
constexpr int kNormMaxSmem = static_cast<int>(kGemvTokens * kNormMaxK * 2);

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

// acc[r][t] += wv[u][r] . x[t, kb + 256 u ...] (x BF16) for the stretch loaded
// from kb. NORM: x is first multiplied by the norm weights nw (F32) and ss[t]
// gathers the squares of x (the rms of x scales the sums at the end).
template <int T, int R, int U, bool NORM>
__device__ __forceinline__ void fma_rows(float (&acc)[R][T], float (&ss)[T],
                                         const uint4 (&wv)[U][R], const uint16_t* x, int64_t ldx,
                                         const float* nw, int64_t kb, int64_t k_end) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t k0 = kb + 256 * u;
    if (k0 < k_end) {
      float n8[8];
      if constexpr (NORM) {
        const float4 a = *reinterpret_cast<const float4*>(nw + k0),
                     b = *reinterpret_cast<const float4*>(nw + k0 + 4);
        n8[0] = a.x, n8[1] = a.y, n8[2] = a.z, n8[3] = a.w;
        n8[4] = b.x, n8[5] = b.y, n8[6] = b.z, n8[7] = b.w;
      }
#pragma unroll
      for (int t = 0; t < T; ++t) {
        float x8[8];
        unpack8(*reinterpret_cast<const uint4*>(x + t * ldx + k0), x8);
        if constexpr (NORM) {
#pragma unroll
          for (int c = 0; c < 8; ++c) {
            ss[t] = fmaf(x8[c], x8[c], ss[t]);
            x8[c] *= n8[c];
          }
        }
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

// Before pdl_wait: starts moving this thread's norm weights (constant) into L1
// for norm_rows' second pass.
__device__ __forceinline__ void prefetch_norm_weights(const float* nw, int K) {
  for (int i = threadIdx.x * 8; i < K; i += 256 * 8)
    asm volatile("prefetch.global.L1 [%0];" ::"l"(nw + i));
}

// RMSNorm of the T rows of x [T, K] (ld ldx; BF16, 16-byte aligned, K % 8 == 0,
// K <= kNormMaxK) into xs [T, K] in shared memory by the block's 256 threads,
// with the arithmetic of elementwise.cu's rms_norm_vec_kernel: thread i sums
// the squares of its 8-value vectors at (u * 256 + i) * 8 in the same order
// (fmaf, low half first), the warp sums and then the 8 warp partials are added
// in the same order, inv = 1 / sqrtf(ss / K + eps), and x * inv * w is rounded
// to BF16 the same way, so xs equals what rms_norm writes bit for bit. The raw
// rows are first copied into xs (asynchronously: one round trip to L2 for all
// of them), then each thread sums and scales in place only the vectors it
// copied (so only the partial sums need a barrier). Every thread of the block
// must call it; it ends with __syncthreads.
template <int T>
__device__ __forceinline__ void norm_rows(const uint16_t* x, int64_t ldx, const float* nw, int K,
                                          float eps, uint16_t* xs) {
  __shared__ float partial[8][T];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  for (int i = tid * 8; i < K; i += 256 * 8)
#pragma unroll
    for (int t = 0; t < T; ++t) cp_async16(xs + t * K + i, x + t * ldx + i, true);
  cp_async_wait_all();
  float ss[T];
#pragma unroll
  for (int t = 0; t < T; ++t) ss[t] = 0.0f;
#pragma unroll 1
  for (int i = tid * 8; i < K; i += 256 * 8) {
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const uint4 xv = *reinterpret_cast<const uint4*>(xs + t * K + i);
      const uint32_t xw[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float lo = __uint_as_float(xw[k] << 16), hi = __uint_as_float(xw[k] & 0xffff0000u);
        ss[t] = fmaf(lo, lo, ss[t]);
        ss[t] = fmaf(hi, hi, ss[t]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < T; ++t) {
    const float v = warp_sum(ss[t]);
    if (lane == 0) partial[warp][t] = v;
  }
  __syncthreads();
  float inv[T];
#pragma unroll
  for (int t = 0; t < T; ++t) {
    float tot = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) tot += partial[k][t];
    inv[t] = 1.0f / sqrtf(tot / static_cast<float>(K) + eps);
  }
#pragma unroll 1
  for (int i = tid * 8; i < K; i += 256 * 8) {
    const float4 w0 = *reinterpret_cast<const float4*>(nw + i),
                 w1 = *reinterpret_cast<const float4*>(nw + i + 4);
    const float wv[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
    for (int t = 0; t < T; ++t) {
      uint4* p = reinterpret_cast<uint4*>(xs + t * K + i);
      const uint4 xv = *p;
      const uint32_t xw[4] = {xv.x, xv.y, xv.z, xv.w};
      uint32_t ow[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float lo = __uint_as_float(xw[k] << 16), hi = __uint_as_float(xw[k] & 0xffff0000u);
        const __nv_bfloat162 b =
            __floats2bfloat162_rn(lo * inv[t] * wv[2 * k], hi * inv[t] * wv[2 * k + 1]);
        ow[k] = *reinterpret_cast<const uint32_t*>(&b);
      }
      *p = make_uint4(ow[0], ow[1], ow[2], ow[3]);
    }
  }
  __syncthreads();
}

// Stores product v (bias included) of output (t, n): into out, or, with a
// residual, added to it in place (v first rounded to BF16 when fu.round_bf: a
// BF16 out followed by add_kernel's ldf(a) + ldf(b), rounded by stf).
__device__ __forceinline__ void put_out(const GemvFusion& fu, void* out, bool out_bf, int64_t ldo,
                                        int t, int64_t n, float v) {
  if (fu.residual != nullptr) {
    if (fu.round_bf) v = round_bf16(v);
    const int64_t i = t * fu.ldr + n;
    stf(fu.residual, i, fu.residual_bf, ldf(fu.residual, i, fu.residual_bf) + v);
  } else if (fu.w2 != nullptr && n >= fu.n_first) {
    stf(fu.out2, t * fu.ldo2 + n - fu.n_first, out_bf, v);
  } else {
    stf(out, t * ldo + n, out_bf, v);
  }
}

// The rope epilogue (fu.rope_positions): rows n0 and n0 + d/2 of head n0 / d,
// products v0 and v1 (bias included), with qkv_rope_cache_kernel's arithmetic on
// their BF16 roundings.
__device__ __forceinline__ void put_rope(const GemvFusion& fu, void* q, int t, int64_t n0, float v0,
                                         float v1) {
  const int64_t d = fu.rope_d, half = d / 2, nh = fu.rope_nh, nkv = fu.rope_nkv;
  const int64_t h = n0 / d, i = n0 % d;
  const float x0 = round_bf16(v0), x1 = round_bf16(v1);
  if (h >= nh + nkv) {
    const int64_t base = static_cast<int64_t>(fu.rope_slots[t]) * nkv * d + (h - nh - nkv) * d;
    stf(fu.v_cache, base + i, true, x0);
    stf(fu.v_cache, base + i + half, true, x1);
    return;
  }
  const float angle = static_cast<float>(fu.rope_positions[t]) * fu.inv_freq[i];
  float sn, cs;
  sincosf(angle, &sn, &cs);
  cs *= fu.rope_factor;
  sn *= fu.rope_factor;
  void* dst = h < nh ? q : fu.k_cache;
  const int64_t base =
      h < nh ? t * nh * d + h * d : static_cast<int64_t>(fu.rope_slots[t]) * nkv * d + (h - nh) * d;
  stf(dst, base + i, true, x0 * cs - x1 * sn);
  stf(dst, base + i + half, true, x1 * cs + x0 * sn);
}

// Dense GEMV for T (<= 4) BF16 rows of x: S warps share each of a block's 8 / S
// outputs (each warp a contiguous K / S stretch; the S partial sums are added
// in a fixed order, and S depends only on N and K, so results do not depend on
// T); each warp covers R rows, U x 256 columns of each per round trip (all
// those loads issued before any FMA). The first stretch of weights is loaded
// (and, with `prefetch`, the warp's rows start moving into L2) before pdl_wait,
// while the previous kernel may still run. out[t, n] = W[n] . x[t] (+ bias[n]);
// SWIGLU: W is [2N, K] (gate rows, then up rows), R = 2 covers gate row n and
// up row N + n, and out[t, n] = silu(g) * u. The product may be that of
// RMSNorm(x) with fu.norm_w: NM == 1 (the prologue), the block first
// normalizes x's rows into dynamic shared memory (T x K BF16, bit for bit what
// rms_norm writes) and reads x from there; NM == 2 (folded), each warp multiplies its columns of x
// by the norm weights as it reads them and sums their squares beside the
// products; the sums of squares combine like the partial products, and the
// sums are scaled by 1 / rms(x[t]) before the bias and the epilogue (no
// normed copy of x, no extra barrier; x is never rounded after the norm).
// fu.residual: the products are added to it (put_out) instead of written to
// out, after pdl_wait; fu.x_early: x is read before pdl_wait (only the stores wait).
template <int T, int R, int U, bool SWIGLU, int NM>
__global__ void __launch_bounds__(256)
    dense_gemv_kernel(const uint16_t* x, int64_t ldx, const uint16_t* w, int64_t N, int64_t K,
                      int S, const float* bias, bool prefetch, void* out, bool out_bf, int64_t ldo,
                      HeadStrides hs, GemvFusion fu) {
  static_assert(!SWIGLU || R == 2, "SwiGLU pairs two rows");
  constexpr bool PRO = NM == 1, NORM = NM == 2;  // the prologue, the folded norm
  extern __shared__ uint4 gemv_dyn_smem[];       // PRO: the normed rows of x, [T, K] BF16
  // Per-head products: grid row blockIdx.y is head h (x, W and out advance by their head strides).
  x += blockIdx.y * hs.x;
  w += blockIdx.y * hs.w;
  out = static_cast<char*>(out) + blockIdx.y * hs.out * (out_bf ? 2 : 4);
  // Rows of a warp: n0 + r (plain), n0 + r N (SwiGLU), n0 + r d/2 (rope: n0 = h d + i).
  const bool rope = R == 2 && !SWIGLU && fu.rope_positions != nullptr;
  __shared__ float red[8][R + (NORM ? 1 : 0)][T];  // NORM: row R holds the sums of squares
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t unit =
      static_cast<int64_t>(blockIdx.x) * (8 / S) + warp / S;  // output (group) of this warp
  const int64_t half = rope ? fu.rope_d / 2 : 0;
  const int64_t n0 = SWIGLU ? unit : rope ? unit / half * fu.rope_d + unit % half : unit * R;
  const int64_t apart = SWIGLU ? N : rope ? half : 1;
  const int part = warp % S;
  const int64_t klen = K / S, k_begin = part * klen, k_end = k_begin + klen;
  const uint16_t* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t nr = min(n0 + r * apart, N - 1);
    wr[r] = SWIGLU                                 ? w + (min(n0, N - 1) + r * N) * K
            : fu.w2 != nullptr && nr >= fu.n_first ? fu.w2 + (nr - fu.n_first) * K
                                                   : w + nr * K;
  }
  uint4 wv[U][R];
  const int64_t kb0 = k_begin + lane * 8;
  load_rows<R, U>(wv, wr, kb0, k_end);
  if (prefetch && n0 < N) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (lane == r && (SWIGLU || n0 + r * apart < N))
        prefetch_l2(wr[r] + k_begin, static_cast<uint32_t>(klen * 2));
  }
  if constexpr (PRO) prefetch_norm_weights(fu.norm_w, static_cast<int>(K));
  if (!fu.x_early) {
    if (fu.trigger_first) pdl_trigger();
    pdl_wait();
  }
  pdl_trigger();
  if constexpr (PRO)  // every thread of the block; ends synced
    norm_rows<T>(x, ldx, fu.norm_w, static_cast<int>(K), fu.eps,
                 reinterpret_cast<uint16_t*>(gemv_dyn_smem));
  float acc[R][T], ss[T];
#pragma unroll
  for (int t = 0; t < T; ++t) {
    ss[t] = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r][t] = 0.0f;
  }
  if (n0 < N) {
    for (int64_t kb = kb0; kb < k_end; kb += 256 * U) {
      if (kb != kb0) load_rows<R, U>(wv, wr, kb, k_end);
      if constexpr (PRO)
        fma_rows<T, R, U, false>(acc, ss, wv, reinterpret_cast<const uint16_t*>(gemv_dyn_smem), K,
                                 nullptr, kb, k_end);
      else
        fma_rows<T, R, U, NORM>(acc, ss, wv, x, ldx, fu.norm_w, kb, k_end);
    }
  }
  // The norm's scale of token t from its sum of squares over all K columns.
  auto inv_rms = [&](float sum) { return 1.0f / sqrtf(sum / static_cast<float>(K) + fu.eps); };
  if (fu.x_early) pdl_wait();  // the stores (out may be the kernel before's)
  if (S == 1) {                // no partial sums to combine
    if (n0 >= N) return;
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const float sc = NORM ? inv_rms(warp_sum(ss[t])) : 1.0f;
      if constexpr (SWIGLU) {
        const float g = warp_sum(acc[0][t]) * sc, u = warp_sum(acc[1][t]) * sc;
        if (lane == 0) stf(out, t * ldo + n0, out_bf, swiglu_of(g, u, out_bf));
      } else if (rope) {
        const float v0 = warp_sum(acc[0][t]) * sc, v1 = warp_sum(acc[R - 1][t]) * sc;
        if (lane == 0)
          put_rope(fu, out, t, n0, bias ? v0 + bias[n0] : v0, bias ? v1 + bias[n0 + half] : v1);
      } else {
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const float v = warp_sum(acc[r][t]) * sc;
          if (lane == 0 && n0 + r < N)
            put_out(fu, out, out_bf, ldo, t, n0 + r, bias ? v + bias[n0 + r] : v);
        }
      }
    }
    return;
  }
#pragma unroll
  for (int t = 0; t < T; ++t) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float v = warp_sum(acc[r][t]);
      if (lane == 0) red[warp][r][t] = v;
    }
    if constexpr (NORM) {
      const float v = warp_sum(ss[t]);
      if (lane == 0) red[warp][R][t] = v;
    }
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
      if constexpr (NORM) {
        float sum = 0.0f;
        for (int p = 0; p < S; ++p) sum += red[warp + p][R][t];
        const float sc = inv_rms(sum);
#pragma unroll
        for (int r = 0; r < R; ++r) v[r] *= sc;
      }
      if constexpr (SWIGLU) {
        stf(out, t * ldo + n0, out_bf, swiglu_of(v[0], v[R - 1], out_bf));
      } else if (rope) {
        put_rope(fu, out, t, n0, bias ? v[0] + bias[n0] : v[0],
                 bias ? v[R - 1] + bias[n0 + half] : v[R - 1]);
      } else {
#pragma unroll
        for (int r = 0; r < R; ++r)
          if (n0 + r < N)
            put_out(fu, out, out_bf, ldo, t, n0 + r, bias ? v[r] + bias[n0 + r] : v[r]);
      }
    }
  }
}

// Per-head products with short rows (K = 8 .. 256, a power of two: W_UK of the
// absorbed MLA query, K = qk_nope_head_dim), all heads' rows one [H N, K]
// matrix: a row takes K / 8 lanes (16 at K = 128), so a warp covers 256 / K
// rows a load and each lane keeps L rows' 16 bytes in flight; a block of 8
// warps covers 8 L 256 / K rows (64 at K = 128, L = 4: 128 blocks for the 9B's
// 16 x 512 rows instead of the plain GEMV's 1024 half-idle ones, so the next
// kernel finds room on the SMs). The row's lanes sum by shuffles in a fixed
// order (independent of T). x_early and trigger_first as in GemvFusion.
template <int T, int L>
__global__ void __launch_bounds__(256)
    head_gemv_short_kernel(const uint16_t* x, int64_t ldx, int64_t xhs, const uint16_t* w,
                           int64_t N, int K, int64_t rows, void* out, bool out_bf, int64_t ldo,
                           int64_t ohs, bool x_early, bool trigger_first) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int lpr = K / 8, rpw = 32 / lpr;  // lanes a row, rows a warp's load
  const int sub = lane / lpr, c = lane % lpr;
  const int64_t r0 = (static_cast<int64_t>(blockIdx.x) * 8 + warp) * L * rpw + sub;
  uint4 wv[L];
  // Each row's head and row in it (the last row's past the end), found before the wait.
  int hd[L], nr[L];
#pragma unroll
  for (int l = 0; l < L; ++l) {
    const int64_t g = r0 + l * rpw;
    wv[l] = g < rows ? ld_stream(w + g * K + c * 8) : make_uint4(0, 0, 0, 0);
    const int gc = static_cast<int>(min(g, rows - 1)), n32 = static_cast<int>(N);
    hd[l] = gc / n32;
    nr[l] = gc - hd[l] * n32;
  }
  if (!x_early) {
    if (trigger_first) pdl_trigger();
    pdl_wait();
  }
  pdl_trigger();
  float acc[L][T];
#pragma unroll
  for (int l = 0; l < L; ++l) {
    const int64_t h = hd[l];
    float w8[8];
    unpack8(wv[l], w8);
#pragma unroll
    for (int t = 0; t < T; ++t) {
      float x8[8];
      unpack8(*reinterpret_cast<const uint4*>(x + t * ldx + h * xhs + c * 8), x8);
      float a = 0.0f;
#pragma unroll
      for (int i = 0; i < 8; ++i) a = fmaf(w8[i], x8[i], a);
      acc[l][t] = a;
    }
  }
#pragma unroll
  for (int l = 0; l < L; ++l)
#pragma unroll
    for (int t = 0; t < T; ++t)
      for (int o = lpr / 2; o > 0; o >>= 1) acc[l][t] += __shfl_xor_sync(0xffffffffu, acc[l][t], o);
  if (x_early) pdl_wait();  // the stores (out may be the kernel before's)
  if (c != 0) return;
#pragma unroll
  for (int l = 0; l < L; ++l) {
    if (r0 + l * rpw >= rows) continue;
    const int64_t h = hd[l], n = nr[l];
#pragma unroll
    for (int t = 0; t < T; ++t) stf(out, t * ldo + h * ohs + n, out_bf, acc[l][t]);
  }
}

// The short-row kernel (R1SERVE_CUDA_HEAD_GEMV_SHORT=0 turns it off) and the
// per-head GEMVs triggering the next kernel before their own wait
// (R1SERVE_CUDA_TRIGGER_FIRST=1: W_UK the attention, W_UV o_proj, which then
// loads its weights during the attention; 2: W_UK only; 0: none): on by
// default since their first H100 runs (docs/performance-history.md, 2026-12-07
// sessions 4 and 5: mode 1 -14 to -17 us a batch-1 step against mode 2).
EnvSwitch g_head_short{"R1SERVE_CUDA_HEAD_GEMV_SHORT", 1};
bool head_gemv_short_enabled() {
  return g_head_short.on();
}
EnvSwitch g_trigger_first{"R1SERVE_CUDA_TRIGGER_FIRST", 1};

// Matrices up to R1SERVE_CUDA_PREFETCH_MB (default 0: none) are pulled into L2
// whole by bulk prefetches before pdl_wait, while the kernel before runs.
// Off by default since session 5: at 16 MB (the 9B's q_a + kv_a, q_b, W_UK,
// W_UV, o_proj and router) a batch-1 step took 13 us longer (H100, side by
// side: 1.591 vs 1.578 ms; the 7B, none of whose matrices is that small,
// unchanged), as every bulk prefetch did in that session: the attention's
// chain of small latency-bound kernels waits behind the prefetched bytes.
// Larger limits were slower still (the 7B's 26-33 MB projections: ~3 us an
// isolated GEMV).
int64_t prefetch_max_bytes() {
  static const int64_t limit = [] {
    const char* e = std::getenv("R1SERVE_CUDA_PREFETCH_MB");
    return (e != nullptr ? std::atoll(e) : int64_t{0}) << 20;
  }();
  return limit;
}

GemvPlan g_gemv_override{};  // split 0: use the heuristic

// R1SERVE_CUDA_GEMV_PLANS="NxK=sSrRuU,..." (e.g. "3584x18944=s8r1u4"): the plan
// of the GEMVs of those shapes, for side-by-side runs inside recorded steps
// (N counts all heads' rows of a per-head product). Parsed once.
struct ShapePlan {
  int64_t N, K;
  GemvPlan plan;
};
const std::vector<ShapePlan>& shape_plans() {
  static const std::vector<ShapePlan> plans = [] {
    std::vector<ShapePlan> v;
    const char* e = std::getenv("R1SERVE_CUDA_GEMV_PLANS");
    for (const char* p = e; p != nullptr && *p != '\0';) {
      long long n = 0, k = 0;
      int sp = 0, r = 0, u = 0, used = 0;
      if (std::sscanf(p, "%lldx%lld=s%dr%du%d%n", &n, &k, &sp, &r, &u, &used) != 5) break;
      GemvPlan g;
      g.split = sp;
      g.rows = r;
      g.unroll = u;
      v.push_back({n, k, g});
      p += used;
      if (*p == ',') ++p;
    }
    return v;
  }();
  return plans;
}

bool plan_valid(const GemvPlan& p, int64_t K, bool swiglu) {
  return (p.split == 1 || p.split == 2 || p.split == 4 || p.split == 8) &&
         (p.rows == 1 || p.rows == 2) && (p.unroll == 4 || p.unroll == 8) &&
         (!swiglu || p.rows == 2) && K % (8 * p.split) == 0;
}

// One launch's arguments (at most kGemvTokens tokens).
struct GemvArgs {
  const uint16_t* x;
  int64_t ldx;
  const uint16_t* w;
  int64_t N, K;
  const float* bias;
  bool swiglu;
  void* out;
  bool out_bf;
  int64_t ldo;
  int64_t H;  // > 1: per-head products (hs)
  HeadStrides hs;
  GemvFusion fu;
};

template <int T, int R, int U, bool SW, int NM>
void launch_one(const GemvArgs& a, int split, bool prefetch, dim3 grid, cudaStream_t s) {
  void (*kernel)(const uint16_t*, int64_t, const uint16_t*, int64_t, int64_t, int, const float*,
                 bool, void*, bool, int64_t, HeadStrides, GemvFusion) =
      dense_gemv_kernel<T, R, U, SW, NM>;
  size_t smem = 0;
  if constexpr (NM == 1) {
    // The normed rows live in dynamic shared memory; above the default 48 KB
    // the kernel must be allowed more, once per device (done before any graph
    // capture: the first step of a shape runs eagerly).
    smem = static_cast<size_t>(T) * static_cast<size_t>(a.K) * 2;
    if (smem > 48 * 1024) {
      static std::atomic<uint64_t> raised{0};  // one bit per device
      int dev = 0;
      R1_CUDA_OK(cudaGetDevice(&dev));
      const uint64_t bit = dev < 64 ? uint64_t{1} << dev : 0;
      if (bit == 0 || (raised.load(std::memory_order_acquire) & bit) == 0) {
        R1_CUDA_OK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        kNormMaxSmem));
        raised.fetch_or(bit, std::memory_order_acq_rel);
      }
    }
  }
  pdl_launch(kernel, grid, 256, smem, s, a.x, a.ldx, a.w, a.N, a.K, split, a.bias, prefetch, a.out,
             a.out_bf, a.ldo, a.hs, a.fu);
}

template <int T, int R, bool SW>
void launch_plan_u(const GemvArgs& a, const GemvPlan& p, bool prefetch, dim3 grid, cudaStream_t s) {
  const int nm = a.fu.norm_w == nullptr ? 0 : a.fu.norm_fold ? 2 : 1;
  auto go = [&](auto u) {
    constexpr int U = decltype(u)::value;
    if (nm == 2)
      launch_one<T, R, U, SW, 2>(a, p.split, prefetch, grid, s);
    else if (nm == 1)
      launch_one<T, R, U, SW, 1>(a, p.split, prefetch, grid, s);
    else
      launch_one<T, R, U, SW, 0>(a, p.split, prefetch, grid, s);
  };
  if (p.unroll == 8)
    go(std::integral_constant<int, 8>{});
  else
    go(std::integral_constant<int, 4>{});
}

// H > 1: H independent products (per-head), blocks planned for all H x N rows.
// The plan depends only on the shape (not on T or the fusion), so a fused
// launch reduces every output in the same order as the plain one.
template <int T>
void launch_gemv_t(const GemvArgs& a, int sms, cudaStream_t s) {
  GemvPlan p = gemv_plan(a.N * a.H, a.K, a.swiglu, sms);
  if (g_gemv_override.split != 0 && plan_valid(g_gemv_override, a.K, a.swiglu)) p = g_gemv_override;
  for (const ShapePlan& sp : shape_plans())
    if (sp.N == a.N * a.H && sp.K == a.K && plan_valid(sp.plan, a.K, a.swiglu)) p = sp.plan;
  const bool prefetch = a.H * a.N * a.K * 2 * (a.swiglu ? 2 : 1) <= prefetch_max_bytes();
  const bool rope = a.fu.rope_positions != nullptr;  // two rows per warp, N / 2 units
  const int64_t outs_per_block = 8 / p.split * (a.swiglu || rope ? 1 : p.rows);
  const int64_t units = rope ? a.N / 2 : a.N;
  const dim3 grid(static_cast<unsigned>((units + outs_per_block - 1) / outs_per_block),
                  static_cast<unsigned>(a.H));
  if (a.swiglu)
    launch_plan_u<T, 2, true>(a, p, prefetch, grid, s);
  else if (rope || p.rows == 2)
    launch_plan_u<T, 2, false>(a, p, prefetch, grid, s);
  else
    launch_plan_u<T, 1, false>(a, p, prefetch, grid, s);
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

void launch_gemv_chunks(const GemvArgs& a, int64_t T, cudaStream_t s) {
  const int sms = sm_count();
  const size_t osz = a.out_bf ? 2 : 4, rsz = a.fu.residual_bf ? 2 : 4;
  for (int64_t t0 = 0; t0 < T; t0 += kGemvTokens) {
    const int n = static_cast<int>(std::min<int64_t>(kGemvTokens, T - t0));
    GemvArgs c = a;
    c.x = a.x + t0 * a.ldx;
    if (a.out != nullptr) c.out = static_cast<char*>(a.out) + static_cast<size_t>(t0 * a.ldo) * osz;
    if (a.fu.residual != nullptr)
      c.fu.residual = static_cast<char*>(a.fu.residual) + static_cast<size_t>(t0 * a.fu.ldr) * rsz;
    switch (n) {
      case 1:
        launch_gemv_t<1>(c, sms, s);
        break;
      case 2:
        launch_gemv_t<2>(c, sms, s);
        break;
      case 3:
        launch_gemv_t<3>(c, sms, s);
        break;
      default:
        launch_gemv_t<4>(c, sms, s);
        break;
    }
  }
}

}  // namespace

GemvPlan gemv_plan(int64_t N, int64_t K, bool swiglu, int sms) {
  // From the plan sweep over the benchmark models' shapes (bench_cuda with
  // R1_BENCH_GEMV=1, H200, docs/performance-history.md): split each row across warps
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

bool dense_gemv_norm_ok(int64_t K, const void* x, int64_t ldx, const float* norm_w, bool fold) {
  return K > 0 && K % 8 == 0 && (fold || K <= kNormMaxK) && ldx % 8 == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(norm_w) % 16 == 0;
}

void launch_dense_gemv_fused(const uint16_t* x, int64_t ldx, const uint16_t* w, int64_t N,
                             int64_t K, int64_t T, const float* bias, bool swiglu,
                             const GemvFusion& fusion, void* out, bool out_bf, int64_t ldo,
                             cudaStream_t s) {
  R1_CUDA_REQUIRE(K % 8 == 0 && ldx % 8 == 0,
                  "dense gemv: K and the row stride must be multiples of 8");
  R1_CUDA_REQUIRE(!(swiglu && bias), "dense gemv: no bias with SwiGLU");
  R1_CUDA_REQUIRE(!(swiglu && fusion.residual), "dense gemv: no residual add with SwiGLU");
  R1_CUDA_REQUIRE(fusion.residual != nullptr || out != nullptr, "dense gemv: no output");
  R1_CUDA_REQUIRE(
      fusion.w2 == nullptr ||
          (!swiglu && !bias && fusion.residual == nullptr && fusion.rope_positions == nullptr &&
           fusion.out2 != nullptr && fusion.n_first > 0 && fusion.n_first < N),
      "dense gemv: a second matrix only with plain (or normed) products");
  R1_CUDA_REQUIRE(!fusion.x_early || (fusion.residual == nullptr &&
                                      (fusion.norm_w == nullptr || fusion.norm_fold)),
                  "dense gemv: an early input takes no residual or norm prologue");
  R1_CUDA_REQUIRE(
      fusion.norm_w == nullptr || dense_gemv_norm_ok(K, x, ldx, fusion.norm_w, fusion.norm_fold),
      "dense gemv: the norm needs K % 8 == 0 (the prologue K <= 8192), aligned x and weights");
  R1_CUDA_REQUIRE(
      fusion.rope_positions == nullptr ||
          (!swiglu && fusion.residual == nullptr && out_bf && fusion.rope_d > 0 &&
           fusion.rope_d % 2 == 0 && N == (fusion.rope_nh + 2 * fusion.rope_nkv) * fusion.rope_d),
      "dense gemv: the rope epilogue needs whole q/k/v heads and BF16 outputs");
  if (T == 0 || N == 0) return;
  launch_gemv_chunks(
      GemvArgs{x, ldx, w, N, K, bias, swiglu, out, out_bf, ldo, 1, HeadStrides{}, fusion}, T, s);
}

int head_gemv_trigger_first_mode() {
  return g_trigger_first.value();
}

void set_head_gemv_short(bool on) {
  g_head_short.set(on ? 1 : 0);
}
void set_head_gemv_trigger_first_mode(int mode) {
  g_trigger_first.set(mode);
}

void launch_head_gemv(const uint16_t* x, int64_t ldx, int64_t x_head_stride, const uint16_t* w,
                      int64_t H, int64_t N, int64_t K, int64_t T, bool x_early, void* out,
                      bool out_bf, int64_t ldo, int64_t out_head_stride, cudaStream_t s,
                      bool trigger_first) {
  R1_CUDA_REQUIRE(K % 8 == 0 && ldx % 8 == 0 && x_head_stride % 8 == 0,
                  "head gemv: K and the strides must be multiples of 8");
  R1_CUDA_REQUIRE(!trigger_first || T <= kGemvTokens, "head gemv: trigger first in one launch");
  if (T == 0 || N == 0 || H == 0) return;
  if (T <= kGemvTokens && K >= 8 && K <= 256 && (K & (K - 1)) == 0 && H * N < (int64_t{1} << 31) &&
      head_gemv_short_enabled()) {
    const int64_t rows = H * N, rpw = 256 / K;
    // Rows in flight a lane: 4, or fewer while that leaves SMs without a block.
    int L = 4;
    while (L > 1 && (rows + 8 * L * rpw - 1) / (8 * L * rpw) < sm_count()) L /= 2;
    const unsigned blocks = static_cast<unsigned>((rows + 8 * L * rpw - 1) / (8 * L * rpw));
    auto go = [&](auto tc, auto lc) {
      constexpr int TT = decltype(tc)::value, LL = decltype(lc)::value;
      pdl_launch(head_gemv_short_kernel<TT, LL>, blocks, 256, 0, s, x, ldx, x_head_stride, w, N,
                 static_cast<int>(K), rows, out, out_bf, ldo, out_head_stride, x_early,
                 trigger_first);
    };
    auto with_l = [&](auto tc) {
      if (L == 4)
        go(tc, std::integral_constant<int, 4>{});
      else if (L == 2)
        go(tc, std::integral_constant<int, 2>{});
      else
        go(tc, std::integral_constant<int, 1>{});
    };
    switch (T) {
      case 1:
        with_l(std::integral_constant<int, 1>{});
        break;
      case 2:
        with_l(std::integral_constant<int, 2>{});
        break;
      case 3:
        with_l(std::integral_constant<int, 3>{});
        break;
      default:
        with_l(std::integral_constant<int, 4>{});
        break;
    }
    R1_CUDA_LAUNCHED();
    return;
  }
  GemvFusion f;
  f.x_early = x_early;
  f.trigger_first = trigger_first;
  launch_gemv_chunks(GemvArgs{x, ldx, w, N, K, nullptr, false, out, out_bf, ldo, H,
                              HeadStrides{x_head_stride, N * K, out_head_stride}, f},
                     T, s);
}

}  // namespace r1::backend::cuda
