// Checkpoints of the streamed expert kernels (moe_stream.cu), for finding
// their ramp, tail and the gap between them: with R1SERVE_CUDA_MOE_STAMPS=1
// the kernels write %globaltimer readings here and moe_stream_stamps()
// summarizes the last launches' (docs/performance-history.md, session 8). Included by
// moe_stream.cu only.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

// R1SERVE_CUDA_MOE_STAMPS=1: checkpoints (%globaltimer, ns) of the last
// streamed gate/up (kind 0) and down (kind 1) launches, for moe_stream_stamps:
// per block start and three to five checkpoints (gate/up: waited, routed, x
// loaded, warp 0's logits in, warp 0's routing done before the block's
// barrier; down: routing known, waited, act in), per warp
// the end of its last item.
constexpr int kStampBlocks = 512, kStampWarps = 16;
__device__ unsigned long long g_moe_block_stamps[2][kStampBlocks][6];
__device__ unsigned long long g_moe_warp_ends[2][kStampBlocks * kStampWarps];
__device__ __forceinline__ void moe_stamp(bool on, int kind, int i) {
  if (on && threadIdx.x == 0 && blockIdx.x < kStampBlocks)
    g_moe_block_stamps[kind][blockIdx.x][i] = global_ns();
}
__device__ __forceinline__ void moe_warp_end(bool on, int kind) {
  const int w = threadIdx.x >> 5;
  if (on && (threadIdx.x & 31) == 0 && blockIdx.x < kStampBlocks && w < kStampWarps)
    g_moe_warp_ends[kind][blockIdx.x * kStampWarps + w] = global_ns();
}

bool stamps_on() {
  static const bool on = [] {
    const char* e = std::getenv("R1SERVE_CUDA_MOE_STAMPS");
    return e != nullptr && e[0] == '1';
  }();
  return on;
}

inline std::string moe_stamps_summary() {
  if (!stamps_on()) return "";
  static unsigned long long bs[2][kStampBlocks][6], we[2][kStampBlocks * kStampWarps];
  R1_CUDA_OK(cudaDeviceSynchronize());
  R1_CUDA_OK(cudaMemcpyFromSymbol(bs, g_moe_block_stamps, sizeof(bs)));
  R1_CUDA_OK(cudaMemcpyFromSymbol(we, g_moe_warp_ends, sizeof(we)));
  unsigned long long t0 = ~0ull;
  for (const auto& b : bs[0])
    if (b[0] != 0) t0 = std::min(t0, b[0]);
  if (t0 == ~0ull) return "moe stamps: no streamed gate/up launch\n";
  // Percentiles 0, 10, 50, 90, 100 of the nonzero values, in ns from t0.
  auto pct = [t0](std::vector<unsigned long long> v) {
    std::string r;
    std::sort(v.begin(), v.end());
    if (v.empty()) return std::string(" -");
    for (int q : {0, 10, 50, 90, 100}) {
      const auto x = v[std::min(v.size() - 1, v.size() * q / 100)];
      r += " " + (x >= t0 ? std::to_string(x - t0) : "-" + std::to_string(t0 - x));
    }
    return r;
  };
  static const char* names[2][6] = {
      {"start", "waited", "routed", "x in", "logits in", "warp 0 routed"},
      {"start", "routing known", "waited", "act in", nullptr, nullptr}};
  std::string out =
      "moe stamps (last streamed gate/up and down launches; ns from the first gate/up block's "
      "start; percentiles 0 10 50 90 100 over blocks, then over warps' last items)\n";
  for (int k = 0; k < 2; ++k) {
    for (int i = 0; i < 6 && names[k][i] != nullptr; ++i) {
      std::vector<unsigned long long> v;
      for (const auto& b : bs[k])
        if (b[0] != 0 && b[i] != 0) v.push_back(b[i]);
      out +=
          std::string("  ") + (k == 0 ? "gate/up " : "down ") + names[k][i] + ":" + pct(v) + "\n";
    }
    std::vector<unsigned long long> v;
    for (int b = 0; b < kStampBlocks; ++b)
      for (int w = 0; w < kStampWarps; ++w) {
        const auto e = we[k][b * kStampWarps + w];
        if (bs[k][b][0] != 0 && e >= bs[k][b][0]) v.push_back(e);
      }
    out += std::string("  ") + (k == 0 ? "gate/up " : "down ") + "warp ends:" + pct(v) + "\n";
  }
  return out;
}

}  // namespace
}  // namespace r1::backend::cuda
