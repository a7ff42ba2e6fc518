// MLA prefill over decompressed keys and values (flash-attention style, on
// tensor cores: mma.sync m16n8k16, BF16 in, F32 accumulate). The host has
// expanded every sequence's context latents into per-head rows
// kv [keys, H * (DN + DV)] (k_nope, then the value) and gathered the rotated
// k_pe [keys, DP] that all heads share. A block takes one head and a tile of up
// to 64 consecutive query tokens of one sequence (4 warps x 16 rows), streams
// the sequence's keys 64 at a time through double-buffered shared memory,
// computes S = Q K^T in registers, keeps an online softmax per row (P rounded
// to BF16, the row sum adds the rounded values) and accumulates O += P V.
// Causal: key j is seen by a query at position p when j <= p.
//
// Work per (query, key, head): 2 (DN + DP + DV) FLOPs -- 3.4x fewer than the
// absorbed form's 2 (2 r + p) for R1's widths, which is why prefill takes this
// form and decode (one query per sequence, no decompression) the absorbed one.
#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

constexpr int kRows = 64;      // query rows per block
constexpr int kKeys = 64;      // keys per shared-memory step
constexpr int kThreads = 128;  // 4 warps x 16 rows

template <int DN, int DP, int DV>
struct PrefillSmem {
  static constexpr int kDq = DN + DP;
  static constexpr int kLdq = kDq + 8;  // +16 bytes: conflict-free ldmatrix rows
  static constexpr int kLdv = DV + 8;
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + size_t{kRows} * kLdq;  // in BF16 elements
  static constexpr size_t kV = kK + 2 * size_t{kKeys} * kLdq;
  static constexpr size_t kElems = kV + 2 * size_t{kKeys} * kLdv;
  static constexpr size_t kBytes = kElems * 2;
};

template <int DN, int DP, int DV>
__global__ void __launch_bounds__(kThreads) mla_prefill_kernel(MlaPrefillArgs a) {
  pdl_wait();
  pdl_trigger();
  using L = PrefillSmem<DN, DP, DV>;
  constexpr int kDq = L::kDq, kLdq = L::kLdq, kLdv = L::kLdv;
  static_assert(kDq % 16 == 0 && DN % 8 == 0 && DP % 8 == 0 && DV % 16 == 0, "widths");
  constexpr int kQk = kDq / 16;  // k-steps of S = Q K^T
  constexpr int kVt = DV / 8;    // n-tiles of O
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t* q_s = smem + L::kQ;
  uint16_t* k_s = smem + L::kK;
  uint16_t* v_s = smem + L::kV;

  const MlaPrefillTile tile = a.tiles[blockIdx.x];
  const int h = blockIdx.y;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
  const int64_t kbase = a.ctx_start[tile.seq];
  const int64_t kv_head = static_cast<int64_t>(h) * (DN + DV);

  for (int idx = tid; idx < kRows * (kDq / 8); idx += kThreads) {
    const int r = idx / (kDq / 8), c = idx % (kDq / 8);
    const bool valid = r < tile.rows;
    cp_async16(q_s + r * kLdq + c * 8,
               a.q + static_cast<int64_t>(tile.t0 + (valid ? r : 0)) * a.q_row +
                   static_cast<int64_t>(h) * kDq + c * 8,
               valid);
  }
  auto load_keys = [&](int buf, int j0) {
    uint16_t* kd = k_s + buf * (kKeys * kLdq);
    uint16_t* vd = v_s + buf * (kKeys * kLdv);
    for (int idx = tid; idx < kKeys * (kDq / 8); idx += kThreads) {
      const int j = idx / (kDq / 8), c = idx % (kDq / 8);
      const bool valid = j0 + j < tile.kmax;
      const int64_t row = kbase + (valid ? j0 + j : 0);
      const uint16_t* src = c < DN / 8 ? a.kv + row * a.kv_row + kv_head + c * 8
                                       : a.pe + row * a.pe_row + (c - DN / 8) * 8;
      cp_async16(kd + j * kLdq + c * 8, src, valid);
    }
    for (int idx = tid; idx < kKeys * (DV / 8); idx += kThreads) {
      const int j = idx / (DV / 8), c = idx % (DV / 8);
      const bool valid = j0 + j < tile.kmax;
      const int64_t row = kbase + (valid ? j0 + j : 0);
      cp_async16(vd + j * kLdv + c * 8, a.kv + row * a.kv_row + kv_head + DN + c * 8, valid);
    }
  };
  load_keys(0, 0);
  cp_async_commit();

  // This thread's two rows (g and g + 8 of the warp's 16) and their positions;
  // rows past the tile see no key.
  const int r0 = warp * 16 + g, r1 = r0 + 8;
  const int pos0 = r0 < tile.rows ? a.positions[tile.t0 + r0] : -1;
  const int pos1 = r1 < tile.rows ? a.positions[tile.t0 + r1] : -1;
  const int warp_max_pos = [&] {
    int p = max(pos0, pos1);
    p = max(p, __shfl_xor_sync(0xffffffffu, p, 4));
    p = max(p, __shfl_xor_sync(0xffffffffu, p, 8));
    p = max(p, __shfl_xor_sync(0xffffffffu, p, 16));
    return p;
  }();
  const float sl2 = a.scale * 1.4426950408889634f;  // scores in log2 units

  uint32_t qf[kQk][4];
  float acc[kVt][4];
#pragma unroll
  for (int n = 0; n < kVt; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  const int steps = (tile.kmax + kKeys - 1) / kKeys;
  for (int it = 0; it < steps; ++it) {
    const int buf = it & 1, j0 = it * kKeys;
    __syncthreads();  // every warp is done with the buffer the next load overwrites
    if (it + 1 < steps) load_keys(buf ^ 1, j0 + kKeys);
    cp_async_commit();
    cp_async_wait_group<1>();
    __syncthreads();
    if (it == 0) {
#pragma unroll
      for (int kk = 0; kk < kQk; ++kk)
        ldmatrix_x4(qf[kk], q_s + (warp * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * kLdq +
                                kk * 16 + (lane >> 4) * 8);
    }
    if (j0 > warp_max_pos) continue;  // every key of this step is masked for the warp's rows
    const uint16_t* kb = k_s + buf * (kKeys * kLdq);
    const uint16_t* vb = v_s + buf * (kKeys * kLdv);
    float s[kKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kQk; ++kk) {
#pragma unroll
      for (int np = 0; np < kKeys / 16; ++np) {
        uint32_t b[4];
        ldmatrix_x4(b, kb + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * kLdq + kk * 16 +
                           ((lane >> 3) & 1) * 8);
        mma_bf16(s[2 * np], qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], b[0], b[1]);
        mma_bf16(s[2 * np + 1], qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], b[2], b[3]);
      }
    }
    // Mask, scale, and the running maxima of rows r0 and r1 (a row's 64 scores
    // are spread over the 4 lanes of its quad).
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
      const int key = j0 + n * 8 + 2 * tg;
      s[n][0] = key <= pos0 ? s[n][0] * sl2 : -INFINITY;
      s[n][1] = key + 1 <= pos0 ? s[n][1] * sl2 : -INFINITY;
      s[n][2] = key <= pos1 ? s[n][2] * sl2 : -INFINITY;
      s[n][3] = key + 1 <= pos1 ? s[n][3] * sl2 : -INFINITY;
      mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
      mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    const float c0 = n0 == -INFINITY ? 1.0f : exp2f(m0 - n0);
    const float c1 = n1 == -INFINITY ? 1.0f : exp2f(m1 - n1);
    m0 = n0;
    m1 = n1;
    uint32_t pf[kKeys / 8][2];  // P as BF16 pairs: [n][0] row r0, [n][1] row r1
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
      const float p00 = n0 == -INFINITY ? 0.0f : round_bf16(exp2f(s[n][0] - n0));
      const float p01 = n0 == -INFINITY ? 0.0f : round_bf16(exp2f(s[n][1] - n0));
      const float p10 = n1 == -INFINITY ? 0.0f : round_bf16(exp2f(s[n][2] - n1));
      const float p11 = n1 == -INFINITY ? 0.0f : round_bf16(exp2f(s[n][3] - n1));
      sum0 += p00 + p01;
      sum1 += p10 + p11;
      pf[n][0] = pack_bf16x2(p00, p01);
      pf[n][1] = pack_bf16x2(p10, p11);
    }
    l0 = l0 * c0 + sum0;  // this lane's part of the row sum (the quad is added at the end)
    l1 = l1 * c1 + sum1;
#pragma unroll
    for (int n = 0; n < kVt; ++n) {
      acc[n][0] *= c0;
      acc[n][1] *= c0;
      acc[n][2] *= c1;
      acc[n][3] *= c1;
    }
    // O += P V: P's accumulator layout is the A-fragment layout of the next mma.
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const uint32_t a0 = pf[2 * kk][0], a1 = pf[2 * kk][1], a2 = pf[2 * kk + 1][0],
                     a3 = pf[2 * kk + 1][1];
#pragma unroll
      for (int np = 0; np < DV / 16; ++np) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, vb + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * kLdv + np * 16 +
                                 (lane >> 4) * 8);
        mma_bf16(acc[2 * np], a0, a1, a2, a3, b[0], b[1]);
        mma_bf16(acc[2 * np + 1], a0, a1, a2, a3, b[2], b[3]);
      }
    }
  }
  cp_async_wait_all();

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
  for (int n = 0; n < kVt; ++n) {
    const int64_t col = static_cast<int64_t>(h) * DV + n * 8 + 2 * tg;
    if (r0 < tile.rows)
      *reinterpret_cast<__nv_bfloat162*>(a.out + (tile.t0 + r0) * a.out_row + col) =
          __floats2bfloat162_rn(acc[n][0] * i0, acc[n][1] * i0);
    if (r1 < tile.rows)
      *reinterpret_cast<__nv_bfloat162*>(a.out + (tile.t0 + r1) * a.out_row + col) =
          __floats2bfloat162_rn(acc[n][2] * i1, acc[n][3] * i1);
  }
}

template <int DN, int DP, int DV>
void launch_widths(const MlaPrefillArgs& a, cudaStream_t s) {
  constexpr size_t smem = PrefillSmem<DN, DP, DV>::kBytes;
  static bool configured = false;
  if (!configured) {
    R1_CUDA_OK(cudaFuncSetAttribute(mla_prefill_kernel<DN, DP, DV>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
    configured = true;
  }
  const dim3 grid(static_cast<unsigned>(a.num_tiles), static_cast<unsigned>(a.H));
  pdl_launch(mla_prefill_kernel<DN, DP, DV>, grid, kThreads, smem, s, a);
  R1_CUDA_LAUNCHED();
}

// ctx rows of the cache -> lat [n, r] and pe [n, p] (both BF16), 16 bytes per thread.
__global__ void mla_gather_kernel(const uint16_t* cache, int64_t width, int64_t r,
                                  const int32_t* slots, int64_t n, uint16_t* lat, uint16_t* pe) {
  pdl_wait();
  pdl_trigger();
  const int64_t chunks = width / 8;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * chunks) return;
  const int64_t row = i / chunks, c = (i % chunks) * 8;
  const uint4 v =
      *reinterpret_cast<const uint4*>(cache + static_cast<int64_t>(slots[row]) * width + c);
  if (c < r)
    *reinterpret_cast<uint4*>(lat + row * r + c) = v;
  else
    *reinterpret_cast<uint4*>(pe + row * (width - r) + (c - r)) = v;
}

}  // namespace

int mla_prefill_rows_per_tile() {
  return kRows;
}

bool mla_prefill_supported(int64_t dn, int64_t p, int64_t dv) {
  return (dn == 128 && p == 64 && dv == 128) || (dn == 32 && p == 16 && dv == 32) ||
         (dn == 32 && p == 32 && dv == 32);
}

void launch_mla_gather(const uint16_t* cache, int64_t width, int64_t r, const int32_t* slots,
                       int64_t n, uint16_t* lat, uint16_t* pe, cudaStream_t s) {
  R1_CUDA_REQUIRE(width % 8 == 0 && r % 8 == 0 && r < width, "mla gather: widths");
  if (n == 0) return;
  pdl_launch(mla_gather_kernel, grid_for(n * (width / 8), 256), 256, 0, s, cache, width, r, slots,
             n, lat, pe);
  R1_CUDA_LAUNCHED();
}

void launch_mla_prefill(const MlaPrefillArgs& a, int64_t dn, int64_t p, int64_t dv,
                        cudaStream_t s) {
  R1_CUDA_REQUIRE(mla_prefill_supported(dn, p, dv), "mla prefill: unsupported widths");
  R1_CUDA_REQUIRE(a.q_row % 8 == 0 && a.kv_row % 8 == 0 && a.pe_row % 8 == 0 && a.out_row % 2 == 0,
                  "mla prefill: rows must be 16-byte aligned");
  if (a.num_tiles == 0 || a.H == 0) return;
  if (dn == 128)
    launch_widths<128, 64, 128>(a, s);
  else if (p == 16)
    launch_widths<32, 16, 32>(a, s);
  else
    launch_widths<32, 32, 32>(a, s);
}

}  // namespace r1::backend::cuda
