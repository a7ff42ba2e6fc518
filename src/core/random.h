// The counter-based generator behind seeded random weights (--load-format
// dummy): value i of a stream depends only on the stream's state and i, so any
// device can produce any slice in parallel and every backend gets the same
// bits. backend/cuda/random.cu implements the same arithmetic on the GPU.
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace r1 {

// A stream of values offset + scale * u_i, u_i uniform in [-1, 1).
struct RandomFill {
  uint64_t state = 0;
  float scale = 1.0f;
  float offset = 0.0f;
};

// SplitMix64's output function at counter i (state advanced i + 1 times).
inline uint64_t splitmix_at(uint64_t state, uint64_t i) {
  uint64_t z = state + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// u_i in [-1, 1): the top 53 bits as a double, rounded once to float.
inline float uniform_at(uint64_t state, uint64_t i) {
  return static_cast<float>(
      static_cast<double>(splitmix_at(state, i) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

// Element i of a fill, in float (no fused multiply-add, as on the GPU).
inline float random_value(const RandomFill& f, uint64_t i) {
  const volatile float prod = f.scale * uniform_at(f.state, i);
  return f.offset + prod;
}

// Stream state of a named tensor: the seed mixed with FNV-1a of the name.
inline uint64_t random_stream(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return seed ^ h;
}

// Writes n values of `fill` starting at element `first` into dst (F32 or BF16).
void fill_random_host(void* dst, DType dtype, int64_t n, const RandomFill& fill,
                      uint64_t first = 0);

}  // namespace r1
