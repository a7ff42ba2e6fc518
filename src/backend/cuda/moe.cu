// DeepSeekMoE kernels: the router in one kernel (a warp per token: scores,
// correction bias for selection only, group-limited top-k, renormalize,
// scale), a counting sort of (token, slot) pairs by expert, GEMVs that read
// only the experts that have tokens (small batches), and gather/combine around
// the grouped cuBLAS GEMMs (large batches, see gemm.cc).
#include <algorithm>
#include <cfloat>
#include <cstdio>
#include <cstdlib>

#include "backend/cuda/common.cuh"
#include "backend/cuda/route.cuh"

namespace r1::backend::cuda {
namespace {

constexpr int kMaxExperts = kRouteMaxExperts;
constexpr int kRouteWarps = 4;

// The router of T tokens, a warp each (route.cuh's route_token).
template <int PER>
__global__ void route_kernel(RouteArgs a, int T, int32_t* ids, float* weights) {
  __shared__ RouteScratch<PER> scratch[kRouteWarps];
  const int warp = threadIdx.x >> 5;
  const int t = blockIdx.x * kRouteWarps + warp;
  float bv[PER];  // the bias is a constant: read before pdl_wait
  route_bias<PER>(a, bv);
  pdl_wait();
  pdl_trigger();
  if (t >= T) return;
  route_token<PER>(a, bv, t, scratch[warp], ids + static_cast<int64_t>(t) * a.K,
                   weights + static_cast<int64_t>(t) * a.K);
}

__global__ void sort_kernel(const int32_t* ids, int P, int E, int32_t* offsets, int32_t* active,
                            int4* slot_info, int32_t* sorted_pair, int32_t* pos_of_pair) {
  pdl_wait();
  pdl_trigger();
  extern __shared__ int smem[];
  int* cnt = smem;
  int* cursor = smem + E;
  for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  for (int p = threadIdx.x; p < P; p += blockDim.x) atomicAdd(&cnt[ids[p]], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int acc = 0, n = 0;
    for (int e = 0; e < E; ++e) {
      offsets[e] = acc;
      cursor[e] = acc;
      if (cnt[e] > 0) {
        slot_info[n] = make_int4(e, acc, acc + cnt[e], 1);
        active[1 + n++] = e;
      }
      acc += cnt[e];
    }
    offsets[E] = acc;
    active[0] = n;
    for (int y = n; y < min(P, E); ++y) slot_info[y] = make_int4(0, 0, 0, 0);
  }
  __syncthreads();
  for (int p = threadIdx.x; p < P; p += blockDim.x) {
    const int pos = atomicAdd(&cursor[ids[p]], 1);
    sorted_pair[pos] = p;
    pos_of_pair[p] = pos;
  }
}

__device__ __forceinline__ void load_x8(const void* x, bool x_bf, int64_t idx, float* f) {
  if (x_bf) {
    unpack8(*reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(x) + idx), f);
  } else {
    const float4 a = *reinterpret_cast<const float4*>(static_cast<const float*>(x) + idx);
    const float4 b = *reinterpret_cast<const float4*>(static_cast<const float*>(x) + idx + 4);
    f[0] = a.x;
    f[1] = a.y;
    f[2] = a.z;
    f[3] = a.w;
    f[4] = b.x;
    f[5] = b.y;
    f[6] = b.z;
    f[7] = b.w;
  }
}

constexpr int kChunk = 4;  // tokens per pass over a weight row
// Loads in flight per lane and row (U x 16 bytes) of the expert GEMVs: the gate/up
// GEMV keeps a whole 2048-wide row in flight (U = 8), the down GEMV U = 4 unless
// R1SERVE_CUDA_MOE_UNROLL="gate_up,down" says otherwise (for side-by-side runs).
struct MoeUnroll {
  int gate_up = 8, down = 4;
};
MoeUnroll moe_unroll() {
  static const MoeUnroll u = [] {
    MoeUnroll r;
    if (const char* e = std::getenv("R1SERVE_CUDA_MOE_UNROLL")) {
      int a = 0, b = 0;
      if (std::sscanf(e, "%d,%d", &a, &b) == 2) {
        r.gate_up = a == 4 ? 4 : 8;
        r.down = b == 8 ? 8 : 4;
      }
    }
    return r;
  }();
  return u;
}

// A warp per output i of expert blockIdx.y: gate row i and up row I + i.
template <int U>
__global__ void gate_up_gemv_kernel(const void* x, bool x_bf, int64_t H, const uint16_t* gate_up,
                                    int64_t I, const int4* slot_info, const int32_t* sorted_pair,
                                    int64_t K, uint16_t* act) {
  pdl_wait();
  pdl_trigger();
  // One load names this grid row's expert and its pairs (written by the sort kernel).
  const int4 info = slot_info[blockIdx.y];
  if (info.w == 0) return;
  const int e = info.x, begin = info.y, end = info.z;
  const int lane = threadIdx.x & 31;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (i >= I) return;
  const uint16_t* wg = gate_up + (static_cast<int64_t>(e) * 2 * I + i) * H;
  const uint16_t* wu = wg + I * H;
  for (int p0 = begin; p0 < end; p0 += kChunk) {
    const int n = min(kChunk, end - p0);
    int64_t xrow[kChunk];
#pragma unroll
    for (int q = 0; q < kChunk; ++q)
      xrow[q] = q < n ? static_cast<int64_t>(sorted_pair[p0 + q] / K) * H : 0;
    float ag[kChunk] = {}, au[kChunk] = {};
    for (int64_t kb = lane * 8; kb < H; kb += 256 * U) {
      // All weight loads of this stretch first (2 x U x 16 bytes in flight), then the
      // FMAs.
      uint4 gv[U], uv[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t k0 = kb + 256 * u;
        gv[u] = k0 < H ? ld_stream(wg + k0) : make_uint4(0, 0, 0, 0);
        uv[u] = k0 < H ? ld_stream(wu + k0) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t k0 = kb + 256 * u;
        if (k0 < H) {
          float g8[8], u8[8];
          unpack8(gv[u], g8);
          unpack8(uv[u], u8);
#pragma unroll
          for (int q = 0; q < kChunk; ++q) {
            if (q < n) {
              float x8[8];
              load_x8(x, x_bf, xrow[q] + k0, x8);
#pragma unroll
              for (int c = 0; c < 8; ++c) {
                ag[q] = fmaf(g8[c], x8[c], ag[q]);
                au[q] = fmaf(u8[c], x8[c], au[q]);
              }
            }
          }
        }
      }
    }
#pragma unroll
    for (int q = 0; q < kChunk; ++q) {
      const float g = warp_sum(ag[q]), u = warp_sum(au[q]);
      if (lane == 0 && q < n)
        reinterpret_cast<__nv_bfloat16*>(act)[static_cast<int64_t>(p0 + q) * I + i] =
            __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
    }
  }
}

template <int U>
__global__ void down_gemv_kernel(const uint16_t* act, const uint16_t* down, int64_t H, int64_t I,
                                 const int4* slot_info, float* y) {
  pdl_wait();
  pdl_trigger();
  const int4 info = slot_info[blockIdx.y];
  if (info.w == 0) return;
  const int e = info.x, begin = info.y, end = info.z;
  const int lane = threadIdx.x & 31;
  const int64_t h = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (h >= H) return;
  const uint16_t* w = down + (static_cast<int64_t>(e) * H + h) * I;
  for (int p0 = begin; p0 < end; p0 += kChunk) {
    const int n = min(kChunk, end - p0);
    float acc[kChunk] = {};
    for (int64_t kb = lane * 8; kb < I; kb += 256 * U) {
      uint4 wv[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t k0 = kb + 256 * u;
        wv[u] = k0 < I ? ld_stream(w + k0) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t k0 = kb + 256 * u;
        if (k0 < I) {
          float w8[8];
          unpack8(wv[u], w8);
#pragma unroll
          for (int q = 0; q < kChunk; ++q) {
            if (q < n) {
              float a8[8];
              unpack8(*reinterpret_cast<const uint4*>(act + static_cast<int64_t>(p0 + q) * I + k0),
                      a8);
#pragma unroll
              for (int c = 0; c < 8; ++c) acc[q] = fmaf(w8[c], a8[c], acc[q]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int q = 0; q < kChunk; ++q) {
      const float v = warp_sum(acc[q]);
      if (lane == 0 && q < n) y[static_cast<int64_t>(p0 + q) * H + h] = v;
    }
  }
}

__global__ void gather_kernel(const void* x, bool x_bf, int64_t H, const int32_t* sorted_pair,
                              int64_t K, uint16_t* xg) {
  pdl_wait();
  pdl_trigger();
  const int64_t pos = blockIdx.x;
  const int64_t row = sorted_pair[pos] / K;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
    stf(xg, pos * H + i, true, ldf(x, row * H + i, x_bf));
}

// 16-byte copies of BF16 rows (H % 8 == 0).
__global__ void gather_vec_kernel(const uint16_t* x, int64_t H, const int32_t* sorted_pair,
                                  int64_t K, uint16_t* xg) {
  pdl_wait();
  pdl_trigger();
  const int64_t pos = blockIdx.x;
  const int64_t row = sorted_pair[pos] / K;
  for (int64_t i = threadIdx.x * 8; i < H; i += blockDim.x * 8)
    *reinterpret_cast<uint4*>(xg + pos * H + i) = *reinterpret_cast<const uint4*>(x + row * H + i);
}

// BF16 y and out, 8 columns per thread; the same additions in the same order as combine_kernel.
__global__ void combine_vec_kernel(const uint16_t* y, const int32_t* pos_of_pair, const float* w,
                                   int64_t T, int64_t K, int64_t H, const uint16_t* add,
                                   uint16_t* out, uint16_t* res) {
  pdl_wait();
  pdl_trigger();
  const int64_t n = T * (H / 8);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = idx / (H / 8), h = (idx % (H / 8)) * 8;
    float acc[8] = {};
    for (int64_t j = 0; j < K; ++j) {
      const int64_t pos = pos_of_pair ? pos_of_pair[t * K + j] : t * K + j;
      const float wj = w[t * K + j];
      float v[8];
      unpack8(*reinterpret_cast<const uint4*>(y + pos * H + h), v);
#pragma unroll
      for (int c = 0; c < 8; ++c) acc[c] = fmaf(wj, v[c], acc[c]);
    }
    if (add) {  // out = bf16(bf16(sum) + add), what combine then add compute
      float a8[8];
      unpack8(*reinterpret_cast<const uint4*>(add + t * H + h), a8);
#pragma unroll
      for (int c = 0; c < 8; ++c) acc[c] = round_bf16(acc[c]) + a8[c];
    }
    if (res) {  // res += out's value (BF16), as add_kernel adds a written out
      float r8[8];
      unpack8(*reinterpret_cast<const uint4*>(res + t * H + h), r8);
#pragma unroll
      for (int c = 0; c < 8; ++c) acc[c] = r8[c] + round_bf16(acc[c]);
    }
    uint4 o;
    uint32_t* ow = reinterpret_cast<uint32_t*>(&o);
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const __nv_bfloat162 b = __floats2bfloat162_rn(acc[2 * c], acc[2 * c + 1]);
      ow[c] = *reinterpret_cast<const uint32_t*>(&b);
    }
    *reinterpret_cast<uint4*>((res ? res : out) + t * H + h) = o;
  }
}

__global__ void combine_kernel(const void* y, bool y_bf, const int32_t* pos_of_pair, const float* w,
                               int64_t T, int64_t K, int64_t H, const void* add, bool add_bf,
                               void* out, bool out_bf, void* res, bool res_bf) {
  pdl_wait();
  pdl_trigger();
  const int64_t n = T * H;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = idx / H, h = idx % H;
    float acc = 0.0f;
    for (int64_t j = 0; j < K; ++j) {
      const int64_t pos = pos_of_pair ? pos_of_pair[t * K + j] : t * K + j;
      acc = fmaf(w[t * K + j], ldf(y, pos * H + h, y_bf), acc);  // as moe_stream.cu
    }
    // With `add`: out = sum rounded to out's dtype, plus add (what combine then add compute).
    if (add) acc = (out_bf ? round_bf16(acc) : acc) + ldf(add, idx, add_bf);
    if (res)  // res += out's value, as add_kernel adds a written out
      stf(res, idx, res_bf, ldf(res, idx, res_bf) + (out_bf ? round_bf16(acc) : acc));
    else
      stf(out, idx, out_bf, acc);
  }
}

}  // namespace

bool route_args_ok(const RouteArgs& r) {
  return r.E >= 1 && r.E <= kMaxExperts && r.K >= 1 && r.K <= kRouteMaxTopK && r.K <= r.E &&
         r.n_group >= 1 && r.n_group <= 32 && r.E % r.n_group == 0 && r.topk_group >= 1 &&
         r.topk_group <= r.n_group;
}

void launch_moe_route(const RouteArgs& r, int64_t T, int32_t* ids, float* weights, cudaStream_t s) {
  R1_CUDA_REQUIRE(route_args_ok(r), "moe_route: at most 256 experts, top-k <= 32, groups");
  if (T == 0) return;
  const unsigned blocks = static_cast<unsigned>((T + kRouteWarps - 1) / kRouteWarps);
  auto* kernel = r.E <= 64 ? route_kernel<2> : route_kernel<8>;
  pdl_launch(kernel, blocks, 32 * kRouteWarps, 0, s, r, static_cast<int>(T), ids, weights);
  R1_CUDA_LAUNCHED();
}

void launch_moe_sort(const int32_t* ids, int64_t P, int64_t E, int32_t* offsets, int32_t* active,
                     int32_t* slot_info, int32_t* sorted_pair, int32_t* pos_of_pair,
                     cudaStream_t s) {
  R1_CUDA_REQUIRE(E <= 4096 && P < (int64_t{1} << 30), "moe_sort: sizes");
  R1_CUDA_REQUIRE(reinterpret_cast<uintptr_t>(slot_info) % 16 == 0,
                  "moe_sort: slot_info alignment");
  pdl_launch(sort_kernel, 1, 1024, static_cast<size_t>(2 * E) * sizeof(int), s, ids,
             static_cast<int>(P), static_cast<int>(E), offsets, active,
             reinterpret_cast<int4*>(slot_info), sorted_pair, pos_of_pair);
  R1_CUDA_LAUNCHED();
}

void launch_moe_gate_up_gemv(const void* x, bool x_bf, int64_t H, const uint16_t* gate_up,
                             int64_t E, int64_t I, const int32_t* slot_info,
                             const int32_t* sorted_pair, int64_t P, int64_t K, uint16_t* act,
                             cudaStream_t s) {
  R1_CUDA_REQUIRE(H % 8 == 0, "moe gemv: hidden size must be a multiple of 8");
  // One grid row per expert that can be active (at most P): idle experts cost no blocks.
  dim3 grid(static_cast<unsigned>((I + 7) / 8), static_cast<unsigned>(std::min(P, E)));
  const auto* info = reinterpret_cast<const int4*>(slot_info);
  if (moe_unroll().gate_up == 4)
    pdl_launch(gate_up_gemv_kernel<4>, grid, 256, 0, s, x, x_bf, H, gate_up, I, info, sorted_pair,
               K, act);
  else
    pdl_launch(gate_up_gemv_kernel<8>, grid, 256, 0, s, x, x_bf, H, gate_up, I, info, sorted_pair,
               K, act);
  R1_CUDA_LAUNCHED();
}

void launch_moe_down_gemv(const uint16_t* act, const uint16_t* down, int64_t E, int64_t H,
                          int64_t I, const int32_t* slot_info, int64_t P, float* y,
                          cudaStream_t s) {
  R1_CUDA_REQUIRE(I % 8 == 0, "moe gemv: intermediate size must be a multiple of 8");
  dim3 grid(static_cast<unsigned>((H + 7) / 8), static_cast<unsigned>(std::min(P, E)));
  const auto* info = reinterpret_cast<const int4*>(slot_info);
  if (moe_unroll().down == 8)
    pdl_launch(down_gemv_kernel<8>, grid, 256, 0, s, act, down, H, I, info, y);
  else
    pdl_launch(down_gemv_kernel<4>, grid, 256, 0, s, act, down, H, I, info, y);
  R1_CUDA_LAUNCHED();
}

void launch_moe_gather(const void* x, bool x_bf, int64_t H, const int32_t* sorted_pair, int64_t P,
                       int64_t K, uint16_t* xg, cudaStream_t s) {
  if (P == 0) return;
  if (x_bf && H % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0)
    pdl_launch(gather_vec_kernel, static_cast<unsigned>(P), 256, 0, s,
               static_cast<const uint16_t*>(x), H, sorted_pair, K, xg);
  else
    pdl_launch(gather_kernel, static_cast<unsigned>(P), 256, 0, s, x, x_bf, H, sorted_pair, K, xg);
  R1_CUDA_LAUNCHED();
}

void launch_moe_combine(const void* y, bool y_bf, const int32_t* pos_of_pair, const float* w,
                        int64_t T, int64_t K, int64_t H, const void* add, bool add_bf, void* out,
                        bool out_bf, cudaStream_t s, void* res, bool res_bf) {
  if (T * H == 0) return;
  if (y_bf && out_bf && H % 8 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
      (add == nullptr || (add_bf && reinterpret_cast<uintptr_t>(add) % 16 == 0)) &&
      (res == nullptr || (res_bf && reinterpret_cast<uintptr_t>(res) % 16 == 0)))
    pdl_launch(combine_vec_kernel, grid_for(T * H / 8, 256), 256, 0, s,
               static_cast<const uint16_t*>(y), pos_of_pair, w, T, K, H,
               static_cast<const uint16_t*>(add), static_cast<uint16_t*>(out),
               static_cast<uint16_t*>(res));
  else
    pdl_launch(combine_kernel, grid_for(T * H, 256), 256, 0, s, y, y_bf, pos_of_pair, w, T, K, H,
               add, add_bf, out, out_bf, res, res_bf);
  R1_CUDA_LAUNCHED();
}

}  // namespace r1::backend::cuda
