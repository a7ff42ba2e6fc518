// Rotary embeddings in place on F32 or BF16 rows: interleaved pairs (2i, 2i+1)
// for DeepSeek MLA or NeoX halves for the dense models, with YaRN's amplitude
// factor folded into cos/sin. Angles as the CPU computes them: pos * inv_freq in F32.
#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

__global__ void rope_kernel(void* x, bool bf, int64_t row, const int32_t* positions,
                            const float* inv_freq, int64_t half, float factor, bool interleaved,
                            int64_t heads, int64_t head_stride, int64_t offset, int64_t T) {
  const int64_t n = T * heads * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = idx / (heads * half), h = (idx / half) % heads, i = idx % half;
    const float angle = static_cast<float>(positions[t]) * inv_freq[i];
    float sn, cs;
    sincosf(angle, &sn, &cs);
    cs *= factor;
    sn *= factor;
    const int64_t base = t * row + h * head_stride + offset;
    const int64_t ia = interleaved ? base + 2 * i : base + i;
    const int64_t ib = interleaved ? base + 2 * i + 1 : base + i + half;
    const float x0 = ldf(x, ia, bf), x1 = ldf(x, ib, bf);
    stf(x, ia, bf, x0 * cs - x1 * sn);
    stf(x, ib, bf, x1 * cs + x0 * sn);
  }
}

}  // namespace

void launch_rope(void* x, bool bf, int64_t row, const int32_t* positions, int64_t T,
                 const float* inv_freq, int64_t half, float attention_factor, bool interleaved,
                 int64_t heads, int64_t head_stride, int64_t offset, cudaStream_t s) {
  R1_CUDA_REQUIRE(offset + 2 * half <= head_stride || heads == 1, "rope: rotary window past the head");
  R1_CUDA_REQUIRE((heads - 1) * head_stride + offset + 2 * half <= row, "rope: rotary window past the row");
  const int64_t n = T * heads * half;
  if (n == 0) return;
  rope_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, bf, row, positions, inv_freq, half, attention_factor,
                                               interleaved, heads, head_stride, offset, T);
  R1_CUDA_LAUNCHED();
}

}  // namespace r1::backend::cuda
