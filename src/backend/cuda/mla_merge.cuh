// The decode attention's block shape (mla_attention.cu) and the merge of a
// token's split partial states, which its split blocks run either in parallel
// (each a slice of the outputs) or in the last block to finish. Included by
// mla_attention.cu only; kept apart so that the kernel's file stays readable.
#pragma once

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda::mla {

constexpr int kKeys = 64;          // keys per shared-memory step
constexpr int kHeads = 16;         // query rows per block (one mma M tile)
constexpr int kThreads = 256;      // 8 warps
constexpr int kMaxSplits = kKeys;  // the merge weights reuse the 16 x 64 score buffer

// Merges the token's `active` split partials of float4 outputs [lo, hi) of
// the block's head rows (output i: row i / (DV / 4) from h0, columns 4 (i %
// (DV / 4))): the weights w = exp(m - M) / sum_z l_z exp(m_z - M) of the 16
// rows into w_s [split][16] (pm_s, pl_s: scratch of the same shape), then each
// output's weighted sum in split order, written as BF16. A thread's first
// output has its partials requested before the weights are computed, 16 splits
// a round trip. Every thread of the block calls it.
template <int DV>
__device__ __forceinline__ void merge_outputs(const MlaArgs& a, int t, int h0, int active, int lo,
                                              int hi, float* pm_s, float* pl_s, float* w_s,
                                              unsigned long long* stamps = nullptr) {
  constexpr int kCols = DV / 4, kBatch = 16;
  const int tid = threadIdx.x;
  float4 v[kBatch];
  auto load_partials = [&](int idx, int z0) {
    const int r = idx / kCols, c = (idx % kCols) * 4;
#pragma unroll
    for (int b = 0; b < kBatch; ++b)
      v[b] =
          z0 + b < active
              ? __ldcg(reinterpret_cast<const float4*>(
                    a.ws_acc + ((static_cast<int64_t>(z0 + b) * a.T + t) * a.H + h0 + r) * DV + c))
              : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  };
  if (lo + tid < hi) load_partials(lo + tid, 0);
  const int nrows = min(a.group_rows, a.H - h0);
  const int64_t stride = static_cast<int64_t>(a.T) * a.H;
  for (int idx = tid; idx < active * kHeads; idx += kThreads) {
    const int z = idx / kHeads, r = idx % kHeads;
    const int64_t row = static_cast<int64_t>(t) * a.H + h0 + min(r, nrows - 1);
    const float2 ml = __ldcg(reinterpret_cast<const float2*>(a.ws_ml + 2 * (z * stride + row)));
    pm_s[idx] = ml.x;
    pl_s[idx] = ml.y;
  }
  __syncthreads();
  if (stamps != nullptr) stamps[8] = global_ns();
  {  // warp w: the weights of rows 2w and 2w + 1, its lanes over the splits (z, z + 32)
    static_assert(kThreads / 32 * 2 == kHeads && kMaxSplits <= 64, "merge weights layout");
    const int lane = tid & 31;
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int r = 2 * (tid >> 5) + rr;
      float m[2], e[2];
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int z = lane + 32 * k;
        m[k] = z < active ? pm_s[z * kHeads + r] : -INFINITY;
      }
      const float M = warp_max(fmaxf(m[0], m[1]));
      float part = 0.0f;
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        e[k] = m[k] == -INFINITY ? 0.0f : expf(m[k] - M);
        if (m[k] != -INFINITY) part += pl_s[(lane + 32 * k) * kHeads + r] * e[k];
      }
      const float Lsum = warp_sum(part);
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int z = lane + 32 * k;
        if (z < active) w_s[z * kHeads + r] = Lsum <= 0.0f ? 0.0f : e[k] / Lsum;
      }
    }
  }
  __syncthreads();
  if (stamps != nullptr) stamps[9] = global_ns();
  for (int idx = lo + tid; idx < hi; idx += kThreads) {
    const int r = idx / kCols, c = (idx % kCols) * 4;
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int z0 = 0; z0 < active; z0 += kBatch) {
      if (z0 > 0 || idx != lo + tid) load_partials(idx, z0);
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        if (z0 + b >= active) break;
        const float wz = w_s[(z0 + b) * kHeads + r];
        sum.x = fmaf(wz, v[b].x, sum.x);
        sum.y = fmaf(wz, v[b].y, sum.y);
        sum.z = fmaf(wz, v[b].z, sum.z);
        sum.w = fmaf(wz, v[b].w, sum.w);
      }
    }
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(a.out + t * a.out_row +
                                                          static_cast<int64_t>(h0 + r) * DV + c);
    o[0] = __floats2bfloat162_rn(sum.x, sum.y);
    o[1] = __floats2bfloat162_rn(sum.z, sum.w);
  }
}

}  // namespace r1::backend::cuda::mla
