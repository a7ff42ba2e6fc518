// DeepSeekMoE routing of one token by one warp: used by the route kernel (a
// warp per token, moe.cu) and by the streamed expert kernels of a batch-1 step,
// which route for themselves (moe_stream.cu), so that both give the same
// experts and weights bit for bit.
#pragma once

#include <cfloat>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {

constexpr int kRouteMaxExperts = 256;  // per-lane arrays of 8
constexpr int kRouteMaxTopK = 32;

// (value, index) is better when larger, ties to the lower index.
__device__ __forceinline__ bool route_better(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

// Shared memory one routing warp uses.
template <int PER>
struct RouteScratch {
  alignas(16) float choice[32 * PER];
  alignas(16) float gscore[32];
  alignas(16) float picked[32];
};

// The correction bias of this lane's experts (a constant: may be read before pdl_wait).
template <int PER>
__device__ __forceinline__ void route_bias(const RouteArgs& a, float (&bv)[PER]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int k = 0; k < PER; ++k) {
    const int e = lane + 32 * k;
    bv[k] = a.bias != nullptr && e < a.E ? a.bias[e] : 0.0f;
  }
}

// route_token's E == 64 form (two experts a lane, e = lane + 32 k; grouped
// only as 8 groups of 8, each on 8 adjacent lanes): the group top-2 by
// shuffles within those lanes, the group and expert ranks from broadcast
// 16-byte loads of shared memory, no divisions, and the sum of the picked
// weights unrolled at K == 8. Same comparisons and the same additions in the
// same order as the general path, so the same experts and weights bit for bit
// (its serial loops were most of a batch-1 MoE layer's 2.5 us routing).
__host__ __device__ __forceinline__ bool route_e64_fast(const RouteArgs& a) {
  return a.fast && a.E == 64 && (a.topk_group >= a.n_group || a.n_group == 8) && a.K <= 32;
}
__device__ __forceinline__ void route_token_e64(const RouteArgs& a, const float (&bv)[2], int t,
                                                RouteScratch<2>& s, int32_t* ids, float* w) {
  const int lane = threadIdx.x & 31, K = a.K;
  const float* l = a.logits + static_cast<int64_t>(t) * 64;
  float sc[2] = {l[lane], l[lane + 32]};
  if (a.softmax) {
    const float mx = warp_max(fmaxf(fmaxf(-FLT_MAX, sc[0]), sc[1]));
    sc[0] = expf(sc[0] - mx);
    sc[1] = expf(sc[1] - mx);
    const float sum = warp_sum(0.0f + sc[0] + sc[1]);
    sc[0] /= sum;
    sc[1] /= sum;
  } else {
    sc[0] = 1.0f / (1.0f + expf(-sc[0]));
    sc[1] = 1.0f / (1.0f + expf(-sc[1]));
  }
  float ch[2] = {sc[0] + bv[0], sc[1] + bv[1]};
  if (a.topk_group < a.n_group) {  // 8 groups: g = lane / 8 (k = 0), 4 + lane / 8 (k = 1)
    float gs[2];
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      // The group's best two (the multiset's, as the serial scan keeps them).
      float x = ch[k], y = -INFINITY;
#pragma unroll
      for (int o = 1; o < 8; o <<= 1) {
        const float ox = __shfl_xor_sync(0xffffffffu, x, o);
        const float oy = __shfl_xor_sync(0xffffffffu, y, o);
        y = fmaxf(fminf(x, ox), fmaxf(y, oy));
        x = fmaxf(x, ox);
      }
      gs[k] = a.bias ? x + y : x;
    }
    if ((lane & 7) == 0) {
      s.gscore[lane >> 3] = gs[0];
      s.gscore[4 + (lane >> 3)] = gs[1];
    }
    __syncwarp();
    const float4 g03 = *reinterpret_cast<const float4*>(s.gscore);
    const float4 g47 = *reinterpret_cast<const float4*>(s.gscore + 4);
    const float go[8] = {g03.x, g03.y, g03.z, g03.w, g47.x, g47.y, g47.z, g47.w};
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int mine = 4 * k + (lane >> 3);
      int rank = 0;
#pragma unroll
      for (int g = 0; g < 8; ++g) rank += go[g] > gs[k] || (go[g] == gs[k] && g < mine);
      if (rank >= a.topk_group) ch[k] = -INFINITY;
    }
  }
  s.choice[lane] = ch[0];
  s.choice[lane + 32] = ch[1];
  __syncwarp();
  int rank[2] = {0, 0};
#pragma unroll
  for (int o = 0; o < 64; o += 4) {
    const float4 c4 = *reinterpret_cast<const float4*>(s.choice + o);
    const float c[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      rank[0] += route_better(c[j], o + j, ch[0], lane);
      rank[1] += route_better(c[j], o + j, ch[1], lane + 32);
    }
  }
#pragma unroll
  for (int k = 0; k < 2; ++k)
    if (rank[k] < K) {
      ids[rank[k]] = lane + 32 * k;
      s.picked[rank[k]] = sc[k];
    }
  __syncwarp();
  float norm = 1.0f;
  if (a.normalize) {  // every lane adds the same terms in the same order
    float sum = 0.0f;
    if (K == 8) {
      const float4 p0 = *reinterpret_cast<const float4*>(s.picked);
      const float4 p1 = *reinterpret_cast<const float4*>(s.picked + 4);
      sum = sum + p0.x + p0.y + p0.z + p0.w + p1.x + p1.y + p1.z + p1.w;
    } else {
      for (int j = 0; j < K; ++j) sum += s.picked[j];
    }
    norm = 1.0f / (sum + 1e-20f);
  }
  if (lane < K) w[lane] = s.picked[lane] * norm * a.scale;
  __syncwarp();
}

// Routes token t (every lane of one warp calls it): scores (sigmoid or
// softmax), the correction bias (selection only), the top topk_group of
// n_group groups (scored by their best two, or best one without bias), the
// top K experts of those, their weights renormalized and scaled. PER =
// ceil(E / 32) experts a lane (e = lane + 32 k). Selection is by rank rather
// than K rounds of a warp argmax: each lane counts the candidates better than
// its own (larger, ties to the lower index), so ranks are unique and
// ids[rank] lists the experts in the order repeated argmax would pick them.
// Writes ids[0 .. K) and w[0 .. K) (global or shared memory).
template <int PER>
__device__ __forceinline__ void route_token(const RouteArgs& a, const float (&bv)[PER], int t,
                                            RouteScratch<PER>& s, int32_t* ids, float* w) {
  if constexpr (PER == 2) {
    if (route_e64_fast(a)) {
      route_token_e64(a, bv, t, s, ids, w);
      return;
    }
  }
  const int lane = threadIdx.x & 31, E = a.E, K = a.K;
  const float* l = a.logits + static_cast<int64_t>(t) * E;
  float sc[PER];
  float mx = -FLT_MAX;
#pragma unroll
  for (int k = 0; k < PER; ++k) {
    const int e = lane + 32 * k;
    sc[k] = e < E ? l[e] : -FLT_MAX;
    mx = fmaxf(mx, sc[k]);
  }
  if (a.softmax) {
    mx = warp_max(mx);
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < PER; ++k) {
      const int e = lane + 32 * k;
      sc[k] = e < E ? expf(sc[k] - mx) : 0.0f;
      sum += sc[k];
    }
    sum = warp_sum(sum);
#pragma unroll
    for (int k = 0; k < PER; ++k) sc[k] /= sum;
  } else {
#pragma unroll
    for (int k = 0; k < PER; ++k) sc[k] = 1.0f / (1.0f + expf(-sc[k]));
  }
  float ch[PER];
#pragma unroll
  for (int k = 0; k < PER; ++k) {
    const int e = lane + 32 * k;
    ch[k] = e < E ? sc[k] + bv[k] : -INFINITY;
    s.choice[e] = ch[k];
  }
  __syncwarp();
  if (a.topk_group < a.n_group) {
    const int per = E / a.n_group;
    float gs = -INFINITY;
    if (lane < a.n_group) {
      float x = -INFINITY, y = -INFINITY;
      for (int i = 0; i < per; ++i) {
        const float c = s.choice[lane * per + i];
        if (c > x) {
          y = x;
          x = c;
        } else if (c > y) {
          y = c;
        }
      }
      gs = a.bias ? x + (per > 1 ? y : 0.0f) : x;
      s.gscore[lane] = gs;
    }
    __syncwarp();
    // Group g is kept when fewer than topk_group groups beat it.
    int rank = 0;
#pragma unroll 8
    for (int g = 0; g < a.n_group; ++g) {
      const float o = s.gscore[g];
      rank += o > gs || (o == gs && g < lane);
    }
    const unsigned keep = __ballot_sync(0xffffffffu, lane < a.n_group && rank < a.topk_group);
    __syncwarp();
#pragma unroll
    for (int k = 0; k < PER; ++k) {
      const int e = lane + 32 * k;
      if (e < E && !(keep >> (e / per) & 1u)) {
        ch[k] = -INFINITY;
        s.choice[e] = -INFINITY;
      }
    }
    __syncwarp();
  }
  // Ranks among all E candidates (masked ones are -inf and rank after the rest;
  // entries past E are -inf with higher indices, so they never count). The
  // loop runs over the whole array, unrolled, so the shared-memory loads
  // overlap instead of each waiting for the compare before it.
#pragma unroll
  for (int k = 0; k < PER; ++k) {
    const int e = lane + 32 * k;
    if (e >= E) continue;
    int rank = 0;
#pragma unroll 16
    for (int o = 0; o < 32 * PER; ++o) rank += route_better(s.choice[o], o, ch[k], e);
    if (rank < K) {
      ids[rank] = e;
      s.picked[rank] = sc[k];
    }
  }
  __syncwarp();
  float norm = 1.0f;
  if (lane == 0 && a.normalize) {
    float sum = 0.0f;
    for (int j = 0; j < K; ++j) sum += s.picked[j];
    norm = 1.0f / (sum + 1e-20f);
  }
  norm = __shfl_sync(0xffffffffu, norm, 0);
  if (lane < K) w[lane] = s.picked[lane] * norm * a.scale;
  __syncwarp();
}

}  // namespace r1::backend::cuda
