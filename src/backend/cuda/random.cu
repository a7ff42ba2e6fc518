// Seeded random weights made on the GPU (and the profiler's stream hold) (--load-format dummy),
// bit-identical to core/random.h's host generator: SplitMix64 at a counter, the top 53 bits as a
// double, one rounding to float, then an unfused multiply and add.
#include <algorithm>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

__global__ void fill_random_kernel(void* dst, bool bf, int64_t n, uint64_t state, float scale,
                                   float offset) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint64_t z = state + (static_cast<uint64_t>(i) + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const double d =
        __dadd_rn(__dmul_rn(static_cast<double>(z >> 11), 2.0 / 9007199254740992.0), -1.0);
    const float u = __double2float_rn(d);
    const float v = __fadd_rn(offset, __fmul_rn(scale, u));
    if (bf)
      static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(v);
    else
      static_cast<float*>(dst)[i] = v;
  }
}

__global__ void hold_kernel(int64_t ns) {
  uint64_t t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (static_cast<int64_t>(t - t0) < ns);
}

}  // namespace

void launch_hold(int64_t ns, cudaStream_t s) {
  hold_kernel<<<1, 1, 0, s>>>(ns);
  R1_CUDA_LAUNCHED();
}

void launch_fill_random(void* dst, bool bf, int64_t n, uint64_t state, float scale, float offset,
                        cudaStream_t s) {
  if (n == 0) return;
  const unsigned blocks = std::min<unsigned>(grid_for(n, 256), 65536);
  fill_random_kernel<<<blocks, 256, 0, s>>>(dst, bf, n, state, scale, offset);
  R1_CUDA_LAUNCHED();
}

}  // namespace r1::backend::cuda
