// Routed-expert GEMVs for small batches, streamed through shared memory: every
// warp owns a contiguous range of the step's weight rows (of the experts that
// have tokens) and keeps NS of them (2, 4 or 8) in flight as cp.async copies
// into a ring of shared-memory stages, each lane copying and later reading only
// its own 16-byte columns (so a stage needs no barrier, just a commit group).
// One or two blocks per SM (the grid is persistent), so no block pays the
// expert lookups or the ramp more than once, and a warp's next rows arrive
// while it computes. The products are those of moe.cu's warp-per-row GEMVs bit
// for bit (each lane visits the same columns in the same order); in the direct
// form (one token) there is no sort, slot j is the token's j-th expert, and the
// down kernel also does the weighted combine (and adds the shared experts'
// output).
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

constexpr int kMaxSlots = 256;
constexpr int kChunk = 4;  // pairs per pass over a row in shared memory

struct GateUpStream {
  const void* x;
  bool x_bf;
  int64_t H, I;
  const uint16_t* gate_up;
  const int4* slot_info;  // sorted form: {expert, begin, end, 1} per slot, zeros after
  int nslots;
  const int32_t* sorted_pair;
  int P;
  int64_t K;
  const int32_t* ids;  // direct form: the token's K experts
  uint16_t* act;       // [P, I]: by sorted position, or by slot (direct)
};

struct DownStream {
  const uint16_t* act;
  const uint16_t* down;
  int64_t H, I;
  const int4* slot_info;  // sorted form
  int nslots;
  float* y;  // sorted form: [P, H] by sorted position
  // Direct form: out[h] = sum_j w[j] * (Wd_ids[j][h] . act[j]) (+ add[h]).
  const int32_t* ids;
  const float* w;
  int64_t K;
  const void* add;
  bool add_bf;
  void* out;
  bool out_bf;
};

__device__ __forceinline__ void load_x8(const void* x, bool x_bf, int64_t idx, float* f) {
  if (x_bf) {
    unpack8(*reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(x) + idx), f);
  } else {
    const float4 a = *reinterpret_cast<const float4*>(static_cast<const float*>(x) + idx);
    const float4 b = *reinterpret_cast<const float4*>(static_cast<const float*>(x) + idx + 4);
    f[0] = a.x;
    f[1] = a.y;
    f[2] = a.z;
    f[3] = a.w;
    f[4] = b.x;
    f[5] = b.y;
    f[6] = b.z;
    f[7] = b.w;
  }
}

// The slot table into shared memory (direct form: slot j = {ids[j], j, j + 1, 1})
// and the number of slots with pairs (a prefix of the table). Every thread calls it.
__device__ __forceinline__ int load_slots(const int4* slot_info, int nslots, const int32_t* ids,
                                          int4* info_s, int* n_s) {
  if (threadIdx.x == 0) *n_s = 0;
  for (int y = threadIdx.x; y < nslots; y += blockDim.x)
    info_s[y] = ids != nullptr ? make_int4(ids[y], y, y + 1, 1) : slot_info[y];
  __syncthreads();
  for (int y = threadIdx.x; y < nslots; y += blockDim.x)
    if (info_s[y].w != 0 && (y + 1 == nslots || info_s[y + 1].w == 0)) *n_s = y + 1;
  __syncthreads();
  return *n_s;
}

// This warp's share [first, last) of `units` work units, in order.
__device__ __forceinline__ void warp_range(int units, int& first, int& last) {
  const int64_t nw = blockDim.x >> 5;
  const int64_t W = static_cast<int64_t>(gridDim.x) * nw;
  const int64_t gw = static_cast<int64_t>(blockIdx.x) * nw + (threadIdx.x >> 5);
  first = static_cast<int>(gw * units / W);
  last = static_cast<int>((gw + 1) * units / W);
}

// A position (outer, inner) in an order of units, stepped without divisions
// (the loops run on a few warps per SM, so 64-bit divisions would dominate).
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

// Waits for this lane's copies of the oldest of the NS stages in flight.
template <int NS>
__device__ __forceinline__ void wait_oldest() {
  cp_async_wait_group<NS - 1>();
}

// Units: (slot y, row r) for y < n, r < I; stage = the gate row and the up row.
template <int NS, bool DIRECT>
__global__ void __launch_bounds__(256, 1) moe_gate_up_stream_kernel(GateUpStream a) {
  extern __shared__ __align__(128) unsigned char dyn[];
  __shared__ int4 info_s[kMaxSlots];
  __shared__ int n_s;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  const int H = static_cast<int>(a.H), I = static_cast<int>(a.I);
  constexpr int ns = NS;
  uint16_t* ring = reinterpret_cast<uint16_t*>(dyn) + static_cast<int64_t>(warp) * ns * 2 * H;
  // Sorted form: the x row of each sorted position; direct form: the token's x (BF16).
  int32_t* xrow_s = reinterpret_cast<int32_t*>(dyn + static_cast<size_t>(nw) * ns * 4 * H);
  uint16_t* x_s = reinterpret_cast<uint16_t*>(xrow_s);
  pdl_wait();  // the slot table comes from the kernel just before
  pdl_trigger();
  constexpr bool direct = DIRECT;
  if constexpr (DIRECT) {
    for (int k = threadIdx.x * 8; k < H; k += blockDim.x * 8)
      *reinterpret_cast<uint4*>(x_s + k) =
          *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(a.x) + k);
  } else {
    for (int p = threadIdx.x; p < a.P; p += blockDim.x)
      xrow_s[p] = static_cast<int32_t>(a.sorted_pair[p] / a.K);
  }
  const int n =
      load_slots(a.slot_info, direct ? static_cast<int>(a.K) : a.nslots, a.ids, info_s, &n_s);
  int u0 = 0, u1 = 0;
  warp_range(n * I, u0, u1);
  Cursor fill(u0, I);  // lane 0: the next unit to request
  // Every lane copies (and later reads) only its own 16-byte columns of a
  // unit's two rows, so a stage needs no barrier: one commit group per stage.
  auto issue = [&](int s, bool any) {
    if (any) {
      const uint16_t* g =
          a.gate_up + (static_cast<int64_t>(info_s[fill.outer].x) * 2 * I + fill.inner) * H;
      uint16_t* dst = ring + s * 2 * H;
      for (int k0 = lane * 8; k0 < H; k0 += 256) {
        cp_async16(dst + k0, g + k0, true);
        cp_async16(dst + H + k0, g + static_cast<int64_t>(I) * H + k0, true);
      }
      fill.next();
    }
    cp_async_commit();
  };
  for (int s = 0; s < ns; ++s) issue(s, u0 + s < u1);
  Cursor at(u0, I);
  int st = 0;
  for (int u = u0; u < u1; ++u, at.next(), st = st + 1 == ns ? 0 : st + 1) {
    wait_oldest<NS>();
    const int r = at.inner;
    const int4 info = info_s[at.outer];
    const uint16_t* wg = ring + st * 2 * H;
    const uint16_t* wu = wg + H;
    if constexpr (DIRECT) {  // one pair, slot j = info.y; x in shared memory
      float ag = 0.0f, au = 0.0f;
#pragma unroll 4
      for (int k0 = lane * 8; k0 < H; k0 += 256) {
        float g8[8], u8[8], x8[8];
        unpack8(*reinterpret_cast<const uint4*>(wg + k0), g8);
        unpack8(*reinterpret_cast<const uint4*>(wu + k0), u8);
        unpack8(*reinterpret_cast<const uint4*>(x_s + k0), x8);
#pragma unroll
        for (int c = 0; c < 8; ++c) {
          ag = fmaf(g8[c], x8[c], ag);
          au = fmaf(u8[c], x8[c], au);
        }
      }
      const float g = warp_sum(ag), v = warp_sum(au);
      if (lane == 0)
        reinterpret_cast<__nv_bfloat16*>(a.act)[static_cast<int64_t>(info.y) * I + r] =
            __float2bfloat16_rn(g / (1.0f + expf(-g)) * v);
    }
    for (int p0 = info.y; !DIRECT && p0 < info.z; p0 += kChunk) {
      const int np = min(kChunk, info.z - p0);
      int64_t xrow[kChunk];
#pragma unroll
      for (int q = 0; q < kChunk; ++q)
        xrow[q] = q < np ? static_cast<int64_t>(xrow_s[p0 + q]) * H : 0;
      float ag[kChunk] = {}, au[kChunk] = {};
#pragma unroll 4
      for (int k0 = lane * 8; k0 < H; k0 += 256) {
        float g8[8], u8[8];
        unpack8(*reinterpret_cast<const uint4*>(wg + k0), g8);
        unpack8(*reinterpret_cast<const uint4*>(wu + k0), u8);
#pragma unroll
        for (int q = 0; q < kChunk; ++q) {
          if (q < np) {
            float x8[8];
            load_x8(a.x, a.x_bf, xrow[q] + k0, x8);
#pragma unroll
            for (int c = 0; c < 8; ++c) {
              ag[q] = fmaf(g8[c], x8[c], ag[q]);
              au[q] = fmaf(u8[c], x8[c], au[q]);
            }
          }
        }
      }
#pragma unroll
      for (int q = 0; q < kChunk; ++q) {
        const float g = warp_sum(ag[q]), v = warp_sum(au[q]);
        if (lane == 0 && q < np)
          reinterpret_cast<__nv_bfloat16*>(a.act)[static_cast<int64_t>(p0 + q) * I + r] =
              __float2bfloat16_rn(g / (1.0f + expf(-g)) * v);
      }
    }
    issue(st, u + ns < u1);  // the lane has read its columns of this stage
  }
}

// Sorted form: units (slot y, output row h), one stage each. Direct form: units
// h, items (h, j) for the token's K experts, one stage each, combined in j order.
template <int NS, bool DIRECT>
__global__ void __launch_bounds__(256) moe_down_stream_kernel(DownStream a) {
  extern __shared__ __align__(128) unsigned char dyn[];
  __shared__ int4 info_s[kMaxSlots];
  __shared__ float w_s[kMaxSlots];
  __shared__ int n_s;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int H = static_cast<int>(a.H), I = static_cast<int>(a.I);
  constexpr int ns = NS;
  uint16_t* ring = reinterpret_cast<uint16_t*>(dyn) + static_cast<int64_t>(warp) * ns * I;
  // Before pdl_wait: the routing, written by the route and sort kernels at least
  // two launches back. They are complete: a kernel starts only after every block
  // of the one before has passed pdl_trigger, which comes after its pdl_wait.
  constexpr bool direct = DIRECT;
  const int K = direct ? static_cast<int>(a.K) : 1;
  if (direct)
    for (int j = threadIdx.x; j < K; j += blockDim.x) w_s[j] = a.w[j];
  const int n = load_slots(a.slot_info, direct ? K : a.nslots, a.ids, info_s, &n_s);
  int u0 = 0, u1 = 0;
  warp_range(direct ? H : n * H, u0, u1);
  // Items in order: (slot y, row h) for this warp's units. Sorted form: units
  // (slot, h), one item each. Direct form: units h (at most 32 per warp, one per
  // lane's running sum), items (j, h) expert by expert, so a warp streams
  // consecutive rows of one expert and every h still adds its experts in j order.
  const int nh = u1 - u0;
  const int i0 = direct ? 0 : u0, i1 = direct ? K * nh : u1;
  const int n_inner = direct ? nh : H;
  Cursor fill(i0, max(n_inner, 1));
  auto issue = [&](int s, bool any) {  // as in the gate/up kernel
    if (any) {
      const int y = fill.outer, h = direct ? u0 + fill.inner : fill.inner;
      const uint16_t* src = a.down + (static_cast<int64_t>(info_s[y].x) * H + h) * I;
      uint16_t* dst = ring + s * I;
      for (int k0 = lane * 8; k0 < I; k0 += 256) cp_async16(dst + k0, src + k0, true);
      fill.next();
    }
    cp_async_commit();
  };
  for (int s = 0; s < ns; ++s) issue(s, i0 + s < i1);
  pdl_wait();  // act comes from the kernel just before
  pdl_trigger();
  float tot = 0.0f;
  Cursor at(i0, max(n_inner, 1));
  int st = 0;
  for (int item = i0; item < i1; ++item, at.next(), st = st + 1 == ns ? 0 : st + 1) {
    wait_oldest<NS>();
    const uint16_t* wr = ring + st * I;
    const int y = at.outer, h = direct ? u0 + at.inner : at.inner;
    const int4 info = info_s[y];
    if constexpr (DIRECT) {  // one pair (slot y), combined in slot order
      float acc = 0.0f;
      const uint16_t* ar = a.act + static_cast<int64_t>(y) * I;
#pragma unroll 4
      for (int k0 = lane * 8; k0 < I; k0 += 256) {
        float w8[8], a8[8];
        unpack8(*reinterpret_cast<const uint4*>(wr + k0), w8);
        unpack8(*reinterpret_cast<const uint4*>(ar + k0), a8);
#pragma unroll
        for (int c = 0; c < 8; ++c) acc = fmaf(w8[c], a8[c], acc);
      }
      const float d = warp_sum(acc);
      if (lane == at.inner) tot = fmaf(w_s[y], d, tot);
    }
    for (int p0 = info.y; !DIRECT && p0 < info.z; p0 += kChunk) {
      const int np = min(kChunk, info.z - p0);
      float acc[kChunk] = {};
#pragma unroll 4
      for (int k0 = lane * 8; k0 < I; k0 += 256) {
        float w8[8];
        unpack8(*reinterpret_cast<const uint4*>(wr + k0), w8);
#pragma unroll
        for (int q = 0; q < kChunk; ++q) {
          if (q < np) {
            float a8[8];
            unpack8(*reinterpret_cast<const uint4*>(a.act + static_cast<int64_t>(p0 + q) * I + k0),
                    a8);
#pragma unroll
            for (int c = 0; c < 8; ++c) acc[q] = fmaf(w8[c], a8[c], acc[q]);
          }
        }
      }
      {
#pragma unroll
        for (int q = 0; q < kChunk; ++q) {
          const float v = warp_sum(acc[q]);
          if (lane == 0 && q < np) a.y[static_cast<int64_t>(p0 + q) * H + h] = v;
        }
      }
    }
    issue(st, item + ns < i1);
  }
  if (DIRECT && lane < nh) {
    const int h = u0 + lane;
    float v = tot;
    if (a.add) v = (a.out_bf ? round_bf16(v) : v) + ldf(a.add, h, a.add_bf);
    stf(a.out, h, a.out_bf, v);
  }
}

// Shared memory per block: the stage budgets (KB) of the gate/up and the down
// kernel; R1SERVE_CUDA_MOE_STREAM=0 turns the streamed form off,
// R1SERVE_CUDA_MOE_STREAM=gu,down sets the budgets (for side-by-side runs).
struct StreamBudget {
  bool on = true;
  size_t gate_up = 128 << 10, down = 96 << 10;
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
    return r;
  }();
  return b;
}

// Warps per block and stages per warp for rows of `stage_bytes` in `budget`
// bytes: 8 warps if two stages each fit, else 4, else 2; warps == 0: no fit.
struct RingShape {
  int warps = 0, stages = 0;
};
RingShape ring_shape(size_t stage_bytes, size_t bytes) {
  for (int w : {8, 4, 2}) {
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
  static void run(const RingShape& rs, size_t smem, cudaStream_t s, const GateUpStream& a) {
    static std::atomic<uint64_t> raised[2] = {0, 0};
    if (a.ids != nullptr)
      launch_stream(moe_gate_up_stream_kernel<NS, true>, raised[1], rs, smem, s, a);
    else
      launch_stream(moe_gate_up_stream_kernel<NS, false>, raised[0], rs, smem, s, a);
  }
};
template <int NS>
struct DownLaunch {
  static void run(const RingShape& rs, size_t smem, cudaStream_t s, const DownStream& a) {
    static std::atomic<uint64_t> raised[2] = {0, 0};
    if (a.ids != nullptr)
      launch_stream(moe_down_stream_kernel<NS, true>, raised[1], rs, smem, s, a);
    else
      launch_stream(moe_down_stream_kernel<NS, false>, raised[0], rs, smem, s, a);
  }
};

}  // namespace

void set_moe_stream_enabled(bool on) {
  budget().on = on;
}

bool moe_stream_ok(int64_t H, int64_t I, int64_t slots, int64_t P) {
  // The direct down kernel keeps one output per lane: at most 32 per warp, and
  // the grid has at least two warps per SM.
  static const int sms = [] {
    int dev = 0, n = 0;
    R1_CUDA_OK(cudaGetDevice(&dev));
    R1_CUDA_OK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
  }();
  return budget().on && H <= 32 * 2 * static_cast<int64_t>(sms) && H % 8 == 0 && I % 8 == 0 &&
         H < 65536 && I < 65536 && slots <= kMaxSlots && P <= 4096 &&
         ring_shape(static_cast<size_t>(4 * H), budget().gate_up).warps > 0 &&
         ring_shape(static_cast<size_t>(2 * I), budget().down).warps > 0;
}

void launch_moe_gate_up_stream(const void* x, bool x_bf, int64_t H, const uint16_t* gate_up,
                               int64_t I, const int32_t* slot_info, int64_t nslots,
                               const int32_t* sorted_pair, int64_t P, const int32_t* ids, int64_t K,
                               uint16_t* act, cudaStream_t s) {
  R1_CUDA_REQUIRE(moe_stream_ok(H, I, ids ? K : nslots, P), "moe stream: shape");
  R1_CUDA_REQUIRE(ids == nullptr || (x_bf && reinterpret_cast<uintptr_t>(x) % 16 == 0),
                  "moe stream: the direct form takes aligned BF16 activations");
  const RingShape rs = ring_shape(static_cast<size_t>(4 * H), budget().gate_up);
  const size_t smem = static_cast<size_t>(rs.warps) * rs.stages * 4 * H +
                      (ids ? static_cast<size_t>(H) * 2 : static_cast<size_t>(P) * 4);
  const GateUpStream a{x,
                       x_bf,
                       H,
                       I,
                       gate_up,
                       reinterpret_cast<const int4*>(slot_info),
                       static_cast<int>(nslots),
                       sorted_pair,
                       static_cast<int>(P),
                       K,
                       ids,
                       act};
  with_stages<GateUpLaunch>(rs.stages, rs, smem, s, a);
}

void launch_moe_down_stream(const uint16_t* act, const uint16_t* down, int64_t H, int64_t I,
                            const int32_t* slot_info, int64_t nslots, float* y, const int32_t* ids,
                            const float* w, int64_t K, const void* add, bool add_bf, void* out,
                            bool out_bf, cudaStream_t s) {
  R1_CUDA_REQUIRE(moe_stream_ok(H, I, ids ? K : nslots, 0), "moe stream: shape");
  R1_CUDA_REQUIRE(ids != nullptr ? (w != nullptr && out != nullptr) : y != nullptr,
                  "moe stream: outputs");
  const RingShape rs = ring_shape(static_cast<size_t>(2 * I), budget().down);
  const size_t smem = static_cast<size_t>(rs.warps) * rs.stages * 2 * I;
  const DownStream a{act,
                     down,
                     H,
                     I,
                     reinterpret_cast<const int4*>(slot_info),
                     static_cast<int>(nslots),
                     y,
                     ids,
                     w,
                     K,
                     add,
                     add_bf,
                     out,
                     out_bf};
  with_stages<DownLaunch>(rs.stages, rs, smem, s, a);
}

}  // namespace r1::backend::cuda
