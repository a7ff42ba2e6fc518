// Dense products of decode batches (5 to 32 rows) on the tensor cores, split
// over K so that even a 2-10 MB weight matrix spreads over the SMs. A block owns
// 128 weight rows (outputs), one range of K columns (its split) and up to
// 8 * NT tokens (rows of x; more tokens take more token tiles); it streams the weights through a
// four-stage cp.async ring of 64-column stages (the first three requested before pdl_wait: weights
// are constant) and multiplies them by the tokens with mma.sync m16n8k16, as moe_mma.cu's kernel
// does for experts. The splits of a tile form one thread-block cluster: each block leaves its F32
// partial products in its shared memory, and after a cluster barrier each sums a slice of the tile
// over the splits in split order (distributed shared memory), so no workspace or counter is needed
// and the sums do not depend on timing. Optionally per head: head h reads x + h * x_hs and w + h *
// w_hs and writes out + h * o_hs (MLA's absorbing products).
#include <algorithm>
#include <atomic>
#include <cstdlib>

#include <cooperative_groups.h>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 32 * kWarps;  // weight rows (outputs) a block: two m16 tiles a warp
constexpr int kBK = 64;             // columns a stage
constexpr int kStages = 4;
constexpr int kMaxSplits = 8;  // the portable cluster size

template <int NT>
__host__ __device__ constexpr int stage_elems() {
  return (kRows + 8 * NT) * kBK;
}

struct SkinnyArgs {
  const uint16_t* x;
  int64_t ldx, x_hs;
  const uint16_t* w;
  int64_t w_hs;
  int64_t M, N, K;
  int64_t kc;  // columns a split (a multiple of kBK)
  int splits, row_tiles, tok_tiles;
  void* out;
  bool out_bf;
  int64_t ldo, o_hs;
};

template <int NT>
__global__ void __launch_bounds__(kThreads) skinny_gemm_kernel(SkinnyArgs a) {
  extern __shared__ __align__(16) uint16_t smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int rt = blockIdx.x, split = blockIdx.y;
  const int tt = blockIdx.z % a.tok_tiles, head = blockIdx.z / a.tok_tiles;
  const int64_t n0 = static_cast<int64_t>(rt) * kRows, m0 = static_cast<int64_t>(tt) * 8 * NT;
  const int64_t k0 = static_cast<int64_t>(split) * a.kc, k1 = min(a.K, k0 + a.kc);
  const int nk = static_cast<int>((k1 - k0 + kBK - 1) / kBK);
  const uint16_t* w = a.w + head * a.w_hs;
  const uint16_t* x = a.x + head * a.x_hs;
  const int cnt = static_cast<int>(min(static_cast<int64_t>(8 * NT), a.M - m0));
  const int pairs = (cnt + 15) >> 4;  // n8 token tiles in use, in pairs
  // Weights read by one token tile only are evicted first from L2.
  const bool stream_w = a.tok_tiles == 1;

  // This thread's copies: chunk cc of tile rows r0 + 16 j.
  const int cc = tid & 7, r0 = tid >> 3;
  const uint16_t* wrow[kRows / 16];
  bool wok[kRows / 16];
#pragma unroll
  for (int j = 0; j < kRows / 16; ++j) {
    const int64_t n = n0 + r0 + 16 * j;
    wok[j] = n < a.N;
    wrow[j] = w + (wok[j] ? n : 0) * a.K;
  }
  const uint16_t* xrow[NT / 2];
  bool xok[NT / 2];
#pragma unroll
  for (int j = 0; j < NT / 2; ++j) {
    const int q = r0 + 16 * j;
    xok[j] = q < cnt;
    xrow[j] = x + (m0 + (xok[j] ? q : 0)) * a.ldx;
  }
  auto stage = [&](int kt) { return smem + static_cast<size_t>(kt % kStages) * stage_elems<NT>(); };
  auto load_w = [&](int kt) {
    uint16_t* st = stage(kt);
    const int64_t k = k0 + static_cast<int64_t>(kt) * kBK + 8 * cc;
    const bool kok = k < k1;
#pragma unroll
    for (int j = 0; j < kRows / 16; ++j) {
      uint16_t* dst = st + swz64(r0 + 16 * j, cc);
      if (kok && wok[j] && stream_w)
        cp_async16_stream(dst, wrow[j] + k);
      else
        cp_async16(dst, kok && wok[j] ? wrow[j] + k : w, kok && wok[j]);
    }
  };
  auto load_x = [&](int kt) {
    uint16_t* xs = stage(kt) + kRows * kBK;
    const int64_t k = k0 + static_cast<int64_t>(kt) * kBK + 8 * cc;
    const bool kok = k < k1;
#pragma unroll
    for (int j = 0; j < NT / 2; ++j) {
      const bool ok = kok && xok[j];
      cp_async16(xs + swz64(r0 + 16 * j, cc), ok ? xrow[j] + k : x, ok);
    }
  };

  // The first stages' weights before pdl_wait; they join the first commit group.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s)
    if (s < nk) load_w(s);
  pdl_wait();
  pdl_trigger();
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nk) load_x(s);
    cp_async_commit();
  }

  float acc[2][NT][4];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[r][j][c] = 0.0f;
  const int a0r = 32 * warp, a1r = 32 * warp + 16;
  for (int kt = 0; kt < nk; ++kt) {
    cp_async_wait_group<kStages - 2>();
    __syncthreads();
    if (kt + kStages - 1 < nk) {
      load_w(kt + kStages - 1);
      load_x(kt + kStages - 1);
    }
    cp_async_commit();
    const uint16_t* st = stage(kt);
    const uint16_t* xs = st + kRows * kBK;
    mma_stage64<NT>(st, xs, a0r, a1r, lane, pairs, acc);
  }
  cp_async_wait_all();

  // C fragment: c[0], c[1] at (row lane / 4, tokens 2 (lane % 4) + {0, 1}); c[2], c[3] at row + 8.
  char* out = static_cast<char*>(a.out) + head * a.o_hs * (a.out_bf ? 2 : 4);
  if (a.splits == 1) {  // the products are the outputs
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int tok = 8 * j + 2 * (lane & 3) + (c & 1);
        if (tok >= cnt) continue;
        const int rr = (lane >> 2) + 8 * (c >> 1);
        const int64_t m = m0 + tok, h0 = n0 + a0r + rr, h1 = n0 + a1r + rr;
        if (h0 < a.N) stf(out, m * a.ldo + h0, a.out_bf, acc[0][j][c]);
        if (h1 < a.N) stf(out, m * a.ldo + h1, a.out_bf, acc[1][j][c]);
      }
    }
    return;
  }
  // Several splits: this block's partials, token-major [8 NT][128] F32, in its
  // (now free) stage memory; after the cluster barrier, block `split` sums its
  // slice of every block's partials in split order.
  namespace cg = cooperative_groups;
  cg::cluster_group cl = cg::this_cluster();
  __syncthreads();  // every warp is done with the stages
  float* part = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int j = 0; j < NT; ++j) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int tok = 8 * j + 2 * (lane & 3) + (c & 1);
      const int rr = (lane >> 2) + 8 * (c >> 1);
      part[tok * kRows + a0r + rr] = acc[0][j][c];
      part[tok * kRows + a1r + rr] = acc[1][j][c];
    }
  }
  cl.sync();
  const int rank = static_cast<int>(cl.block_rank()), nb = a.splits;
  const int quads = cnt * (kRows / 4);  // float4s of the tile
  const int lo = rank * quads / nb, hi = (rank + 1) * quads / nb;
  for (int q = lo + tid; q < hi; q += kThreads) {
    float4 v[kMaxSplits];
#pragma unroll
    for (int z = 0; z < kMaxSplits; ++z)
      if (z < nb) v[z] = *reinterpret_cast<const float4*>(cl.map_shared_rank(part + 4 * q, z));
    float4 sum = v[0];
#pragma unroll
    for (int z = 1; z < kMaxSplits; ++z)
      if (z < nb) {
        sum.x += v[z].x;
        sum.y += v[z].y;
        sum.z += v[z].z;
        sum.w += v[z].w;
      }
    const int tok = q / (kRows / 4);
    const int64_t h = n0 + 4 * (q % (kRows / 4)), row = (m0 + tok) * a.ldo;
    const float s4[4] = {sum.x, sum.y, sum.z, sum.w};
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (h + i < a.N) stf(out, row + h + i, a.out_bf, s4[i]);
  }
  cl.sync();  // the other blocks' shared memory stays until all have read it
}

template <int NT>
constexpr size_t kernel_smem() {
  return kStages * stage_elems<NT>() * sizeof(uint16_t);
}

// Sets the kernel's shared-memory limit once (before its first launch or query).
template <int NT>
void prepare() {
  static_assert(kernel_smem<NT>() >= sizeof(float) * 8 * NT * kRows,
                "the partials fit in the stages");
  static const bool attr = [] {
    R1_CUDA_OK(cudaFuncSetAttribute(skinny_gemm_kernel<NT>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(kernel_smem<NT>())));
    return true;
  }();
  (void)attr;
}

// Whether a cluster of `splits` blocks can be placed on this GPU at all (a small
// MIG slice may not hold one), asked once per size; a refusal is an answer.
template <int NT>
bool cluster_fits(int splits) {
  static std::atomic<int> fits[kMaxSplits + 1] = {};  // 0 unknown, 1 yes, -1 no
  int v = fits[splits].load(std::memory_order_relaxed);
  if (v == 0) {
    prepare<NT>();
    v = cluster_placeable(skinny_gemm_kernel<NT>, static_cast<unsigned>(splits), kThreads,
                          kernel_smem<NT>())
            ? 1
            : -1;
    fits[splits].store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

template <int NT>
void launch(const SkinnyArgs& a, int heads, cudaStream_t s) {
  prepare<NT>();
  const dim3 grid(static_cast<unsigned>(a.row_tiles), static_cast<unsigned>(a.splits),
                  static_cast<unsigned>(a.tok_tiles * heads));
  pdl_launch_cluster(skinny_gemm_kernel<NT>, grid, kThreads, kernel_smem<NT>(), s,
                     static_cast<unsigned>(a.splits), a);
  R1_CUDA_LAUNCHED();
}

EnvSwitch g_skinny{"R1SERVE_CUDA_SKINNY_GEMM", 1};

}  // namespace

void set_skinny_gemm_enabled(bool on) {
  g_skinny.set(on ? 1 : 0);
}

bool skinny_gemm_enabled() {
  return g_skinny.on();
}

SkinnyPlan plan_skinny_gemm(int64_t M, int64_t N, int64_t K, int64_t heads, int sm_count) {
  SkinnyPlan p;
  // 16 or 32 tokens a block (64 measured slower than cuBLAS at batch 128: the
  // callers stop at 32 rows).
  p.nt = M <= 16 ? 2 : 4;
  p.tok_tiles = (M + 8 * p.nt - 1) / (8 * p.nt);
  p.row_tiles = (N + kRows - 1) / kRows;
  const int64_t base = p.row_tiles * p.tok_tiles * heads, chunks = (K + kBK - 1) / kBK;
  // Up to two blocks an SM (both fit: 72-80 KB of shared memory each), at least
  // two stages (128 columns) a split, at most a cluster's 8 splits.
  const int64_t target = 2 * static_cast<int64_t>(std::max(sm_count, 1));
  int64_t splits = 1;
  if (base < target)
    splits = std::min<int64_t>(
        {(target + base - 1) / base, std::max<int64_t>(1, chunks / 2), kMaxSplits});
  p.kc = (chunks + splits - 1) / splits * kBK;
  p.splits = (K + p.kc - 1) / p.kc;
  return p;
}

bool skinny_plan_fits(const SkinnyPlan& p) {
  if (p.splits < 2) return true;
  if (p.splits > kMaxSplits) return false;
  const int n = static_cast<int>(p.splits);
  return p.nt == 2 ? cluster_fits<2>(n) : cluster_fits<4>(n);
}

void launch_skinny_gemm(const SkinnyPlan& p, const uint16_t* x, int64_t ldx, int64_t x_hs,
                        const uint16_t* w, int64_t w_hs, int64_t heads, int64_t M, int64_t N,
                        int64_t K, void* out, bool out_bf, int64_t ldo, int64_t o_hs,
                        cudaStream_t s) {
  R1_CUDA_REQUIRE(K % 8 == 0 && ldx % 8 == 0 && x_hs % 8 == 0 && w_hs % 8 == 0 &&
                      reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(w) % 16 == 0,
                  "skinny_gemm: 16-byte aligned rows (K, ldx and head strides multiples of 8)");
  R1_CUDA_REQUIRE(p.splits >= 1 && p.splits <= kMaxSplits, "skinny_gemm: 1-8 splits");
  if (M == 0 || N == 0 || heads == 0) return;
  SkinnyArgs a;
  a.x = x;
  a.ldx = ldx;
  a.x_hs = x_hs;
  a.w = w;
  a.w_hs = w_hs;
  a.M = M;
  a.N = N;
  a.K = K;
  a.kc = p.kc;
  a.splits = static_cast<int>(p.splits);
  a.row_tiles = static_cast<int>(p.row_tiles);
  a.tok_tiles = static_cast<int>(p.tok_tiles);
  a.out = out;
  a.out_bf = out_bf;
  a.ldo = ldo;
  a.o_hs = o_hs;
  const int h = static_cast<int>(heads);
  if (p.nt == 2)
    launch<2>(a, h, s);
  else
    launch<4>(a, h, s);
}

}  // namespace r1::backend::cuda
