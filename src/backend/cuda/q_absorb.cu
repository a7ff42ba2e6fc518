// The absorbed MLA query of one token in one kernel: q = RMSNorm(c_q) W_qb^T,
// then per head q_abs[h, n] = W_UK[h, n] . q[h, :dn], which took two kernels
// (the folded-norm GEMV, then the short-row per-head GEMV) and a kernel
// boundary between them on every layer's critical path.
//
// A head is one thread-block cluster of 8 blocks. Each block makes qk / 8 of
// the head's q rows (RW a warp) with dense_gemv_kernel's folded-norm
// arithmetic at S = 1 (the plan the 9B's and the 671B's q_b get): the same
// products and sums in the same order, so q is what rms_norm_linear writes, bit
// for bit. It pushes its rows' BF16 values that W_UK reads into every member's
// shared memory; after the cluster barrier it makes N / 8 of the head's W_UK
// rows with head_gemv_short_kernel's arithmetic (16 lanes a row, the same
// shuffle order), so q_abs is bit for bit the two kernels' too. Every weight
// (24 + 8 KB a block at the 9B) is loaded before pdl_wait.
#include <cooperative_groups.h>

#include <atomic>
#include <cstdint>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

constexpr int kMembers = 8;               // blocks a head (a portable cluster)
constexpr int kUkN = 512;                 // W_UK rows a head
constexpr int kUkK = 128;                 // W_UK columns (q's nope width)
constexpr int kUkRows = kUkN / kMembers;  // a block's: 8 warps x 4 loads x 2 rows
constexpr int kUkL = kUkRows / 16;        // rows in flight a lane

template <int RW, int UQ>
__global__ void __launch_bounds__(256) q_absorb_kernel(QAbsorbArgs a) {
  namespace cg = cooperative_groups;
  __shared__ alignas(16) uint16_t qn_s[kUkK];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int h = static_cast<int>(blockIdx.x), m = static_cast<int>(blockIdx.y);
  const int row0 = m * (8 * RW) + warp * RW;  // this warp's first q row in the head
  const uint16_t* wq = a.wq + (static_cast<int64_t>(h) * a.qk + row0) * a.K;
  uint4 wv[UQ][RW];
  float4 n0[UQ], n1[UQ];
#pragma unroll
  for (int u = 0; u < UQ; ++u) {
    const int k0 = 256 * u + lane * 8;
#pragma unroll
    for (int r = 0; r < RW; ++r) wv[u][r] = ld_stream(wq + static_cast<int64_t>(r) * a.K + k0);
    n0[u] = *reinterpret_cast<const float4*>(a.norm_w + k0);
    n1[u] = *reinterpret_cast<const float4*>(a.norm_w + k0 + 4);
  }
  // W_UK: rows n = m * 64 + (warp * kUkL + l) * 2 + sub of head h, lanes c of 16.
  const int sub = lane >> 4, c = lane & 15;
  uint4 wk[kUkL];
  int nk[kUkL];
#pragma unroll
  for (int l = 0; l < kUkL; ++l) {
    nk[l] = m * kUkRows + (warp * kUkL + l) * 2 + sub;
    wk[l] = ld_stream(a.wuk + (static_cast<int64_t>(h) * kUkN + nk[l]) * kUkK + c * 8);
  }
  // What the code after the wait reads of the arguments, read now (each
  // launch's arguments are cold in the constant cache).
  const uint16_t* const x = pinned(a.x) + lane * 8;
  uint16_t* const q = pinned(a.q) + static_cast<int64_t>(h) * a.qk + row0;
  uint16_t* const qa = pinned(a.qa) + static_cast<int64_t>(h) * pinned(a.ohs);
  const float kf = static_cast<float>(pinned(a.K)), eps = pinned(a.eps);
  pdl_wait();
  pdl_trigger();
  float acc[RW], ss = 0.0f;
#pragma unroll
  for (int r = 0; r < RW; ++r) acc[r] = 0.0f;
#pragma unroll
  for (int u = 0; u < UQ; ++u) {
    float x8[8];
    unpack8(*reinterpret_cast<const uint4*>(x + 256 * u), x8);
    const float n8[8] = {n0[u].x, n0[u].y, n0[u].z, n0[u].w, n1[u].x, n1[u].y, n1[u].z, n1[u].w};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      ss = fmaf(x8[i], x8[i], ss);
      x8[i] *= n8[i];
    }
#pragma unroll
    for (int r = 0; r < RW; ++r) {
      float w8[8];
      unpack8(wv[u][r], w8);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[r] = fmaf(w8[i], x8[i], acc[r]);
    }
  }
  const float sc = 1.0f / sqrtf(warp_sum(ss) / kf + eps);
  cg::cluster_group cl = cg::this_cluster();
#pragma unroll
  for (int r = 0; r < RW; ++r) {
    const __nv_bfloat16 b = __float2bfloat16_rn(warp_sum(acc[r]) * sc);
    const uint16_t bits = *reinterpret_cast<const uint16_t*>(&b);
    const int row = row0 + r;
    if (lane == 0) q[r] = bits;
    if (row < kUkK && lane < kMembers) *cl.map_shared_rank(&qn_s[row], lane) = bits;
  }
  cl.sync();  // every member's q_nope values are in qn_s (no remote access after this)
  float x8[8];
  unpack8(*reinterpret_cast<const uint4*>(qn_s + c * 8), x8);
#pragma unroll
  for (int l = 0; l < kUkL; ++l) {
    float w8[8];
    unpack8(wk[l], w8);
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) s = fmaf(w8[i], x8[i], s);
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (c == 0) {
      const __nv_bfloat16 b = __float2bfloat16_rn(s);
      qa[nk[l]] = *reinterpret_cast<const uint16_t*>(&b);
    }
  }
}

template <int RW, int UQ>
void launch(const QAbsorbArgs& a, int heads, cudaStream_t s) {
  pdl_launch_cluster(q_absorb_kernel<RW, UQ>, dim3(static_cast<unsigned>(heads), kMembers), 256, 0,
                     s, kMembers, a);
  R1_CUDA_LAUNCHED();
}

// Whether a cluster of 8 of these blocks can be placed at all (a small MIG
// slice may not hold one), asked once; a refusal is an answer.
bool cluster_fits() {
  static std::atomic<int> fits{0};  // 0 unknown, 1 yes, -1 no
  int v = fits.load(std::memory_order_relaxed);
  if (v == 0) {
    v = cluster_placeable(q_absorb_kernel<3, 3>, kMembers, 256, 0) ? 1 : -1;
    fits.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

EnvSwitch g_q_absorb{"R1SERVE_CUDA_Q_ABSORB", 1};

}  // namespace

bool q_absorb_ok(int64_t K, int64_t qk, int64_t heads, int64_t N, int64_t dn) {
  return g_q_absorb.on() && (K == 768 || K == 1536) && qk == 192 && N == kUkN && dn == kUkK &&
         heads >= 1 && heads <= 65535 && cluster_fits();
}

void set_q_absorb(bool on) {
  g_q_absorb.set(on ? 1 : 0);
}

void launch_q_absorb(const QAbsorbArgs& a, int heads, cudaStream_t s) {
  R1_CUDA_REQUIRE(a.qk == 192 && (a.K == 768 || a.K == 1536), "q_absorb: unsupported widths");
  R1_CUDA_REQUIRE(reinterpret_cast<uintptr_t>(a.x) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(a.norm_w) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(a.wq) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(a.wuk) % 16 == 0,
                  "q_absorb: inputs must be 16-byte aligned");
  if (a.K == 768)
    launch<3, 3>(a, heads, s);
  else
    launch<3, 6>(a, heads, s);
}

}  // namespace r1::backend::cuda
