// The routed experts of one token (decode at batch 1), streamed through shared
// memory: every warp owns a contiguous range of the token's expert weight rows
// and keeps NS of them (2, 4 or 8) in flight as cp.async copies into a ring of
// shared-memory stages, each lane copying and later reading only its own
// 16-byte columns (so a stage needs no barrier, just a commit group); a
// gate/up stage holds a part (half at H = 2048) of a unit's two rows, so 16
// warps share the ring. One or two blocks per SM (the grid is persistent), so no block pays the
// expert lookup or the ramp more than once, and a warp's next rows arrive while it computes. There
// is no sort: slot j is the token's j-th expert. The products are those of moe.cu's warp-per-row
// GEMVs bit for bit (each lane visits the same columns in the same order), and the down kernel also
// does the weighted combine (and adds the shared experts' output) with the combine's arithmetic.
// Given the shared experts' MLP (one unit of the experts' width), both kernels run it too: its
// rows first in every warp's ring, requested before the routing and any wait. (A
// form for several tokens, with the sort's slot table, measured slower than moe.cu's GEMVs at batch
// 2 and 8, so it was not kept; see docs/performance-history.md.)
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/common.cuh"
#include "backend/cuda/moe_stream_stamps.cuh"
#include "backend/cuda/route.cuh"

namespace r1::backend::cuda {
namespace {

constexpr int kMaxSlots = 256;

// A token routed in the kernel (route.cuh) instead of read from the route op's
// outputs: warp 0 of the block writes the K experts and weights to ids_s, w_s.
struct InlineRoute {
  RouteArgs args;
  bool on = false;
  // The gate/up kernel's "ids and w are written" word (launch_moe_gate_up_stream).
  int32_t* ready = nullptr;
};
using RouteShared = RouteScratch<kRouteMaxExperts / 32>;
__device__ __forceinline__ void route_bias_any(const RouteArgs& r, float (&bv)[8]) {
  if (r.E <= 64) {
    float b2[2];
    route_bias<2>(r, b2);
    bv[0] = b2[0];
    bv[1] = b2[1];
  } else {
    route_bias<8>(r, bv);
  }
}
// Every lane of one warp; ends with the warp synced (the block's barrier is the caller's).
// R64: the launch knows the 64-expert form applies (route_e64_fast), and the
// kernel holds only its code.
template <bool R64>
__device__ __forceinline__ void route_any(const RouteArgs& r, const float (&bv)[8],
                                          RouteShared& scratch, int32_t* ids_s, float* w_s);
template <>
__device__ __forceinline__ void route_any<true>(const RouteArgs& r, const float (&bv)[8],
                                                RouteShared& scratch, int32_t* ids_s, float* w_s) {
  const float b2[2] = {bv[0], bv[1]};
  route_token_e64(r, b2, 0, reinterpret_cast<RouteScratch<2>&>(scratch), ids_s, w_s);
}
template <>
__device__ __forceinline__ void route_any<false>(const RouteArgs& r, const float (&bv)[8],
                                                 RouteShared& scratch, int32_t* ids_s, float* w_s) {
  if (r.E <= 64) {
    const float b2[2] = {bv[0], bv[1]};
    route_token<2>(r, b2, 0, reinterpret_cast<RouteScratch<2>&>(scratch), ids_s, w_s);
  } else {
    route_token<8>(r, bv, 0, scratch, ids_s, w_s);
  }
}

struct GateUpStream {
  const uint16_t* x;  // [H] BF16, 16-byte aligned
  int64_t H, I;
  int32_t
      parts;  // stages a unit: C = H / parts columns of its gate and up rows each (C % 256 == 0)
  const uint16_t* gate_up;
  int32_t* ids;  // the token's K experts (written here with route.on)
  int64_t K;
  uint16_t* act;  // [K, I], or [K + 1, I] with shared_gate_up (its act last)
  // The shared experts' MLP as one more unit of width I ([2I, H], gate rows
  // first), or null.
  const uint16_t* shared_gate_up;
  InlineRoute route;
  float* w;  // route.on: the experts' weights, written with ids
  // The route kernel (route.on: the router) is at least two launches back: ids
  // (the logits) may be read, and the first rows requested, before pdl_wait.
  bool ids_early;
  // Set: x is the raw row and the products are those of RMSNorm(x) with these
  // weights (x * norm_w rounded to BF16 in shared memory, the sums scaled by
  // 1 / rms(x): the dense GEMV's folded norm).
  const float* norm_w;
  float eps;
  // x was written two or more launches back: read and normed before any wait
  // (else after it, beside the routing).
  bool x_early;
  // Every warp streams the same number of units, shared and routed together
  // (R1SERVE_CUDA_MOE_GU_BALANCE; see moe_gate_up_stream_kernel).
  bool balance;
  bool stamps;  // R1SERVE_CUDA_MOE_STAMPS=1
};

struct DownStream {
  const uint16_t* act;
  const uint16_t* down;
  int64_t H, I;
  // out[h] = sum_j w[j] * (Wd_ids[j][h] . act[j]) (+ add[h]); with shared_down
  // ([H, I], act row K), add is (Ws[h] . act[K]) rounded as out is (what the
  // shared experts' down GEMV would write) instead of read.
  const int32_t* ids;
  const float* w;
  int64_t K;
  const uint16_t* shared_down;
  InlineRoute route;
  bool route_early;  // route.on: the logits may be read before pdl_wait
  const void* add;
  bool add_bf;
  void* out;
  bool out_bf;
  // With res: res[h] += out[h] instead (out's value rounded to out's dtype
  // first, as add_kernel adds a written out); out is not written.
  void* res;
  bool res_bf;
  bool stamps;  // R1SERVE_CUDA_MOE_STAMPS=1
};

// This warp's share [first, last) of `units` work units, in order.
__device__ __forceinline__ void warp_range(int units, int& first, int& last) {
  const int64_t nw = blockDim.x >> 5;
  const int64_t W = static_cast<int64_t>(gridDim.x) * nw;
  const int64_t gw = static_cast<int64_t>(blockIdx.x) * nw + (threadIdx.x >> 5);
  first = static_cast<int>(gw * units / W);
  last = static_cast<int>((gw + 1) * units / W);
}

// A position (outer, inner) in an order of units, stepped without divisions
// (the loops run on a few warps per SM, so divisions would dominate).
struct Cursor {
  int outer, inner, inner_end;
  __device__ __forceinline__ Cursor(int unit, int n_inner)
      : outer(unit / n_inner), inner(unit % n_inner), inner_end(n_inner) {}
  __device__ __forceinline__ void next() {
    if (++inner == inner_end) {
      inner = 0;
      ++outer;
    }
  }
};

// The gate/up kernel's units of one warp: its rows [row, shared_end) of the
// shared experts' MLP (slot K: they need no routing, so they come first and
// may be requested before it), then its routed units (slot, row) from a Cursor.
struct UnitCursor {
  int row, shared_end;
  Cursor routed;
  __device__ __forceinline__ bool shared() const { return row < shared_end; }
  __device__ __forceinline__ int slot(int K) const { return shared() ? K : routed.outer; }
  __device__ __forceinline__ int inner() const { return shared() ? row : routed.inner; }
  __device__ __forceinline__ void next() {
    if (shared())
      ++row;
    else
      routed.next();
  }
};

// Units (slot j, row r), j < K, r < I; a unit's P stages each hold C = H / P
// columns of its gate row and of its up row (part p: columns p C .. p C + C - 1,
// so with C % 256 == 0 each lane still visits its columns in the same order).
// Smaller stages let more warps share the same ring (16 warps of 4 KB stages
// instead of 8 of 8 KB at H = 2048).
template <int NS, bool R64>
__global__ void __launch_bounds__(512, 1) moe_gate_up_stream_kernel(GateUpStream a) {
  extern __shared__ __align__(128) unsigned char dyn[];
  __shared__ int32_t ids_s[kMaxSlots];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  const int H = static_cast<int>(a.H), I = static_cast<int>(a.I), K = static_cast<int>(a.K);
  const int P = a.parts, C = H / P;
  uint16_t* ring = reinterpret_cast<uint16_t*>(dyn) + static_cast<int64_t>(warp) * NS * 2 * C;
  uint16_t* x_s = reinterpret_cast<uint16_t*>(dyn + static_cast<size_t>(nw) * NS * 4 * C);
  __shared__ float w_s[kMaxSlots];
  __shared__ RouteShared route_s;
  float bv[8];
  if (a.route.on && warp == 0) route_bias_any(a.route.args, bv);
  // The ready word: cleared (and the clear made visible) before this block's
  // pdl_trigger, so a down kernel, which starts after every block's trigger,
  // never reads a 1 left from an earlier token. The down kernel of the step
  // before is complete: it is more than one launch back.
  const bool flag = a.route.on && a.route.ready != nullptr && blockIdx.x == 0 && K <= 32;
  if (flag && threadIdx.x == 0) {
    *reinterpret_cast<volatile int32_t*>(a.route.ready) = 0;
    __threadfence();
  }
  moe_stamp(a.stamps, 0, 0);
  // Units: the shared rows [s0, s1), then the routed units [u0, u1). Split
  // apart, a warp gets (at the 9B's shapes) 0 or 1 shared and 5 or 6 routed
  // units: 5, 6 or 7, and every block waits for its 7s. Balanced, the warp
  // takes its share of all (K + 1) I units, the shared ones still first (6
  // each at the 9B). Needs K I >= the grid's warps, so that no warp's routed
  // share is negative.
  int s0 = 0, s1 = 0, u0 = 0, u1 = 0;
  if (a.shared_gate_up != nullptr) warp_range(I, s0, s1);
  if (a.shared_gate_up != nullptr && a.balance &&
      static_cast<int64_t>(K) * I >= static_cast<int64_t>(gridDim.x) * nw) {
    int t0 = 0, t1 = 0;
    warp_range((K + 1) * I, t0, t1);
    u0 = t0 - s0;
    u1 = t1 - s1;
  } else {
    warp_range(K * I, u0, u1);
  }
  const int items = (s1 - s0 + u1 - u0) * P;  // stages this warp consumes
  UnitCursor fill{s0, s1, Cursor(u0, I)};     // the next unit to request, and its part
  int fill_part = 0;
  auto issue = [&](int s, bool any) {
    if (any) {
      const uint16_t* g =
          (fill.shared() ? a.shared_gate_up + static_cast<int64_t>(fill.row) * H
                         : a.gate_up + (static_cast<int64_t>(ids_s[fill.routed.outer]) * 2 * I +
                                        fill.routed.inner) *
                                           H) +
          fill_part * C;
      uint16_t* dst = ring + s * 2 * C;
      for (int k0 = lane * 8; k0 < C; k0 += 256) {
        cp_async16_stream(dst + k0, g + k0);
        cp_async16_stream(dst + C + k0, g + static_cast<int64_t>(I) * H + k0);
      }
      if (++fill_part == P) {
        fill_part = 0;
        fill.next();
      }
    }
    cp_async_commit();
  };
  // x (normed) into x_s by warps 1 .. nw - 1 (warp 0 routes meanwhile; all
  // warps when nw == 1), each leaving its sum of squares in ss_s; x_scale,
  // after a barrier, gives 1 / rms(x) with the norm, else 1.
  __shared__ float ss_s[16];
  const int xw = nw > 1 ? 1 : 0;
  auto load_x = [&]() {
    if (warp < xw) return;
    float ss = 0.0f;
    for (int k = (threadIdx.x - 32 * xw) * 8; k < H; k += (blockDim.x - 32 * xw) * 8) {
      uint4 v = *reinterpret_cast<const uint4*>(a.x + k);
      if (a.norm_w != nullptr) {
        float x8[8];
        unpack8(v, x8);
        const float4 n0 = *reinterpret_cast<const float4*>(a.norm_w + k),
                     n1 = *reinterpret_cast<const float4*>(a.norm_w + k + 4);
        const float n8[8] = {n0.x, n0.y, n0.z, n0.w, n1.x, n1.y, n1.z, n1.w};
        uint32_t o[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          ss = fmaf(x8[2 * c], x8[2 * c], ss);
          ss = fmaf(x8[2 * c + 1], x8[2 * c + 1], ss);
          const __nv_bfloat162 b =
              __floats2bfloat162_rn(x8[2 * c] * n8[2 * c], x8[2 * c + 1] * n8[2 * c + 1]);
          o[c] = *reinterpret_cast<const uint32_t*>(&b);
        }
        v = make_uint4(o[0], o[1], o[2], o[3]);
      }
      *reinterpret_cast<uint4*>(x_s + k) = v;
    }
    if (a.norm_w != nullptr) {
      ss = warp_sum(ss);
      if (lane == 0) ss_s[warp] = ss;
    }
  };
  auto x_scale = [&]() {
    if (a.norm_w == nullptr) return 1.0f;
    float tot = 0.0f;
    for (int i = xw; i < nw; ++i) tot += ss_s[i];
    return 1.0f / sqrtf(tot / static_cast<float>(H) + a.eps);
  };
  // The shared experts' rows need no routing: requested before it (and before
  // any wait: weights are constants).
  int issued = 0;
  for (; issued < NS && issued < items && fill.shared(); ++issued) issue(issued, true);
  if (a.x_early) load_x();  // x written two or more launches back
  if (!a.ids_early) {       // the routing may come from the kernel just before
    pdl_wait();
    pdl_trigger();
    moe_stamp(a.stamps, 0, 1);
  }
  if (a.route.on) {
    if (a.stamps && warp == 0) {  // the logits' arrival (the routing then reads them from L1)
      const float l0 = __shfl_sync(0xffffffffu, a.route.args.logits[lane % a.route.args.E], 0);
      if (l0 != 12345.0f) moe_stamp(true, 0, 4);
    }
    if (warp == 0) {
      route_any<R64>(a.route.args, bv, route_s, ids_s, w_s);
      moe_stamp(a.stamps, 0, 5);
    }
  } else {
    for (int j = threadIdx.x; j < K; j += blockDim.x) ids_s[j] = a.ids[j];
  }
  if (!a.x_early && !a.ids_early) load_x();  // beside the routing
  __syncthreads();
  moe_stamp(a.stamps, 0, 2);
  for (; issued < NS; ++issued) issue(issued, issued < items);
  if (a.ids_early) {  // x may come from the kernel just before
    pdl_wait();
    pdl_trigger();
    moe_stamp(a.stamps, 0, 1);
  }
  if (flag) {  // the route op's outputs, then the ready word: warp 0 alone
    if (warp == 0) {
      if (lane < K) {
        a.ids[lane] = ids_s[lane];
        a.w[lane] = w_s[lane];
        __threadfence();
      }
      __syncwarp();
      if (lane == 0)
        asm volatile("st.release.gpu.global.s32 [%0], %1;" ::"l"(a.route.ready), "r"(1) : "memory");
    }
  } else if (a.route.on && blockIdx.x == 0) {  // the route op's outputs, for any later reader
    for (int j = threadIdx.x; j < K; j += blockDim.x) {
      a.ids[j] = ids_s[j];
      a.w[j] = w_s[j];
    }
  }
  if (!a.x_early && a.ids_early) {
    load_x();
    __syncthreads();
  }
  const float sc = x_scale();
  moe_stamp(a.stamps, 0, 3);
  UnitCursor at{s0, s1, Cursor(u0, I)};
  int st = 0, part = 0;
  float ag = 0.0f, au = 0.0f;
  for (int item = 0; item < items; ++item, st = st + 1 == NS ? 0 : st + 1) {
    cp_async_wait_group<NS - 1>();  // this lane's copies of the oldest stage
    const uint16_t* wg = ring + st * 2 * C;
    const uint16_t* wu = wg + C;
    const uint16_t* xp = x_s + part * C;
#pragma unroll 4
    for (int k0 = lane * 8; k0 < C; k0 += 256) {
      float g8[8], u8[8], x8[8];
      unpack8(*reinterpret_cast<const uint4*>(wg + k0), g8);
      unpack8(*reinterpret_cast<const uint4*>(wu + k0), u8);
      unpack8(*reinterpret_cast<const uint4*>(xp + k0), x8);
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        ag = fmaf(g8[c], x8[c], ag);
        au = fmaf(u8[c], x8[c], au);
      }
    }
    if (++part == P) {
      const float g = warp_sum(ag) * sc, v = warp_sum(au) * sc;
      if (lane == 0)
        reinterpret_cast<__nv_bfloat16*>(a.act)[static_cast<int64_t>(at.slot(K)) * I + at.inner()] =
            __float2bfloat16_rn(g / (1.0f + expf(-g)) * v);
      part = 0;
      ag = au = 0.0f;
      at.next();
    }
    issue(st, item + NS < items);  // the lane has read its columns of this stage
  }
  moe_warp_end(a.stamps, 0);
}

// Units: output rows h (at most 32 per warp, one per lane's running sum);
// items (j, h) expert by expert, so a warp streams consecutive rows of one
// expert, and every h still adds its experts in j order.
// ACT_SMEM: the block copies act ([K + S, I], written by the kernel before)
// into shared memory after its wait, so an item waits on its weights only,
// not on an L2 round trip for its act row as well (Nsight Compute, session 5:
// with act read from global memory the kernel alone reached 42 % of DRAM
// bandwidth, its warps stalled mostly on those loads).
template <int NS, bool ACT_SMEM, bool R64>
__global__ void __launch_bounds__(256) moe_down_stream_kernel(DownStream a) {
  extern __shared__ __align__(128) unsigned char dyn[];
  __shared__ int32_t ids_s[kMaxSlots];
  __shared__ float w_s[kMaxSlots];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int H = static_cast<int>(a.H), I = static_cast<int>(a.I), K = static_cast<int>(a.K);
  uint16_t* ring = reinterpret_cast<uint16_t*>(dyn) + static_cast<int64_t>(warp) * NS * I;
  // Before pdl_wait: the routing, written by the route kernel at least two
  // launches back (it is complete: a kernel starts only after every block of
  // the one before has passed pdl_trigger, which comes after its pdl_wait), or
  // made here from the router's logits (after pdl_wait unless route_early).
  bool waited = false;
  moe_stamp(a.stamps, 1, 0);
  // Items (o, h): o = 0 the shared experts' down rows (with shared_down: they
  // need no routing, so they are requested first, before it), then the routed
  // slots o - S in order.
  const int S = a.shared_down != nullptr ? 1 : 0;
  int u0 = 0, u1 = 0;
  warp_range(H, u0, u1);
  const int nh = u1 - u0, items = (K + S) * nh;
  Cursor fill(0, max(nh, 1));          // (o, h - u0)
  auto issue = [&](int s, bool any) {  // as in the gate/up kernel
    if (any) {
      const uint16_t* src =
          fill.outer < S
              ? a.shared_down + static_cast<int64_t>(u0 + fill.inner) * I
              : a.down + (static_cast<int64_t>(ids_s[fill.outer - S]) * H + u0 + fill.inner) * I;
      uint16_t* dst = ring + s * I;
      for (int k0 = lane * 8; k0 < I; k0 += 256) cp_async16_stream(dst + k0, src + k0);
      fill.next();
    }
    cp_async_commit();
  };
  int issued = 0;
  for (; issued < NS && issued < items && fill.outer < S; ++issued) issue(issued, true);
  __shared__ int32_t ready_s;
  const bool flag = a.route.on && a.route.ready != nullptr && a.route_early && K <= 32;
  if (flag) {
    // The gate/up kernel's routing, when its first block has written it (it
    // cleared the word before this kernel could start).
    if (threadIdx.x == 0) ready_s = ld_acquire(a.route.ready);
    __syncthreads();
  }
  if (flag && ready_s == 1) {
    for (int j = threadIdx.x; j < K; j += blockDim.x) {
      ids_s[j] = __ldcg(a.ids + j);
      w_s[j] = __ldcg(a.w + j);
    }
  } else if (a.route.on) {
    __shared__ RouteShared route_s;
    float bv[8];
    if (warp == 0) route_bias_any(a.route.args, bv);
    if (!a.route_early) {
      pdl_wait();
      pdl_trigger();
      waited = true;
    }
    if (warp == 0) route_any<R64>(a.route.args, bv, route_s, ids_s, w_s);
  } else {
    for (int j = threadIdx.x; j < K; j += blockDim.x) {
      ids_s[j] = a.ids[j];
      w_s[j] = a.w[j];
    }
  }
  __syncthreads();
  moe_stamp(a.stamps, 1, 1);
  for (; issued < NS; ++issued) issue(issued, issued < items);
  if (!waited) {  // act comes from the kernel just before
    pdl_wait();
    pdl_trigger();
  }
  moe_stamp(a.stamps, 1, 2);
  const uint16_t* act = a.act;
  if constexpr (ACT_SMEM) {  // after the ring: [K + S, I] (I % 8 == 0)
    uint16_t* act_s =
        reinterpret_cast<uint16_t*>(dyn) + static_cast<int64_t>(blockDim.x >> 5) * NS * I;
    const int n = (K + S) * I / 8;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
      reinterpret_cast<uint4*>(act_s)[i] = __ldcg(reinterpret_cast<const uint4*>(a.act) + i);
    __syncthreads();
    act = act_s;
  }
  moe_stamp(a.stamps, 1, 3);
  float tot = 0.0f, tot_s = 0.0f;  // the routed sum; the shared experts' product
  Cursor at(0, max(nh, 1));
  int st = 0;
  for (int item = 0; item < items; ++item, at.next(), st = st + 1 == NS ? 0 : st + 1) {
    cp_async_wait_group<NS - 1>();
    const uint16_t* wr = ring + st * I;
    const uint16_t* ar = act + static_cast<int64_t>(at.outer < S ? K : at.outer - S) * I;
    float acc = 0.0f;
#pragma unroll 4
    for (int k0 = lane * 8; k0 < I; k0 += 256) {
      float w8[8], a8[8];
      unpack8(*reinterpret_cast<const uint4*>(wr + k0), w8);
      unpack8(*reinterpret_cast<const uint4*>(ar + k0), a8);
#pragma unroll
      for (int c = 0; c < 8; ++c) acc = fmaf(w8[c], a8[c], acc);
    }
    const float d = warp_sum(acc);
    if (lane == at.inner) {
      if (at.outer < S)
        tot_s = d;
      else
        tot = fmaf(w_s[at.outer - S], d, tot);
    }
    issue(st, item + NS < items);
  }
  moe_warp_end(a.stamps, 1);
  if (lane < nh) {  // the combine's arithmetic: the routed sum rounded to out's dtype, plus add
    const int h = u0 + lane;
    float v = tot;
    if (S)  // the shared experts' output as their down GEMV would have written it
      v = (a.out_bf ? round_bf16(v) : v) + (a.out_bf ? round_bf16(tot_s) : tot_s);
    else if (a.add)
      v = (a.out_bf ? round_bf16(v) : v) + ldf(a.add, h, a.add_bf);
    if (a.res != nullptr)
      stf(a.res, h, a.res_bf, ldf(a.res, h, a.res_bf) + (a.out_bf ? round_bf16(v) : v));
    else
      stf(a.out, h, a.out_bf, v);
  }
}

// Shared memory per block: the stage budgets (KB) of the gate/up and the down
// kernel; R1SERVE_CUDA_MOE_STREAM=0 turns the streamed form off,
// R1SERVE_CUDA_MOE_STREAM=gu,down sets the budgets (for side-by-side runs).
// The down kernel's 64 KB (two stages of the 9B's 2.8 KB rows a warp, where 96
// KB gave four): its first block fits on an SM beside a gate/up block (135 + 47
// KB of shared memory, 41K + 16K registers; with 96 KB, 231 KB > 228), so it
// can start streaming during that kernel's tail (session 4, H100: 1.633 / 1.631
// vs 1.642 / 1.639 ms a batch-1 step; 180 KB, eight stages, 1.704 / 1.700).
struct StreamBudget {
  bool on = true;
  size_t gate_up = 128 << 10, down = 64 << 10;
  // R1SERVE_CUDA_MOE_GU_PARTS=1/2/4: stages a gate/up unit (where H allows);
  // R1SERVE_CUDA_MOE_GU_WARPS=16/8/4: at most that many warps a block.
  int gu_parts = 2, gu_warps = 16;
};
StreamBudget& budget() {
  static StreamBudget b = [] {
    StreamBudget r;
    if (const char* e = std::getenv("R1SERVE_CUDA_MOE_STREAM")) {
      int g = 0, d = 0;
      if (std::sscanf(e, "%d,%d", &g, &d) == 2 && g >= 16 && d >= 16 && g <= 200 && d <= 200) {
        r.gate_up = static_cast<size_t>(g) << 10;
        r.down = static_cast<size_t>(d) << 10;
      } else if (e[0] == '0') {
        r.on = false;
      }
    }
    if (const char* e = std::getenv("R1SERVE_CUDA_MOE_GU_PARTS")) {
      const int p = std::atoi(e);
      if (p == 1 || p == 2 || p == 4) r.gu_parts = p;
    }
    if (const char* e = std::getenv("R1SERVE_CUDA_MOE_GU_WARPS")) {
      const int w = std::atoi(e);
      if (w == 16 || w == 8 || w == 4) r.gu_warps = w;
    }
    return r;
  }();
  return b;
}

// Warps per block and stages per warp for rows of `stage_bytes` in `budget`
// bytes: the most warps (up to max_warps: 16, 8, 4, 2) whose two stages each
// fit; warps == 0: no fit.
struct RingShape {
  int warps = 0, stages = 0;
};
RingShape ring_shape(size_t stage_bytes, size_t bytes, int max_warps = 8) {
  for (int w : {16, 8, 4, 2}) {
    if (w > max_warps) continue;
    const size_t fit = bytes / (static_cast<size_t>(w) * stage_bytes);
    if (fit >= 2) return {w, fit >= 8 ? 8 : fit >= 4 ? 4 : 2};  // the kernels' NS
  }
  return {};
}

// Blocks in the grid: one or two per SM, as many as the shared memory holds
// (each block's warps keep their own rows in flight; more warps hide more of
// the compute's latency).
unsigned grid_blocks(size_t dyn_smem, const void* kernel) {
  static int sms = 0, per_sm = 0;
  if (sms == 0) {
    int dev = 0;
    R1_CUDA_OK(cudaGetDevice(&dev));
    R1_CUDA_OK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
    R1_CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  }
  cudaFuncAttributes fa{};
  R1_CUDA_OK(cudaFuncGetAttributes(&fa, kernel));
  const size_t block = dyn_smem + fa.sharedSizeBytes + 1024;  // + the driver's reserve
  const int fit = static_cast<int>(static_cast<size_t>(per_sm) / block);
  return static_cast<unsigned>(sms * std::clamp(fit, 1, 2));
}

// Lets `kernel` use all the dynamic shared memory a block may opt into (less
// its static arrays), once per device (the first step of a shape runs eagerly,
// before any capture).
template <typename Kernel>
void allow_smem(Kernel kernel, std::atomic<uint64_t>& done) {
  int dev = 0;
  R1_CUDA_OK(cudaGetDevice(&dev));
  const uint64_t bit = dev < 64 ? uint64_t{1} << dev : 0;
  if (bit != 0 && (done.load(std::memory_order_acquire) & bit) != 0) return;
  int optin = 0;
  R1_CUDA_OK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  cudaFuncAttributes fa{};
  R1_CUDA_OK(cudaFuncGetAttributes(&fa, kernel));
  R1_CUDA_OK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  optin - static_cast<int>(fa.sharedSizeBytes)));
  done.fetch_or(bit, std::memory_order_acq_rel);
}

template <template <int> class Launch, typename... Args>
void with_stages(int stages, Args&&... args) {
  if (stages == 8)
    Launch<8>::run(std::forward<Args>(args)...);
  else if (stages == 4)
    Launch<4>::run(std::forward<Args>(args)...);
  else
    Launch<2>::run(std::forward<Args>(args)...);
}

// One launch of kernel<NS>: shared memory allowed, grid sized, PDL.
template <typename Kernel, typename A>
void launch_stream(Kernel kernel, std::atomic<uint64_t>& raised, const RingShape& rs, size_t smem,
                   cudaStream_t s, const A& a) {
  allow_smem(kernel, raised);
  pdl_launch(kernel, grid_blocks(smem, reinterpret_cast<const void*>(kernel)), 32 * rs.warps, smem,
             s, a);
  R1_CUDA_LAUNCHED();
}
template <int NS>
struct GateUpLaunch {
  static void run(const RingShape& rs, size_t smem, bool r64, cudaStream_t s,
                  const GateUpStream& a) {
    static std::atomic<uint64_t> raised[2]{0, 0};
    if (r64)
      launch_stream(moe_gate_up_stream_kernel<NS, true>, raised[1], rs, smem, s, a);
    else
      launch_stream(moe_gate_up_stream_kernel<NS, false>, raised[0], rs, smem, s, a);
  }
};
template <int NS>
struct DownLaunch {
  static void run(const RingShape& rs, size_t smem, bool act_smem, bool r64, cudaStream_t s,
                  const DownStream& a) {
    static std::atomic<uint64_t> raised[4]{0, 0, 0, 0};
    if (act_smem && r64)
      launch_stream(moe_down_stream_kernel<NS, true, true>, raised[3], rs, smem, s, a);
    else if (act_smem)
      launch_stream(moe_down_stream_kernel<NS, true, false>, raised[1], rs, smem, s, a);
    else if (r64)
      launch_stream(moe_down_stream_kernel<NS, false, true>, raised[2], rs, smem, s, a);
    else
      launch_stream(moe_down_stream_kernel<NS, false, false>, raised[0], rs, smem, s, a);
  }
};
// Whether a launch routing with `route` holds only the 64-expert form's code
// (R1SERVE_CUDA_MOE_ROUTE_R64, default 1; 0: both forms, chosen in the kernel).
EnvSwitch g_route_r64{"R1SERVE_CUDA_MOE_ROUTE_R64", 1};
bool route_r64(const RouteArgs* route) {
  return route != nullptr && g_route_r64.on() && route_e64_fast(*route);
}

}  // namespace

uint64_t pdl_launches(cudaStream_t s) {
  return pdl_launch_count(s);
}

namespace {
// The streamed kernels route a one-token step themselves; the gate/up kernel
// reads x before its wait. On by default since their first H100 run
// (docs/performance-history.md, 2026-12-07 session 4); =0 turns each off.
EnvSwitch g_inline_route{"R1SERVE_CUDA_MOE_INLINE_ROUTE", 1};
EnvSwitch g_x_early{"R1SERVE_CUDA_MOE_X_EARLY", 1};
// The down kernel reads the gate/up kernel's routing when it is ready
// (kernels.h); =0: it routes again (side-by-side runs).
EnvSwitch g_route_ready{"R1SERVE_CUDA_MOE_ROUTE_READY", 1};
// The shared experts' MLP in the streamed kernels (rms_norm_moe_shared_experts_add);
// =0: its own GEMVs (side-by-side runs).
EnvSwitch g_shared_stream{"R1SERVE_CUDA_MOE_SHARED_STREAM", 1};
// The down kernel copies act into shared memory (moe_down_stream_kernel's
// ACT_SMEM); =0: it reads act rows from global memory item by item.
EnvSwitch g_down_act_smem{"R1SERVE_CUDA_MOE_DOWN_ACT_SMEM", 1};
// The gate/up kernel's balanced units (GateUpStream::balance); =0: shared and
// routed units split apart (side-by-side runs).
EnvSwitch g_gu_balance{"R1SERVE_CUDA_MOE_GU_BALANCE", 1};
}  // namespace
void set_moe_gu_balance(bool on) {
  g_gu_balance.set(on ? 1 : 0);
}

std::string moe_stream_stamps() {
  return moe_stamps_summary();
}
bool moe_shared_stream_enabled() {
  return g_shared_stream.on();
}
void set_moe_shared_stream(bool on) {
  g_shared_stream.set(on ? 1 : 0);
}
void set_moe_down_act_smem(bool on) {
  g_down_act_smem.set(on ? 1 : 0);
}
bool moe_route_ready_enabled() {
  return g_route_ready.on();
}
void set_moe_route_ready(bool on) {
  g_route_ready.set(on ? 1 : 0);
}
bool moe_inline_route_enabled() {
  return g_inline_route.on();
}
void set_moe_inline_route(bool on) {
  g_inline_route.set(on ? 1 : 0);
}
bool moe_x_early_enabled() {
  return g_x_early.on();
}
void set_moe_x_early(bool on) {
  g_x_early.set(on ? 1 : 0);
}

void set_moe_stream_enabled(bool on) {
  budget().on = on;
}

bool moe_stream_ok(int64_t H, int64_t I, int64_t K) {
  // The down kernel keeps one output per lane: at most 32 per warp, and the
  // grid has at least two warps per SM.
  static const int sms = [] {
    int dev = 0, n = 0;
    R1_CUDA_OK(cudaGetDevice(&dev));
    R1_CUDA_OK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
  }();
  return budget().on && H <= 32 * 2 * static_cast<int64_t>(sms) && H % 8 == 0 && I % 8 == 0 &&
         H < 65536 && I < 65536 && K >= 1 && K <= kMaxSlots &&
         ring_shape(static_cast<size_t>(4 * H), budget().gate_up).warps > 0 &&
         ring_shape(static_cast<size_t>(2 * I), budget().down).warps > 0;
}

void launch_moe_gate_up_stream(const uint16_t* x, int64_t H, const uint16_t* gate_up, int64_t I,
                               int32_t* ids, int64_t K, bool ids_early, uint16_t* act,
                               cudaStream_t s, const float* norm_w, float eps,
                               const RouteArgs* route, float* w, bool x_early, int32_t* ready,
                               const uint16_t* shared_gate_up) {
  R1_CUDA_REQUIRE(moe_stream_ok(H, I, K), "moe stream: shape");
  InlineRoute ir;
  if (route != nullptr) {
    R1_CUDA_REQUIRE(route_args_ok(*route), "moe stream: routing widths");
    R1_CUDA_REQUIRE(route->K == K && w != nullptr, "moe stream: routing outputs");
    ir = InlineRoute{*route, true, ready};
  }
  R1_CUDA_REQUIRE(
      reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(norm_w) % 16 == 0,
      "moe stream: x and the norm weights must be 16-byte aligned");
  int parts = budget().gu_parts;
  while (parts > 1 && H % (256 * parts) != 0) parts /= 2;
  const int64_t C = H / parts;
  const RingShape rs = ring_shape(static_cast<size_t>(4 * C), budget().gate_up, budget().gu_warps);
  const size_t smem =
      static_cast<size_t>(rs.warps) * rs.stages * 4 * C + static_cast<size_t>(H) * 2;
  with_stages<GateUpLaunch>(
      rs.stages, rs, smem, route_r64(route), s,
      GateUpStream{x, H, I, parts, gate_up, ids, K, act, shared_gate_up, ir, w, ids_early, norm_w,
                   eps, x_early, g_gu_balance.on(), stamps_on()});
}

void launch_moe_down_stream(const uint16_t* act, const uint16_t* down, int64_t H, int64_t I,
                            const int32_t* ids, const float* w, int64_t K, const void* add,
                            bool add_bf, void* out, bool out_bf, void* res, bool res_bf,
                            cudaStream_t s, const RouteArgs* route, bool route_early,
                            const int32_t* ready, const uint16_t* shared_down) {
  R1_CUDA_REQUIRE(moe_stream_ok(H, I, K), "moe stream: shape");
  InlineRoute ir;
  if (route != nullptr) {
    R1_CUDA_REQUIRE(route_args_ok(*route), "moe stream: routing widths");
    R1_CUDA_REQUIRE(route->K == K, "moe stream: routing outputs");
    ir = InlineRoute{*route, true, const_cast<int32_t*>(ready)};
  }
  const RingShape rs = ring_shape(static_cast<size_t>(2 * I), budget().down);
  // act in shared memory after the ring where it is small (the 9B's 9 x 1408
  // values: 25 KB; a block then still fits beside a gate/up block).
  const size_t act_bytes = static_cast<size_t>(K + (shared_down != nullptr ? 1 : 0)) * I * 2;
  const bool act_smem = g_down_act_smem.on() && act_bytes <= (48u << 10);
  const size_t smem =
      static_cast<size_t>(rs.warps) * rs.stages * 2 * I + (act_smem ? act_bytes : 0);
  with_stages<DownLaunch>(rs.stages, rs, smem, act_smem, route_r64(route), s,
                          DownStream{act, down, H, I, ids, w, K, shared_down, ir, route_early,
                                     shared_down != nullptr ? nullptr : add, add_bf, out, out_bf,
                                     res, res_bf, stamps_on()});
}

}  // namespace r1::backend::cuda
