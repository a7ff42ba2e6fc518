// Kernels of the F32 validation mode: plain, obviously-correct F32 arithmetic
// (F32 activations, BF16 weights widened exactly, F32 KV cache, F32
// accumulation) so the GPU path can be compared with the CPU backend to
// float rounding, without the BF16 roundings of the serving kernels. Slow by
// design; only the tiny test models run through them.
#include <cfloat>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

// A warp per output (b, t, n): out = x[b, t, :K] . W[b, n, :K].
__global__ void ref_gemm_kernel(const void* x, bool x_bf, int64_t ldx, int64_t x_bstride,
                                const uint16_t* w, int64_t w_bstride, int64_t N, int64_t K,
                                void* out, bool out_bf, int64_t ldo, int64_t o_bstride) {
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (n >= N) return;
  const int64_t t = blockIdx.y, b = blockIdx.z;
  const int64_t xo = b * x_bstride + t * ldx;
  const uint16_t* wr = w + b * w_bstride + n * K;
  float acc = 0.0f;
  for (int64_t k = lane; k < K; k += 32) acc = fmaf(ldf(x, xo + k, x_bf), bf2f(wr[k]), acc);
  acc = warp_sum(acc);
  if (lane == 0) stf(out, b * o_bstride + t * ldo + n, out_bf, acc);
}

// act[p, i] = silu(Wg_e[i] . x[p / K]) * (Wu_e[i] . x[p / K]), e = ids[p]; a warp per (p, i).
__global__ void ref_moe_gate_up_kernel(const void* x, bool x_bf, int64_t H, const uint16_t* gate_up,
                                       int64_t I, const int32_t* ids, int64_t K, float* act) {
  const int lane = threadIdx.x & 31;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (i >= I) return;
  const int64_t p = blockIdx.y;
  const int64_t e = ids[p];
  const uint16_t* wg = gate_up + (e * 2 * I + i) * H;
  const uint16_t* wu = wg + I * H;
  const int64_t xo = (p / K) * H;
  float g = 0.0f, u = 0.0f;
  for (int64_t k = lane; k < H; k += 32) {
    const float xv = ldf(x, xo + k, x_bf);
    g = fmaf(xv, bf2f(wg[k]), g);
    u = fmaf(xv, bf2f(wu[k]), u);
  }
  g = warp_sum(g);
  u = warp_sum(u);
  if (lane == 0) act[p * I + i] = g / (1.0f + expf(-g)) * u;
}

// y[p, h] = Wd_e[h] . act[p]; a warp per (p, h).
__global__ void ref_moe_down_kernel(const float* act, const uint16_t* down, int64_t H, int64_t I,
                                    const int32_t* ids, float* y) {
  const int lane = threadIdx.x & 31;
  const int64_t h = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (h >= H) return;
  const int64_t p = blockIdx.y;
  const uint16_t* w = down + (static_cast<int64_t>(ids[p]) * H + h) * I;
  float acc = 0.0f;
  for (int64_t k = lane; k < I; k += 32) acc = fmaf(act[p * I + k], bf2f(w[k]), acc);
  acc = warp_sum(acc);
  if (lane == 0) y[p * H + h] = acc;
}

// A block per (token, head): scores of all its keys in shared memory, an exact
// softmax, then the weighted sum of values.
__global__ void ref_attention_kernel(RefAttnArgs a) {
  extern __shared__ float sc[];
  __shared__ float red[32];
  const int t = blockIdx.x, h = blockIdx.y;
  int s = 0;
  while (s + 1 < a.num_seqs && a.query_start[s + 1] <= t) ++s;
  const int kvh = h / a.G;
  const int nkeys = a.positions[t] + 1;
  const int32_t* table = a.block_tables + static_cast<int64_t>(s) * a.max_blocks;
  const int64_t qo = static_cast<int64_t>(t) * a.q_row + static_cast<int64_t>(h) * a.q_head_stride;
  const int64_t koff = static_cast<int64_t>(kvh) * a.k_head_off;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int j = warp; j < nkeys; j += nwarps) {
    const int64_t slot =
        static_cast<int64_t>(table[j / a.block_size]) * a.block_size + j % a.block_size;
    float d = 0.0f;
    for (int c = lane; c < a.dk; c += 32)
      d = fmaf(ldf(a.q, qo + c, a.q_bf), ldf(a.k, slot * a.k_row + koff + c, a.kv_bf), d);
    d = warp_sum(d);
    if (lane == 0) sc[j] = d * a.scale;
  }
  __syncthreads();
  float m = -INFINITY;
  for (int j = threadIdx.x; j < nkeys; j += blockDim.x) m = fmaxf(m, sc[j]);
  m = warp_max(m);
  if (lane == 0) red[warp] = m;
  __syncthreads();
  m = -INFINITY;
  for (int w = 0; w < nwarps; ++w) m = fmaxf(m, red[w]);
  __syncthreads();
  float l = 0.0f;
  for (int j = threadIdx.x; j < nkeys; j += blockDim.x) {
    const float p = expf(sc[j] - m);
    sc[j] = p;
    l += p;
  }
  l = warp_sum(l);
  if (lane == 0) red[warp] = l;
  __syncthreads();
  l = 0.0f;
  for (int w = 0; w < nwarps; ++w) l += red[w];
  const float inv = 1.0f / l;
  const int64_t oo =
      static_cast<int64_t>(t) * a.out_row + static_cast<int64_t>(h) * a.out_head_stride;
  for (int c = threadIdx.x; c < a.dv; c += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < nkeys; ++j) {
      const int64_t slot =
          static_cast<int64_t>(table[j / a.block_size]) * a.block_size + j % a.block_size;
      acc = fmaf(sc[j], ldf(a.v, slot * a.v_row + koff + c, a.kv_bf), acc);
    }
    stf(a.out, oo + c, a.out_bf, acc * inv);
  }
}

}  // namespace

void launch_ref_gemm(const void* x, bool x_bf, int64_t ldx, int64_t x_bstride, const uint16_t* w,
                     int64_t w_bstride, int64_t N, int64_t K, int64_t T, int64_t batches, void* out,
                     bool out_bf, int64_t ldo, int64_t o_bstride, cudaStream_t s) {
  if (T == 0 || N == 0 || batches == 0) return;
  R1_CUDA_REQUIRE(T < 65536 && batches < 65536, "ref gemm: at most 65535 rows and batches");
  dim3 grid(static_cast<unsigned>((N + 7) / 8), static_cast<unsigned>(T),
            static_cast<unsigned>(batches));
  ref_gemm_kernel<<<grid, 256, 0, s>>>(x, x_bf, ldx, x_bstride, w, w_bstride, N, K, out, out_bf,
                                       ldo, o_bstride);
  R1_CUDA_LAUNCHED();
}

void launch_ref_moe(const void* x, bool x_bf, int64_t H, const uint16_t* gate_up,
                    const uint16_t* down, int64_t I, const int32_t* ids, int64_t P, int64_t K,
                    float* act, float* y, cudaStream_t s) {
  if (P == 0) return;
  R1_CUDA_REQUIRE(P < 65536, "ref moe: at most 65535 pairs");
  ref_moe_gate_up_kernel<<<dim3(static_cast<unsigned>((I + 7) / 8), static_cast<unsigned>(P)), 256,
                           0, s>>>(x, x_bf, H, gate_up, I, ids, K, act);
  R1_CUDA_LAUNCHED();
  ref_moe_down_kernel<<<dim3(static_cast<unsigned>((H + 7) / 8), static_cast<unsigned>(P)), 256, 0,
                        s>>>(act, down, H, I, ids, y);
  R1_CUDA_LAUNCHED();
}

void launch_ref_attention(const RefAttnArgs& a, cudaStream_t s) {
  if (a.T == 0) return;
  const size_t smem = static_cast<size_t>(a.max_keys) * 4;
  R1_CUDA_REQUIRE(smem <= 200 * 1024, "validation attention: at most 51200 keys");
  R1_CUDA_REQUIRE(a.T < (1 << 30) && a.num_heads < 65536, "validation attention: sizes");
  static bool configured = false;
  if (!configured) {
    R1_CUDA_OK(cudaFuncSetAttribute(ref_attention_kernel,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    configured = true;
  }
  ref_attention_kernel<<<dim3(static_cast<unsigned>(a.T), static_cast<unsigned>(a.num_heads)), 256,
                         smem, s>>>(a);
  R1_CUDA_LAUNCHED();
}

}  // namespace r1::backend::cuda
