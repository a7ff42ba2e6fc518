// W_UV's per-head product over the absorbed MLA attention's unmerged split
// states (kernels.h, "merge_gemv.cu"). At decode the attention's split blocks
// would otherwise wait for each other, merge and write BF16 rows that this
// product then reads back: here they write their partial states and leave,
// and each block of the product merges its head's row itself, in shared
// memory after pdl_wait. A block takes 32 rows of one head (4 a warp) for all
// tokens, its weights in registers before the wait, so a head's merge is done
// by N / 32 blocks (4 for the 9B's 128-row heads: 64 blocks, ~1.3 MB of
// partial states read from L2) rather than by every block of the plain GEMV's
// 512. The arithmetic is the attention's merge (mla_attention.cu,
// merge_outputs) and the plain per-head GEMV's (gemv.cu, dense_gemv_kernel at
// gemv_plan's split), so the result equals the two kernels' bit for bit.
#include <algorithm>
#include <type_traits>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

constexpr int kK = 512;            // kv_lora_rank (every DeepSeek V2/V3 model)
constexpr int kChunks = kK / 256;  // 16-byte chunks of a row a lane
constexpr int kMaxParts = 64;      // mla_max_splits()
constexpr int kBatch = 24;         // partials a thread requests at once (one round up to 24 splits)

// Token t's row of head h: x where the attention wrote it (one part), else the
// merge of its parts[t] partial states: warp t makes the weights w = exp(m - M)
// / sum_z l_z exp(m_z - M) with its lanes over the splits (z, z + 32), then each
// float4 of outputs is summed in split order by fmaf and rounded to BF16 (a
// thread's first outputs have their first 16 partials requested before the
// weights are made). Every thread calls it; ends synced.
template <int T>
__device__ __forceinline__ void merge_rows(const MergeGemvArgs& a, int h, const int (&parts)[T],
                                           uint16_t (&xs)[T][kK]) {
  __shared__ float w_s[T][kMaxParts];
  constexpr int kCols = kK / 4;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  auto row_of = [&](int z, int t) {  // [split z][token t][head h]
    return (static_cast<int64_t>(z) * a.T + t) * a.H + h;
  };
  float4 v[kBatch];
  auto load_partials = [&](int t, int c, int z0) {
#pragma unroll
    for (int b = 0; b < kBatch; ++b)
      v[b] = z0 + b < parts[t]
                 ? __ldcg(reinterpret_cast<const float4*>(a.acc + row_of(z0 + b, t) * kK + c))
                 : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  };
  if (tid < T * kCols && parts[tid / kCols] > 1) load_partials(tid / kCols, (tid % kCols) * 4, 0);
#pragma unroll
  for (int t = 0; t < T; ++t)
    if (parts[t] == 1)
      for (int i = tid * 8; i < kK; i += 256 * 8)
        cp_async16(&xs[t][i], a.x + t * a.ldx + h * a.x_head_stride + i, true);
  if (warp < T && parts[warp] > 1) {
    const int t = warp, P = parts[t];
    // Each split's maximum and sum in one load (one L2 round trip, not two).
    float m[2], l[2], e[2];
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int z = lane + 32 * k;
      const float2 ml = z < P ? __ldcg(reinterpret_cast<const float2*>(a.ml + 2 * row_of(z, t)))
                              : make_float2(-INFINITY, 0.0f);
      m[k] = ml.x;
      l[k] = ml.y;
    }
    const float M = warp_max(fmaxf(m[0], m[1]));
    float part = 0.0f;
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      e[k] = m[k] == -INFINITY ? 0.0f : expf(m[k] - M);
      if (m[k] != -INFINITY) part += l[k] * e[k];
    }
    const float Lsum = warp_sum(part);
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int z = lane + 32 * k;
      if (z < P) w_s[t][z] = Lsum <= 0.0f ? 0.0f : e[k] / Lsum;
    }
  }
  cp_async_wait_all();
  __syncthreads();
  for (int idx = tid; idx < T * kCols; idx += 256) {
    const int t = idx / kCols, c = (idx % kCols) * 4;
    if (parts[t] <= 1) continue;
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int z0 = 0; z0 < parts[t]; z0 += kBatch) {
      if (z0 > 0 || idx != tid) load_partials(t, c, z0);
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        if (z0 + b >= parts[t]) break;
        const float wz = w_s[t][z0 + b];
        sum.x = fmaf(wz, v[b].x, sum.x);
        sum.y = fmaf(wz, v[b].y, sum.y);
        sum.z = fmaf(wz, v[b].z, sum.z);
        sum.w = fmaf(wz, v[b].w, sum.w);
      }
    }
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&xs[t][c]);
    o[0] = __floats2bfloat162_rn(sum.x, sum.y);
    o[1] = __floats2bfloat162_rn(sum.z, sum.w);
  }
  __syncthreads();
}

// Grid (N / (8 RW) rounded up, H), 256 threads, RW weight rows a warp (kept in
// registers). S: the plain GEMV's split (warps a row, each over a K / S
// stretch, their sums added in order after a warp sum), known to the host, so
// the kernel holds only its own loop.
template <int T, int RW, int S>
__global__ void __launch_bounds__(256) merge_gemv_kernel(MergeGemvArgs a) {
  static_assert(kChunks % S == 0, "a split covers whole chunks");
  constexpr int kRowsPerWarp = RW;
  __shared__ __align__(16) uint16_t xs[T][kK];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, h = blockIdx.y;
  const int n0 = (blockIdx.x * 8 + warp) * kRowsPerWarp;
  const uint16_t* w = a.w + static_cast<int64_t>(h) * a.N * kK;
  uint4 wv[kRowsPerWarp][kChunks];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int c = 0; c < kChunks; ++c)
      wv[r][c] =
          ld_stream(w + static_cast<int64_t>(min(n0 + r, a.N - 1)) * kK + c * 256 + lane * 8);
  int parts[T];  // the step's positions may be read before the wait
#pragma unroll
  for (int t = 0; t < T; ++t)
    parts[t] = mla_split_parts(a.positions[t], a.splits, a.kps, a.helper != 0);
  if (a.trigger_first) pdl_trigger();
  pdl_wait();
  pdl_trigger();
  merge_rows<T>(a, h, parts, xs);
  constexpr int per = kChunks / S;
#pragma unroll
  for (int t = 0; t < T; ++t) {
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      float v = 0.0f;
#pragma unroll
      for (int p = 0; p < S; ++p) {
        float acc = 0.0f;
#pragma unroll
        for (int j = 0; j < per; ++j) {
          const int c = p * per + j;
          float x8[8], w8[8];
          unpack8(*reinterpret_cast<const uint4*>(&xs[t][c * 256 + lane * 8]), x8);
          unpack8(wv[r][c], w8);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc = fmaf(w8[e], x8[e], acc);
        }
        const float ps = warp_sum(acc);
        v = S == 1 ? ps : v + ps;  // dense_gemv_kernel: S == 1 one sum, else 0 + each in order
      }
      if (lane == 0 && n0 + r < a.N)
        a.out[t * a.ldo + static_cast<int64_t>(h) * a.out_head_stride + n0 + r] =
            __bfloat16_as_ushort(__float2bfloat16_rn(v));
    }
  }
}

int split_for(int64_t H, int64_t N, int64_t K) {
  static int sms = 0;
  if (sms == 0) {
    int dev = 0;
    R1_CUDA_OK(cudaGetDevice(&dev));
    R1_CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  }
  return gemv_plan(N * H, K, false, sms).split;
}

}  // namespace

bool merge_gemv_supported(int64_t H, int64_t N, int64_t K, int64_t T) {
  if (K != kK || T < 1 || T > 4 || H < 1 || N < 1) return false;
  const int S = split_for(H, N, K);
  return S >= 1 && kChunks % S == 0;
}

void launch_merge_gemv(const MergeGemvArgs& a, cudaStream_t s) {
  R1_CUDA_REQUIRE(merge_gemv_supported(a.H, a.N, a.K, a.T), "merge gemv: shape");
  R1_CUDA_REQUIRE(a.acc != nullptr && a.ml != nullptr && a.positions != nullptr && a.splits >= 1 &&
                      a.splits <= kMaxParts && a.kps > 0 && a.ldx % 8 == 0 &&
                      a.x_head_stride % 8 == 0,
                  "merge gemv: arguments");
  const int S = split_for(a.H, a.N, a.K);
  // Rows a warp: 4 (64 blocks for the 9B's 16 x 128 rows). Session 6 measured
  // 2 rows +12 us a batch-1 step and 8 rows slower still (docs/performance-history.md);
  // session 10 dropped those forms with their switch.
  constexpr int kRw = 4;
  const dim3 grid(static_cast<unsigned>((a.N + 8 * kRw - 1) / (8 * kRw)),
                  static_cast<unsigned>(a.H));
  static_assert(kChunks == 2, "splits 1 and 2 cover every divisor of kChunks");
  auto go = [&](auto tc) {
    constexpr int TT = decltype(tc)::value;
    if (S == 1)
      pdl_launch(merge_gemv_kernel<TT, kRw, 1>, grid, 256, 0, s, a);
    else
      pdl_launch(merge_gemv_kernel<TT, kRw, 2>, grid, 256, 0, s, a);
  };
  switch (a.T) {
    case 1:
      go(std::integral_constant<int, 1>{});
      break;
    case 2:
      go(std::integral_constant<int, 2>{});
      break;
    case 3:
      go(std::integral_constant<int, 3>{});
      break;
    default:
      go(std::integral_constant<int, 4>{});
      break;
  }
  R1_CUDA_LAUNCHED();
}

}  // namespace r1::backend::cuda
