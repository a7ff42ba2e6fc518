// Elementwise and normalization kernels: embedding lookup, RMSNorm (with the
// residual add fused), add, SwiGLU, row gathers, per-head copies, KV-cache
// writes, bias and dtype conversion. Launchers follow the kernels.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

__global__ void embedding_kernel(const void* table, bool table_bf, const int32_t* ids, int64_t H,
                                 void* out, bool out_bf) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x;
  const int64_t row = ids[t];
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
    stf(out, t * H + i, out_bf, ldf(table, row * H + i, table_bf));
}

// One block per row; the sum of squares in F32, then a second pass that scales.
__global__ void rms_norm_kernel(void* x, bool x_bf, int64_t ldx, const void* add, bool add_bf,
                                int64_t ld_add, const float* w, int64_t n, float eps, void* out,
                                bool out_bf, int64_t ldo) {
  pdl_wait();
  pdl_trigger();
  const int64_t r = blockIdx.x;
  __shared__ float partial[32];
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float v = ldf(x, r * ldx + i, x_bf);
    if (add) {
      v += ldf(add, r * ld_add + i, add_bf);
      stf(x, r * ldx + i, x_bf, v);
      v = ldf(x, r * ldx + i, x_bf);  // the residual as stored
    }
    ss += v * v;
  }
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.0f;
    v = warp_sum(v);
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  const float inv = 1.0f / sqrtf(partial[0] / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    stf(out, r * ldo + i, out_bf, ldf(x, r * ldx + i, x_bf) * inv * w[i]);
}

// BF16 rows of n <= 256 x 8 x NV values, 16-byte aligned: one pass, each
// thread keeping its NV vectors of 8 in registers between the sum of squares
// and the scaling (the generic kernel above reads each row twice).
template <int NV>
__global__ void __launch_bounds__(256)
    rms_norm_vec_kernel(uint16_t* x, int64_t ldx, const uint16_t* add, int64_t ld_add,
                        const float* w, int n, float eps, uint16_t* out, int64_t ldo, bool early) {
  if (!early) pdl_wait();  // early (no add): x is read before it, only the stores wait
  pdl_trigger();
  const int64_t r = blockIdx.x;
  __shared__ float partial[8];
  float v[NV][8];
  float ss = 0.0f;
#pragma unroll
  for (int u = 0; u < NV; ++u) {
    const int i = (u * 256 + threadIdx.x) * 8;
    if (i < n) {
      uint4 xv = *reinterpret_cast<const uint4*>(x + r * ldx + i);
      if (add) {
        const uint4 av = *reinterpret_cast<const uint4*>(add + r * ld_add + i);
        uint32_t* xw = reinterpret_cast<uint32_t*>(&xv);
        const uint32_t* aw = reinterpret_cast<const uint32_t*>(&av);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float lo = __uint_as_float(xw[k] << 16) + __uint_as_float(aw[k] << 16);
          const float hi =
              __uint_as_float(xw[k] & 0xffff0000u) + __uint_as_float(aw[k] & 0xffff0000u);
          const __nv_bfloat162 b = __floats2bfloat162_rn(lo, hi);
          xw[k] = *reinterpret_cast<const uint32_t*>(&b);
        }
        *reinterpret_cast<uint4*>(x + r * ldx + i) = xv;  // the residual as stored
      }
      const uint32_t* xw = reinterpret_cast<const uint32_t*>(&xv);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        v[u][2 * k] = __uint_as_float(xw[k] << 16);
        v[u][2 * k + 1] = __uint_as_float(xw[k] & 0xffff0000u);
        ss = fmaf(v[u][2 * k], v[u][2 * k], ss);
        ss = fmaf(v[u][2 * k + 1], v[u][2 * k + 1], ss);
      }
    }
  }
  const float tot = block_sum_256(ss, partial);
  const float inv = 1.0f / sqrtf(tot / static_cast<float>(n) + eps);
  if (early) pdl_wait();
#pragma unroll
  for (int u = 0; u < NV; ++u) {
    const int i = (u * 256 + threadIdx.x) * 8;
    if (i < n) {
      const float4 w0 = *reinterpret_cast<const float4*>(w + i),
                   w1 = *reinterpret_cast<const float4*>(w + i + 4);
      const float wv[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
      uint4 o;
      uint32_t* ow = reinterpret_cast<uint32_t*>(&o);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const __nv_bfloat162 b = __floats2bfloat162_rn(v[u][2 * k] * inv * wv[2 * k],
                                                       v[u][2 * k + 1] * inv * wv[2 * k + 1]);
        ow[k] = *reinterpret_cast<const uint32_t*>(&b);
      }
      *reinterpret_cast<uint4*>(out + r * ldo + i) = o;
    }
  }
}

__global__ void gather_rows_kernel(const char* src, const int32_t* rows, int64_t row_bytes,
                                   char* out) {
  pdl_wait();
  pdl_trigger();
  const int64_t i = blockIdx.x;
  const char* s = src + static_cast<int64_t>(rows[i]) * row_bytes;
  char* d = out + i * row_bytes;
  if (row_bytes % 16 == 0) {
    for (int64_t b = threadIdx.x * 16; b < row_bytes; b += blockDim.x * 16)
      *reinterpret_cast<int4*>(d + b) = *reinterpret_cast<const int4*>(s + b);
  } else {
    for (int64_t b = threadIdx.x; b < row_bytes; b += blockDim.x) d[b] = s[b];
  }
}

__global__ void add_kernel(const void* a, bool a_bf, const void* b, bool b_bf, void* out,
                           bool out_bf, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    stf(out, i, out_bf, ldf(a, i, a_bf) + ldf(b, i, b_bf));
}

// Four values of a BF16 or F32 array (8- or 16-byte aligned) to floats and back.
template <bool BF>
__device__ __forceinline__ void ld4(const void* p, int64_t i, float* f) {
  if constexpr (BF) {
    const uint2 u = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(p) + i);
    f[0] = __uint_as_float(u.x << 16);
    f[1] = __uint_as_float(u.x & 0xffff0000u);
    f[2] = __uint_as_float(u.y << 16);
    f[3] = __uint_as_float(u.y & 0xffff0000u);
  } else {
    const float4 v = *reinterpret_cast<const float4*>(static_cast<const float*>(p) + i);
    f[0] = v.x;
    f[1] = v.y;
    f[2] = v.z;
    f[3] = v.w;
  }
}
template <bool BF>
__device__ __forceinline__ void st4(void* p, int64_t i, const float* f) {
  if constexpr (BF) {
    const __nv_bfloat162 a = __floats2bfloat162_rn(f[0], f[1]),
                         b = __floats2bfloat162_rn(f[2], f[3]);
    uint2 u;
    u.x = *reinterpret_cast<const uint32_t*>(&a);
    u.y = *reinterpret_cast<const uint32_t*>(&b);
    *reinterpret_cast<uint2*>(static_cast<uint16_t*>(p) + i) = u;
  } else {
    *reinterpret_cast<float4*>(static_cast<float*>(p) + i) = make_float4(f[0], f[1], f[2], f[3]);
  }
}
// add_kernel four values a thread (n % 4 == 0, aligned operands): the same sums and roundings.
template <bool ABF, bool BBF, bool OBF>
__global__ void add_vec_kernel(const void* a, const void* b, void* out, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = 4 * (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x); i < n;
       i += 4 * static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float x[4], y[4];
    ld4<ABF>(a, i, x);
    ld4<BBF>(b, i, y);
#pragma unroll
    for (int c = 0; c < 4; ++c) x[c] += y[c];
    st4<OBF>(out, i, x);
  }
}

__global__ void silu_mul_kernel(const void* gu, bool gu_bf, int64_t rows, int64_t inter, void* out,
                                bool out_bf) {
  pdl_wait();
  pdl_trigger();
  const int64_t n = rows * inter;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / inter, c = i % inter;
    const float g = ldf(gu, r * 2 * inter + c, gu_bf),
                u = ldf(gu, r * 2 * inter + inter + c, gu_bf);
    stf(out, i, out_bf, g / (1.0f + expf(-g)) * u);
  }
}

// BF16 in and out, 8 values per thread (inter % 8 == 0): the same arithmetic as silu_mul_kernel.
__global__ void silu_mul_vec_kernel(const uint16_t* gu, int64_t rows, int64_t inter,
                                    uint16_t* out) {
  pdl_wait();
  pdl_trigger();
  const int64_t n = rows * inter / 8;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / (inter / 8), c = (i % (inter / 8)) * 8;
    const uint4 gv = *reinterpret_cast<const uint4*>(gu + r * 2 * inter + c);
    const uint4 uv = *reinterpret_cast<const uint4*>(gu + r * 2 * inter + inter + c);
    const uint32_t* gw = reinterpret_cast<const uint32_t*>(&gv);
    const uint32_t* uw = reinterpret_cast<const uint32_t*>(&uv);
    uint4 o;
    uint32_t* ow = reinterpret_cast<uint32_t*>(&o);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float g0 = __uint_as_float(gw[k] << 16), g1 = __uint_as_float(gw[k] & 0xffff0000u);
      const float u0 = __uint_as_float(uw[k] << 16), u1 = __uint_as_float(uw[k] & 0xffff0000u);
      const __nv_bfloat162 b =
          __floats2bfloat162_rn(g0 / (1.0f + expf(-g0)) * u0, g1 / (1.0f + expf(-g1)) * u1);
      ow[k] = *reinterpret_cast<const uint32_t*>(&b);
    }
    *reinterpret_cast<uint4*>(out + r * inter + c) = o;
  }
}

__global__ void copy_heads_kernel(const void* src, bool src_bf, int64_t src_row, int64_t src_stride,
                                  int64_t src_off, void* dst, bool dst_bf, int64_t dst_row,
                                  int64_t dst_stride, int64_t dst_off, int64_t width, int64_t heads,
                                  int64_t T) {
  pdl_wait();
  pdl_trigger();
  const int64_t n = T * heads * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / (heads * width), h = (i / width) % heads, c = i % width;
    stf(dst, t * dst_row + h * dst_stride + dst_off + c, dst_bf,
        ldf(src, t * src_row + h * src_stride + src_off + c, src_bf));
  }
}

__global__ void cache_write_kernel(const void* src, bool src_bf, int64_t width,
                                   const int32_t* slots, void* cache, bool cache_bf) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t];
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x)
    stf(cache, slot * width + i, cache_bf, ldf(src, t * width + i, src_bf));
}

__global__ void add_bias_kernel(void* out, bool out_bf, const float* bias, int64_t rows,
                                int64_t n) {
  pdl_wait();
  pdl_trigger();
  const int64_t total = rows * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    stf(out, i, out_bf, ldf(out, i, out_bf) + bias[i % n]);
}

__global__ void convert_kernel(const void* src, bool src_bf, void* dst, bool dst_bf, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    stf(dst, i, dst_bf, ldf(src, i, src_bf));
}

// (bv, bi) takes (ov, oi) when that is the better candidate of a first maximum:
// larger, or equal at a lower index; index V is "none".
__device__ __forceinline__ void first_max_merge(float& bv, int64_t& bi, float ov, int64_t oi,
                                                int64_t V) {
  if (oi != V && (bi == V || ov > bv || (ov == bv && oi < bi))) {
    bv = ov;
    bi = oi;
  }
}

// Every lane's (bv, bi) becomes the warp's first maximum.
__device__ __forceinline__ void warp_first_max(float& bv, int64_t& bi, int64_t V) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    first_max_merge(bv, bi, ov, oi, V);
  }
}

// One block per row: the first maximum (value, then lowest index), as std::max_element.
__global__ void __launch_bounds__(1024)
    argmax_rows_kernel(const float* x, int64_t V, int32_t* ids) {
  pdl_wait();
  pdl_trigger();
  const float* r = x + static_cast<int64_t>(blockIdx.x) * V;
  float bv = -INFINITY;
  int64_t bi = V;  // none yet
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float v = r[i];
    if (bi == V || v > bv) {  // strided ascending: the first maximum of this thread's share
      bv = v;
      bi = i;
    }
  }
  warp_first_max(bv, bi, V);
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    const int nw = blockDim.x >> 5;
    bv = lane < nw ? sv[lane] : -INFINITY;
    bi = lane < nw ? si[lane] : V;
    warp_first_max(bv, bi, V);
    if (lane == 0) ids[blockIdx.x] = static_cast<int32_t>(bi == V ? 0 : bi);
  }
}

// The first maximum of rows spread over chunks: block (g, row) scans chunk g
// of the row (float4 loads where rows are 16-byte aligned) and writes its first
// maximum to the partials [row][G]; the last block of the row to finish (a
// per-row counter it resets) picks the best partial in chunk order, ties to the
// lower index, so the result is the one-block kernel's. One block per row read
// the 7B's 152064 logits at ~20 us; G blocks share the read.
__global__ void __launch_bounds__(256)
    argmax_chunks_kernel(const float* x, int64_t V, int64_t chunk, float* part_v, int32_t* part_i,
                         int32_t* counters, int32_t* ids) {
  pdl_wait();
  pdl_trigger();
  const int G = static_cast<int>(gridDim.x), g = static_cast<int>(blockIdx.x);
  const int64_t row = blockIdx.y;
  const float* r = x + row * V;
  const int64_t lo = g * chunk, hi = min(V, lo + chunk);
  float bv = -INFINITY;
  int64_t bi = V;  // none yet
  auto see = [&](float v, int64_t i) {
    if (bi == V || v > bv) {
      bv = v;
      bi = i;
    }
  };
  if (V % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0) {  // chunk % 4 == 0
    for (int64_t i = lo + 4 * threadIdx.x; i < hi; i += 4 * blockDim.x) {
      const float4 v = __ldcg(reinterpret_cast<const float4*>(r + i));
      see(v.x, i);
      see(v.y, i + 1);
      see(v.z, i + 2);
      see(v.w, i + 3);
    }
  } else {
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) see(__ldcg(r + i), i);
  }
  auto merge = [&](float ov, int64_t oi) { first_max_merge(bv, bi, ov, oi, V); };
  warp_first_max(bv, bi, V);
  __shared__ float sv[8];
  __shared__ int64_t si[8];
  __shared__ bool last;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) merge(sv[w], si[w]);
    part_v[row * G + g] = bv;
    part_i[row * G + g] = static_cast<int32_t>(bi);
    __threadfence();
    last = atomicAdd(&counters[row], 1) == G - 1;
  }
  __syncthreads();
  if (!last || threadIdx.x != 0) return;
  __threadfence();
  bv = -INFINITY;
  bi = V;
  for (int z = 0; z < G; ++z) merge(__ldcg(part_v + row * G + z), __ldcg(part_i + row * G + z));
  ids[row] = static_cast<int32_t>(bi == V ? 0 : bi);
  counters[row] = 0;
}

int row_threads(int64_t n) {
  return n >= 1024 ? 256 : (n >= 256 ? 128 : 64);
}

}  // namespace

namespace {
std::atomic<bool> g_pdl{[] {
  const char* e = std::getenv("R1SERVE_CUDA_PDL");
  return e == nullptr || std::string(e) != "0";
}()};
}  // namespace

bool pdl_enabled() {
  return g_pdl.load(std::memory_order_relaxed);
}
void set_pdl_enabled(bool on) {
  g_pdl.store(on, std::memory_order_relaxed);
}

void launch_embedding(const void* table, bool table_bf, int64_t vocab, const int32_t* ids,
                      int64_t T, int64_t H, void* out, bool out_bf, cudaStream_t s) {
  R1_CUDA_REQUIRE(table && ids && out && T > 0 && H > 0, "embedding: bad arguments");
  pdl_launch(embedding_kernel, static_cast<unsigned>(T), row_threads(H), 0, s, table, table_bf, ids,
             H, out, out_bf);
  R1_CUDA_LAUNCHED();
}

void launch_rms_norm(void* x, bool x_bf, int64_t ldx, const void* add, bool add_bf, int64_t ld_add,
                     const float* w, int64_t n, float eps, int64_t rows, void* out, bool out_bf,
                     int64_t ldo, cudaStream_t s, bool x_early) {
  R1_CUDA_REQUIRE(n > 0 && n <= ldx && n <= ldo && w, "rms_norm: bad widths");
  if (rows == 0) return;
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(w) % 16 == 0 && ldx % 8 == 0 && ldo % 8 == 0 &&
                       (!add || (reinterpret_cast<uintptr_t>(add) % 16 == 0 && ld_add % 8 == 0));
  if (x_bf && out_bf && (!add || add_bf) && aligned && n % 8 == 0 && n <= 256 * 8 * 4) {
    auto* xp = static_cast<uint16_t*>(x);
    auto* ap = static_cast<const uint16_t*>(add);
    auto* op = static_cast<uint16_t*>(out);
    const int ni = static_cast<int>(n);
    const unsigned grid = static_cast<unsigned>(rows);
    const bool early = x_early && add == nullptr;
    if (n <= 2048)
      pdl_launch(rms_norm_vec_kernel<1>, grid, 256, 0, s, xp, ldx, ap, ld_add, w, ni, eps, op, ldo,
                 early);
    else if (n <= 4096)
      pdl_launch(rms_norm_vec_kernel<2>, grid, 256, 0, s, xp, ldx, ap, ld_add, w, ni, eps, op, ldo,
                 early);
    else
      pdl_launch(rms_norm_vec_kernel<4>, grid, 256, 0, s, xp, ldx, ap, ld_add, w, ni, eps, op, ldo,
                 early);
    R1_CUDA_LAUNCHED();
    return;
  }
  pdl_launch(rms_norm_kernel, static_cast<unsigned>(rows), row_threads(n), 0, s, x, x_bf, ldx, add,
             add_bf, ld_add, w, n, eps, out, out_bf, ldo);
  R1_CUDA_LAUNCHED();
}

int argmax_chunks(int64_t V) {
  // Chunks of at least 4096 values (16 per thread), at most 64 of them.
  return static_cast<int>(std::clamp<int64_t>(V / 4096, 1, 64));
}

void launch_argmax_rows(const float* x, int64_t n, int64_t V, int32_t* ids, float* part_v,
                        int32_t* part_i, int32_t* counters, cudaStream_t s) {
  R1_CUDA_REQUIRE(V > 0 && V < (int64_t{1} << 31), "argmax_rows: vocabulary size");
  if (n == 0) return;
  const int G = argmax_chunks(V);
  if (G == 1 || part_v == nullptr || n > 65535) {
    pdl_launch(argmax_rows_kernel, static_cast<unsigned>(n), 1024, 0, s, x, V, ids);
  } else {
    const int64_t chunk = ((V + G - 1) / G + 3) / 4 * 4;
    pdl_launch(argmax_chunks_kernel, dim3(static_cast<unsigned>(G), static_cast<unsigned>(n)), 256,
               0, s, x, V, chunk, part_v, part_i, counters, ids);
  }
  R1_CUDA_LAUNCHED();
}

void launch_gather_rows(const void* src, const int32_t* rows, int64_t n, int64_t row_bytes,
                        void* out, cudaStream_t s) {
  if (n == 0) return;
  pdl_launch(gather_rows_kernel, static_cast<unsigned>(n), 128, 0, s, static_cast<const char*>(src),
             rows, row_bytes, static_cast<char*>(out));
  R1_CUDA_LAUNCHED();
}

void launch_add(const void* a, bool a_bf, const void* b, bool b_bf, void* out, bool out_bf,
                int64_t n, cudaStream_t s) {
  if (n == 0) return;
  auto aligned = [](const void* p, bool bf) {
    return reinterpret_cast<uintptr_t>(p) % (bf ? 8 : 16) == 0;
  };
  if (n % 4 == 0 && aligned(a, a_bf) && aligned(b, b_bf) && aligned(out, out_bf)) {
    using K = void (*)(const void*, const void*, void*, int64_t);
    static constexpr K kernels[8] = {
        add_vec_kernel<false, false, false>, add_vec_kernel<false, false, true>,
        add_vec_kernel<false, true, false>,  add_vec_kernel<false, true, true>,
        add_vec_kernel<true, false, false>,  add_vec_kernel<true, false, true>,
        add_vec_kernel<true, true, false>,   add_vec_kernel<true, true, true>};
    pdl_launch(kernels[(a_bf ? 4 : 0) + (b_bf ? 2 : 0) + (out_bf ? 1 : 0)], grid_for(n / 4, 256),
               256, 0, s, a, b, out, n);
    R1_CUDA_LAUNCHED();
    return;
  }
  pdl_launch(add_kernel, grid_for(n, 256), 256, 0, s, a, a_bf, b, b_bf, out, out_bf, n);
  R1_CUDA_LAUNCHED();
}

void launch_silu_mul(const void* gu, bool gu_bf, int64_t rows, int64_t inter, void* out,
                     bool out_bf, cudaStream_t s) {
  if (rows * inter == 0) return;
  if (gu_bf && out_bf && inter % 8 == 0 && reinterpret_cast<uintptr_t>(gu) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(out) % 16 == 0) {
    pdl_launch(silu_mul_vec_kernel, grid_for(rows * inter / 8, 256), 256, 0, s,
               static_cast<const uint16_t*>(gu), rows, inter, static_cast<uint16_t*>(out));
    R1_CUDA_LAUNCHED();
    return;
  }
  pdl_launch(silu_mul_kernel, grid_for(rows * inter, 256), 256, 0, s, gu, gu_bf, rows, inter, out,
             out_bf);
  R1_CUDA_LAUNCHED();
}

void launch_copy_heads(const void* src, bool src_bf, int64_t src_row, int64_t src_stride,
                       int64_t src_off, void* dst, bool dst_bf, int64_t dst_row, int64_t dst_stride,
                       int64_t dst_off, int64_t width, int64_t heads, int64_t T, cudaStream_t s) {
  const int64_t n = T * heads * width;
  if (n == 0) return;
  R1_CUDA_REQUIRE(src_off + width <= src_stride || heads == 1, "copy_heads: source window");
  pdl_launch(copy_heads_kernel, grid_for(n, 256), 256, 0, s, src, src_bf, src_row, src_stride,
             src_off, dst, dst_bf, dst_row, dst_stride, dst_off, width, heads, T);
  R1_CUDA_LAUNCHED();
}

void launch_cache_write(const void* src, bool src_bf, int64_t T, int64_t width,
                        const int32_t* slots, int64_t num_slots, void* cache, bool cache_bf,
                        cudaStream_t s) {
  if (T == 0) return;
  pdl_launch(cache_write_kernel, static_cast<unsigned>(T), row_threads(width), 0, s, src, src_bf,
             width, slots, cache, cache_bf);
  R1_CUDA_LAUNCHED();
}

void launch_add_bias(void* out, bool out_bf, const float* bias, int64_t rows, int64_t n,
                     cudaStream_t s) {
  if (rows * n == 0) return;
  pdl_launch(add_bias_kernel, grid_for(rows * n, 256), 256, 0, s, out, out_bf, bias, rows, n);
  R1_CUDA_LAUNCHED();
}

void launch_convert(const void* src, bool src_bf, void* dst, bool dst_bf, int64_t n,
                    cudaStream_t s) {
  if (n == 0) return;
  pdl_launch(convert_kernel, grid_for(n, 256), 256, 0, s, src, src_bf, dst, dst_bf, n);
  R1_CUDA_LAUNCHED();
}

}  // namespace r1::backend::cuda
