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
  float choice[32 * PER];
  float gscore[32];
  float picked[32];
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
