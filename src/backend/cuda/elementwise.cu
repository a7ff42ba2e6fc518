// Elementwise and normalization kernels: embedding lookup, RMSNorm (with the
// residual add fused), add, SwiGLU, row gathers, per-head copies, KV-cache
// writes, bias and dtype conversion. Launchers follow the kernels.
#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

__global__ void embedding_kernel(const void* table, bool table_bf, const int32_t* ids, int64_t H,
                                 void* out, bool out_bf) {
  const int64_t t = blockIdx.x;
  const int64_t row = ids[t];
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
    stf(out, t * H + i, out_bf, ldf(table, row * H + i, table_bf));
}

// One block per row; the sum of squares in F32, then a second pass that scales.
__global__ void rms_norm_kernel(void* x, bool x_bf, int64_t ldx, const void* add, bool add_bf,
                                int64_t ld_add, const float* w, int64_t n, float eps, void* out,
                                bool out_bf, int64_t ldo) {
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

__global__ void gather_rows_kernel(const char* src, const int32_t* rows, int64_t row_bytes, char* out) {
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

__global__ void add_kernel(const void* a, bool a_bf, const void* b, bool b_bf, void* out, bool out_bf,
                           int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    stf(out, i, out_bf, ldf(a, i, a_bf) + ldf(b, i, b_bf));
}

__global__ void silu_mul_kernel(const void* gu, bool gu_bf, int64_t rows, int64_t inter, void* out,
                                bool out_bf) {
  const int64_t n = rows * inter;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / inter, c = i % inter;
    const float g = ldf(gu, r * 2 * inter + c, gu_bf), u = ldf(gu, r * 2 * inter + inter + c, gu_bf);
    stf(out, i, out_bf, g / (1.0f + expf(-g)) * u);
  }
}

__global__ void copy_heads_kernel(const void* src, bool src_bf, int64_t src_row, int64_t src_stride,
                                  int64_t src_off, void* dst, bool dst_bf, int64_t dst_row,
                                  int64_t dst_stride, int64_t dst_off, int64_t width, int64_t heads,
                                  int64_t T) {
  const int64_t n = T * heads * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / (heads * width), h = (i / width) % heads, c = i % width;
    stf(dst, t * dst_row + h * dst_stride + dst_off + c, dst_bf,
        ldf(src, t * src_row + h * src_stride + src_off + c, src_bf));
  }
}

__global__ void cache_write_kernel(const void* src, bool src_bf, int64_t width, const int32_t* slots,
                                   void* cache, bool cache_bf) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t];
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x)
    stf(cache, slot * width + i, cache_bf, ldf(src, t * width + i, src_bf));
}

__global__ void add_bias_kernel(void* out, bool out_bf, const float* bias, int64_t rows, int64_t n) {
  const int64_t total = rows * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    stf(out, i, out_bf, ldf(out, i, out_bf) + bias[i % n]);
}

__global__ void convert_kernel(const void* src, bool src_bf, void* dst, bool dst_bf, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    stf(dst, i, dst_bf, ldf(src, i, src_bf));
}

int row_threads(int64_t n) { return n >= 1024 ? 256 : (n >= 256 ? 128 : 64); }

}  // namespace

void launch_embedding(const void* table, bool table_bf, int64_t vocab, const int32_t* ids, int64_t T,
                      int64_t H, void* out, bool out_bf, cudaStream_t s) {
  R1_CUDA_REQUIRE(table && ids && out && T > 0 && H > 0, "embedding: bad arguments");
  embedding_kernel<<<static_cast<unsigned>(T), row_threads(H), 0, s>>>(table, table_bf, ids, H, out, out_bf);
  R1_CUDA_LAUNCHED();
}

void launch_rms_norm(void* x, bool x_bf, int64_t ldx, const void* add, bool add_bf, int64_t ld_add,
                     const float* w, int64_t n, float eps, int64_t rows, void* out, bool out_bf,
                     int64_t ldo, cudaStream_t s) {
  R1_CUDA_REQUIRE(n > 0 && n <= ldx && n <= ldo && w, "rms_norm: bad widths");
  if (rows == 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(rows), row_threads(n), 0, s>>>(x, x_bf, ldx, add, add_bf, ld_add,
                                                                        w, n, eps, out, out_bf, ldo);
  R1_CUDA_LAUNCHED();
}

void launch_gather_rows(const void* src, const int32_t* rows, int64_t n, int64_t row_bytes, void* out,
                        cudaStream_t s) {
  if (n == 0) return;
  gather_rows_kernel<<<static_cast<unsigned>(n), 128, 0, s>>>(static_cast<const char*>(src), rows, row_bytes,
                                                              static_cast<char*>(out));
  R1_CUDA_LAUNCHED();
}

void launch_add(const void* a, bool a_bf, const void* b, bool b_bf, void* out, bool out_bf, int64_t n,
                cudaStream_t s) {
  if (n == 0) return;
  add_kernel<<<grid_for(n, 256), 256, 0, s>>>(a, a_bf, b, b_bf, out, out_bf, n);
  R1_CUDA_LAUNCHED();
}

void launch_silu_mul(const void* gu, bool gu_bf, int64_t rows, int64_t inter, void* out, bool out_bf,
                     cudaStream_t s) {
  if (rows * inter == 0) return;
  silu_mul_kernel<<<grid_for(rows * inter, 256), 256, 0, s>>>(gu, gu_bf, rows, inter, out, out_bf);
  R1_CUDA_LAUNCHED();
}

void launch_copy_heads(const void* src, bool src_bf, int64_t src_row, int64_t src_stride,
                       int64_t src_off, void* dst, bool dst_bf, int64_t dst_row, int64_t dst_stride,
                       int64_t dst_off, int64_t width, int64_t heads, int64_t T, cudaStream_t s) {
  const int64_t n = T * heads * width;
  if (n == 0) return;
  R1_CUDA_REQUIRE(src_off + width <= src_stride || heads == 1, "copy_heads: source window");
  copy_heads_kernel<<<grid_for(n, 256), 256, 0, s>>>(src, src_bf, src_row, src_stride, src_off, dst, dst_bf,
                                                     dst_row, dst_stride, dst_off, width, heads, T);
  R1_CUDA_LAUNCHED();
}

void launch_cache_write(const void* src, bool src_bf, int64_t T, int64_t width, const int32_t* slots,
                        int64_t num_slots, void* cache, bool cache_bf, cudaStream_t s) {
  if (T == 0) return;
  cache_write_kernel<<<static_cast<unsigned>(T), row_threads(width), 0, s>>>(src, src_bf, width, slots,
                                                                            cache, cache_bf);
  R1_CUDA_LAUNCHED();
}

void launch_add_bias(void* out, bool out_bf, const float* bias, int64_t rows, int64_t n, cudaStream_t s) {
  if (rows * n == 0) return;
  add_bias_kernel<<<grid_for(rows * n, 256), 256, 0, s>>>(out, out_bf, bias, rows, n);
  R1_CUDA_LAUNCHED();
}

void launch_convert(const void* src, bool src_bf, void* dst, bool dst_bf, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  convert_kernel<<<grid_for(n, 256), 256, 0, s>>>(src, src_bf, dst, dst_bf, n);
  R1_CUDA_LAUNCHED();
}

}  // namespace r1::backend::cuda
