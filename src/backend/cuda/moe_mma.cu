// The routed experts of a decode batch (more pairs than the expert GEMVs take)
// on the tensor cores, driven from the device: the sort kernel's slot_info
// names each grid row's expert and its pairs, so no count comes back to the
// host and the step can be recorded as a CUDA graph. A block owns 128 weight
// rows of one expert (gate/up: 64 gate rows and the matching 64 up rows, so
// SiLU(g) * u is formed in registers) and streams them through shared memory in
// 64-column stages (cp.async, four stages) while mma.sync m16n8k16 multiplies
// them by the expert's tokens (up to 8 * NT a pass, gathered straight from x
// through sorted_pair). Weights are the A operand (rows = outputs), tokens the
// B operand in 8-column tiles taken in pairs, so a batch's few tokens per expert
// cost at most 15 padding columns a pass, not a 64-row tile. Each weight byte
// is read once per pass of 8 * NT tokens.
#include <algorithm>
#include <cstdlib>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 32 * kWarps;  // weight rows a block (two m16 tiles a warp)
constexpr int kBK = 64;             // columns a stage (8 chunks of 16 bytes a row)
constexpr int kStages = 4;

static_assert(kBK == 64, "swz64 tiles are 64 columns wide");
__device__ __forceinline__ int swz(int r, int c) {
  return swz64(r, c);
}

template <int NT>
__host__ __device__ constexpr int stage_elems() {
  return (kRows + 8 * NT) * kBK;
}

// kGateUp: w is [E][2N][Kd] (gate rows, then up rows), out is BF16 act [P][N] =
// SiLU(gate . x) * (up . x), the F32 products rounded once. Else w is [E][N][Kd]
// and out is F32 y [P][N]. x row of sorted position q: sorted_pair[q] / topk
// (or q when sorted_pair is null), ldx apart.
template <int NT, bool kGateUp>
__global__ void __launch_bounds__(kThreads)
    moe_mma_kernel(const uint16_t* x, int64_t ldx, const int32_t* sorted_pair, int topk,
                   const uint16_t* w, int64_t N, int64_t Kd, const int4* slot_info, void* out) {
  extern __shared__ __align__(16) uint16_t smem[];
  pdl_wait();
  pdl_trigger();
  const int4 info = slot_info[blockIdx.y];
  if (info.w == 0) return;
  const int e = info.x, begin = info.y, end = info.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  // Outputs of this block: gate/up 64 (128 weight rows), down 128.
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * (kGateUp ? kRows / 2 : kRows);
  const int64_t rows_per_expert = kGateUp ? 2 * N : N;
  const uint16_t* we = w + static_cast<int64_t>(e) * rows_per_expert * Kd;

  // This thread's copies: chunk c = tid % 8 of tile rows tid / 8 + 16 j.
  const int cc = tid & 7, r0 = tid >> 3;
  const uint16_t* wrow[kRows / 16];
  bool wok[kRows / 16];
#pragma unroll
  for (int j = 0; j < kRows / 16; ++j) {
    const int r = r0 + 16 * j;
    int64_t out_n, grow;
    if (kGateUp) {
      out_n = n0 + (r & 63);
      grow = (r < 64 ? 0 : N) + out_n;
    } else {
      out_n = n0 + r;
      grow = out_n;
    }
    wok[j] = out_n < N;
    wrow[j] = we + (wok[j] ? grow : 0) * Kd;
  }
  const int nk = static_cast<int>((Kd + kBK - 1) / kBK);

  // Warp tiles: rows a0r .. a0r + 15 and a1r .. a1r + 15 of the block's 128.
  const int a0r = kGateUp ? 16 * warp : 32 * warp;
  const int a1r = kGateUp ? 64 + 16 * warp : 32 * warp + 16;

  for (int m0 = begin; m0 < end; m0 += 8 * NT) {
    const int cnt = min(8 * NT, end - m0);
    const int pairs = (cnt + 15) >> 4;  // n8 tiles used, in pairs
    const uint16_t* xrow[NT / 2];
    bool xok[NT / 2];
#pragma unroll
    for (int j = 0; j < NT / 2; ++j) {
      const int q = r0 + 16 * j;
      xok[j] = q < cnt;
      const int64_t src = xok[j] ? (sorted_pair ? sorted_pair[m0 + q] / topk : m0 + q) : 0;
      xrow[j] = x + src * ldx;
    }
    auto load = [&](int kt) {
      uint16_t* st = smem + static_cast<size_t>(kt % kStages) * stage_elems<NT>();
      const int64_t k = static_cast<int64_t>(kt) * kBK + 8 * cc;
      const bool kok = k < Kd;
#pragma unroll
      for (int j = 0; j < kRows / 16; ++j) {
        const bool ok = kok && wok[j];
        uint16_t* dst = st + swz(r0 + 16 * j, cc);
        if (ok)
          cp_async16_stream(dst, wrow[j] + k);
        else
          cp_async16(dst, we, false);
      }
      uint16_t* xs = st + kRows * kBK;
#pragma unroll
      for (int j = 0; j < NT / 2; ++j) {
        const bool ok = kok && xok[j];
        cp_async16(xs + swz(r0 + 16 * j, cc), ok ? xrow[j] + k : x, ok);
      }
    };
    float acc[2][NT][4];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[a][j][c] = 0.0f;

#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < nk) load(s);
      cp_async_commit();
    }
    for (int kt = 0; kt < nk; ++kt) {
      cp_async_wait_group<kStages - 2>();
      __syncthreads();
      if (kt + kStages - 1 < nk) load(kt + kStages - 1);
      cp_async_commit();
      const uint16_t* st = smem + static_cast<size_t>(kt % kStages) * stage_elems<NT>();
      const uint16_t* xs = st + kRows * kBK;
      mma_stage64<NT>(st, xs, a0r, a1r, lane, pairs, acc);
    }
    cp_async_wait_all();
    __syncthreads();  // every warp is done with the stages before the next pass refills them

    // C fragment: c[0], c[1] at (row lane / 4, tokens 2 (lane % 4) + {0, 1}); c[2], c[3] at row
    // + 8.
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int tok = 8 * j + 2 * (lane & 3) + (c & 1);
        const int rr = (lane >> 2) + 8 * (c >> 1);
        if (tok >= cnt) continue;
        const int64_t q = m0 + tok;
        if (kGateUp) {
          const int64_t i = n0 + a0r + rr;
          if (i < N) {
            const float g = acc[0][j][c], u = acc[1][j][c];
            reinterpret_cast<__nv_bfloat16*>(out)[q * N + i] =
                __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
          }
        } else {
          const int64_t h0 = n0 + a0r + rr, h1 = n0 + a1r + rr;
          float* y = static_cast<float*>(out);
          if (h0 < N) y[q * N + h0] = acc[0][j][c];
          if (h1 < N) y[q * N + h1] = acc[1][j][c];
        }
      }
    }
  }
}

bool& mma_on() {
  static bool on = [] {
    const char* e = std::getenv("R1SERVE_CUDA_MOE_MMA");
    return !(e != nullptr && e[0] == '0');
  }();
  return on;
}

template <int NT, bool kGateUp>
void launch(dim3 grid, const uint16_t* x, int64_t ldx, const int32_t* sorted_pair, int topk,
            const uint16_t* w, int64_t N, int64_t Kd, const int4* info, void* out, cudaStream_t s) {
  constexpr size_t smem = kStages * stage_elems<NT>() * sizeof(uint16_t);
  static const bool attr = [] {
    R1_CUDA_OK(cudaFuncSetAttribute(moe_mma_kernel<NT, kGateUp>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
    return true;
  }();
  (void)attr;
  pdl_launch(moe_mma_kernel<NT, kGateUp>, grid, kThreads, smem, s, x, ldx, sorted_pair, topk, w, N,
             Kd, info, out);
  R1_CUDA_LAUNCHED();
}

}  // namespace

void set_moe_mma_enabled(bool on) {
  mma_on() = on;
}

bool moe_mma_ok(int64_t H, int64_t I, int64_t P, int64_t E) {
  return mma_on() && H % 8 == 0 && I % 8 == 0 && P <= kMoeMmaMaxPairsPerExpert * E &&
         P < (int64_t{1} << 30);
}

void launch_moe_mma(const uint16_t* x, const int32_t* sorted_pair, int64_t K, int64_t H,
                    const uint16_t* gate_up, const uint16_t* down, int64_t E, int64_t I,
                    const int32_t* slot_info, int64_t P, uint16_t* act, float* y, cudaStream_t s) {
  R1_CUDA_REQUIRE(H % 8 == 0 && I % 8 == 0, "moe_mma: H and I must be multiples of 8");
  R1_CUDA_REQUIRE(reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(act) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(gate_up) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(down) % 16 == 0,
                  "moe_mma: 16-byte aligned operands");
  if (P == 0) return;
  const auto* info = reinterpret_cast<const int4*>(slot_info);
  const unsigned slots = static_cast<unsigned>(std::min(P, E));
  // 32 tokens a pass while the average active expert has at most 24 (so few
  // need a second pass over their weights: a decode batch up to ~190 sequences
  // with 64 experts and top-8), else 64.
  // R1SERVE_CUDA_MOE_MMA_TOKENS=32|64 forces one (side-by-side runs).
  static const int forced = [] {
    const char* e = std::getenv("R1SERVE_CUDA_MOE_MMA_TOKENS");
    return e != nullptr ? std::atoi(e) : 0;
  }();
  const bool wide = forced == 64 || (forced != 32 && P > 24 * static_cast<int64_t>(slots));
  const dim3 gu_grid(static_cast<unsigned>((I + kRows / 2 - 1) / (kRows / 2)), slots);
  const dim3 d_grid(static_cast<unsigned>((H + kRows - 1) / kRows), slots);
  const int topk = static_cast<int>(K);
  if (wide) {
    launch<8, true>(gu_grid, x, H, sorted_pair, topk, gate_up, I, H, info, act, s);
    launch<8, false>(d_grid, act, I, nullptr, 1, down, H, I, info, y, s);
  } else {
    launch<4, true>(gu_grid, x, H, sorted_pair, topk, gate_up, I, H, info, act, s);
    launch<4, false>(d_grid, act, I, nullptr, 1, down, H, I, info, y, s);
  }
}

}  // namespace r1::backend::cuda
