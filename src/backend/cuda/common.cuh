// Device helpers shared by the kernels: loads/stores of F32 or BF16 values
// chosen by a run-time flag (uniform per launch), and warp reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "backend/cuda/kernels.h"

namespace r1::backend::cuda {

// Programmatic dependent launch (Hopper). A kernel started with pdl_launch may
// begin while the kernel before it in the stream is still running. It must call
// pdl_wait() before its first early return and before it reads or writes any
// buffer another kernel touches; only loads of constant data (weights) may come
// first. pdl_wait() returns once every earlier kernel has finished and its
// writes are visible; it is a no-op in a kernel launched without the attribute.
// pdl_trigger() lets the next kernel start launching (it still waits for this
// one to finish before touching data).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// v, read here: a kernel argument used only after pdl_wait is otherwise read
// from the (cold) constant cache there, on the critical path.
__device__ __forceinline__ int pinned(int v) {
  asm volatile("mov.b32 %0, %0;" : "+r"(v));
  return v;
}
__device__ __forceinline__ int64_t pinned(int64_t v) {
  asm volatile("mov.b64 %0, %0;" : "+l"(v));
  return v;
}
__device__ __forceinline__ float pinned(float v) {
  asm volatile("mov.b32 %0, %0;" : "+f"(v));
  return v;
}
template <typename T>
__device__ __forceinline__ T* pinned(T* p) {
  uint64_t v = reinterpret_cast<uint64_t>(p);
  asm volatile("mov.b64 %0, %0;" : "+l"(v));
  return reinterpret_cast<T*>(v);
}
// The global timer (ns), for checkpoints.
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
// Starts moving `bytes` (a multiple of 16, 16-byte aligned) of global memory into L2.
__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

// The partial states a decode-attention token at position `pos` leaves (its
// keys 0 .. pos in splits of `kps`; with the own-key helper on, one more from a
// spare split block): mla_attention.cu's kernel and the merging GEMV agree on it.
__host__ __device__ inline int mla_split_parts(int pos, int splits, int kps, bool helper_on) {
  const int active = splits < (pos + kps) / kps ? splits : (pos + kps) / kps;
  return active + (helper_on && active < splits ? 1 : 0);
}

// Host: the kernels pdl_launch has put on stream s from this thread (a stream
// is fed by one thread). Callers compare two readings to know how many kernels
// lie between a buffer's writer and a reader (the pdl_wait rule's "two launches
// back"). Up to 8 streams a thread are told apart; readings of others are 0.
inline uint64_t& pdl_launch_count(cudaStream_t s) {
  struct Slot {
    cudaStream_t stream;
    uint64_t n;
  };
  thread_local Slot slots[8] = {};
  thread_local int used = 0;
  thread_local uint64_t untracked = 0;
  for (int i = 0; i < used; ++i)
    if (slots[i].stream == s) return slots[i].n;
  if (used < 8) {
    slots[used] = {s, 0};
    return slots[used++].n;
  }
  untracked = 0;
  return untracked;
}

// pdl_launch with the grid's y dimension in thread-block clusters of `cluster_y`
// blocks (1: no cluster attribute).
template <typename... KArgs, typename... Args>
void pdl_launch_cluster(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                        cudaStream_t s, unsigned cluster_y, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  attr[1].id = cudaLaunchAttributeClusterDimension;
  attr[1].val.clusterDim.x = 1;
  attr[1].val.clusterDim.y = cluster_y;
  attr[1].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = cluster_y > 1 ? 2 : 1;
  R1_CUDA_OK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
  ++pdl_launch_count(s);
}

// Host: whether one cluster of `cluster_y` blocks of `kernel` (`threads`
// each, `smem` bytes of dynamic shared memory) can be placed on this GPU at
// all (a small MIG slice may not hold one). Callers ask once and keep the
// answer; a refusal is an answer.
template <typename... KArgs>
bool cluster_placeable(void (*kernel)(KArgs...), unsigned cluster_y, unsigned threads,
                       size_t smem) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(1, cluster_y, 1);
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 1;
  attr[0].val.clusterDim.y = cluster_y;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) != cudaSuccess) clusters = 0;
  (void)cudaGetLastError();
  return clusters >= 1;
}

// Launches `kernel` with programmatic stream serialization allowed (unless
// turned off by set_pdl_enabled(false)); the kernel must follow the pdl_wait rule.
template <typename... KArgs, typename... Args>
void pdl_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                Args&&... args) {
  pdl_launch_cluster(kernel, grid, block, smem, s, 1, std::forward<Args>(args)...);
}

__device__ __forceinline__ float ldf(const void* p, int64_t i, bool bf) {
  return bf ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i])
            : static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void stf(void* p, int64_t i, bool bf, float v) {
  if (bf)
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else
    static_cast<float*>(p)[i] = v;
}
__device__ __forceinline__ float bf2f(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// An L2 policy for data read once (weights): its lines are evicted first, so a
// step's streamed weights do not push out activations, the KV cache, or the
// next kernel's prefetched weights. (Pure: the compiler may hoist it.)
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t pol;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  return pol;
}

// 16 bytes of weights that are read once: read-only path, not kept in L1,
// evicted first from L2.
__device__ __forceinline__ uint4 ld_stream(const uint16_t* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p), "l"(evict_first_policy()));
  return r;
}

// A counter other blocks update, read with acquire order at GPU scope (the
// writes they fenced before updating it are visible after this load).
__device__ __forceinline__ int ld_acquire(const int32_t* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Eight BF16 weights (16 bytes) to floats.
__device__ __forceinline__ void unpack8(const uint4& u, float* f) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ float round_bf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}

// ---- tensor-core helpers (mma.sync m16n8k16, BF16 in, F32 accumulate) ----
__device__ __forceinline__ uint32_t ld32(const uint16_t* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// 16 bytes global -> shared without passing through registers, so all of a
// thread's copies are in flight at once; zero-fills when `valid` is false.
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src),
               "r"(valid ? 16 : 0));
}
// cp_async16 of weights read once (evicted first from L2, as ld_stream).
__device__ __forceinline__ void cp_async16_stream(void* smem_dst, const void* gmem_src) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(dst),
               "l"(gmem_src), "l"(evict_first_policy()));
}
// Element offset of 16-byte chunk c of row r in a [rows][64] BF16 shared-memory
// tile; the XOR swizzle puts the 8 rows an ldmatrix reads in 8 different bank
// groups (moe_mma.cu, skinny_gemm.cu).
__device__ __forceinline__ int swz64(int r, int c) {
  return r * 64 + ((c ^ (r & 7)) << 3);
}
// ---- mbarrier and bulk (TMA) copies, one CTA ----
__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// Thread 0, before a __syncthreads that publishes it: `count` arrivals a phase.
__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count)
               : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
// One arrival that also expects `bytes` of bulk copies to land.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}
// Until phase `parity` of the barrier completes (its writes then visible to this thread).
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
  asm volatile(
      "{\n .reg .pred p;\n MBAR_WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      " @!p bra MBAR_WAIT_%=;\n}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}
// `bytes` (a multiple of 16, both ends 16-byte aligned) global -> shared by the
// copy engine, completing on `bar`'s expected bytes.
__device__ __forceinline__ void bulk_copy_g2s(void* dst, const void* src, unsigned bytes,
                                              uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar))
      : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's most recent cp.async groups are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Four 8x8 BF16 matrices from shared memory; lanes 8i .. 8i + 7 give the row
// addresses of matrix i. Lane l receives row l / 4, columns 2 (l % 4) and
// 2 (l % 4) + 1 of each (with .trans: of each matrix transposed).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const uint16_t* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
// Two floats as BF16 in one register (lo in the low half).
// One 64-column stage of a block's weight tile (A: this warp's rows a0r.. and
// a1r.., 16 each, swz64 layout) times its tokens (B: `pairs` pairs of n8 tiles
// of xs, swz64 layout) into acc[tile][n8][4] (mma.sync m16n8k16, F32
// accumulate). moe_mma.cu and skinny_gemm.cu.
template <int NT>
__device__ __forceinline__ void mma_stage64(const uint16_t* st, const uint16_t* xs, int a0r,
                                            int a1r, int lane, int pairs, float (&acc)[2][NT][4]) {
#pragma unroll
  for (int kk = 0; kk < 64 / 16; ++kk) {
    uint32_t fa0[4], fa1[4];
    const int lr = lane & 15, lc = 2 * kk + (lane >> 4);
    ldmatrix_x4(fa0, st + swz64(a0r + lr, lc));
    ldmatrix_x4(fa1, st + swz64(a1r + lr, lc));
#pragma unroll
    for (int jp = 0; jp < NT / 2; ++jp) {
      if (jp < pairs) {
        uint32_t fb[4];
        const int tr = 16 * jp + (lane & 7) + ((lane >> 4) << 3);
        const int tc = 2 * kk + ((lane >> 3) & 1);
        ldmatrix_x4(fb, xs + swz64(tr, tc));
        mma_bf16(acc[0][2 * jp], fa0[0], fa0[1], fa0[2], fa0[3], fb[0], fb[1]);
        mma_bf16(acc[0][2 * jp + 1], fa0[0], fa0[1], fa0[2], fa0[3], fb[2], fb[3]);
        mma_bf16(acc[1][2 * jp], fa1[0], fa1[1], fa1[2], fa1[3], fb[0], fb[1]);
        mma_bf16(acc[1][2 * jp + 1], fa1[0], fa1[1], fa1[2], fa1[3], fb[2], fb[3]);
      }
    }
  }
}
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The sum of v over a block of 256 threads (8 warps): each warp's sum, then
// the 8 warp sums added in order through `partial` (8 floats of shared
// memory). Every thread calls it and gets the total; it syncs once.
__device__ __forceinline__ float block_sum_256(float v, float* partial) {
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  float tot = 0.0f;
#pragma unroll
  for (int k = 0; k < 8; ++k) tot += partial[k];
  return tot;
}

// MLA's latent row [rms_norm(x[:r]) * w | rope(x[r:width])] (interleaved
// pairs, YaRN's factor folded into cos/sin), shared by the latent write and the
// attention kernel that makes its token's row itself, so both agree bit for
// bit. Block-wide with 256 threads. latent_inv_rms: every thread calls it (it
// syncs through `partial`, 8 floats of shared memory); thread i sums x[i],
// x[i + 256], ... in order, then the 8 warp sums are added in order.
__device__ __forceinline__ float latent_inv_rms(const uint16_t* x, int64_t r, float eps,
                                                float* partial) {
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < r; i += blockDim.x) {
    const float v = bf2f(x[i]);
    ss = fmaf(v, v, ss);
  }
  const float tot = block_sum_256(ss, partial);
  return 1.0f / sqrtf(tot / static_cast<float>(r) + eps);
}
// This thread's values of the row into out (global or shared memory).
__device__ __forceinline__ void latent_store(const uint16_t* x, int64_t width, int64_t r, float inv,
                                             const float* w, int32_t pos, const float* inv_freq,
                                             float factor, uint16_t* out) {
  __nv_bfloat16* o = reinterpret_cast<__nv_bfloat16*>(out);
  for (int64_t i = threadIdx.x; i < r; i += blockDim.x)
    o[i] = __float2bfloat16_rn(bf2f(x[i]) * inv * w[i]);
  const int64_t half = (width - r) / 2;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = static_cast<float>(pos) * inv_freq[i];
    float sn, cs;
    sincosf(angle, &sn, &cs);
    cs *= factor;
    sn *= factor;
    const float x0 = bf2f(x[r + 2 * i]), x1 = bf2f(x[r + 2 * i + 1]);
    o[r + 2 * i] = __float2bfloat16_rn(x0 * cs - x1 * sn);
    o[r + 2 * i + 1] = __float2bfloat16_rn(x1 * cs + x0 * sn);
  }
}

inline unsigned grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 1048576 ? 1048576 : b));
}

}  // namespace r1::backend::cuda
