// Helpers of the CUDA tests: the skip when no GPU is visible, random inputs
// rounded to BF16 (so the CPU reference sees exactly what the GPU sees), and
// comparisons of device results with CPU references.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"

namespace r1::backend::testing {

#define R1_SKIP_WITHOUT_GPU()                                                      \
  do {                                                                             \
    if (::r1::backend::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

// F32 host tensor of BF16-representable values, N(0, scale^2).
inline Tensor random_bf16(const Shape& shape, std::mt19937& rng, float scale = 1.0f) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  std::normal_distribution<float> d(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = bf16_to_f32(f32_to_bf16(d(rng)));
  return t;
}

// Device tensor to host F32 values.
inline std::vector<float> fetch(Backend& be, const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::kF32) {
    be.to_host(t, out.data());
  } else if (t.dtype() == DType::kBF16) {
    std::vector<uint16_t> h(out.size());
    be.to_host(t, h.data());
    for (size_t i = 0; i < h.size(); ++i) out[i] = bf16_to_f32(h[i]);
  } else {
    ADD_FAILURE() << "fetch of " << t.describe();
  }
  return out;
}

inline std::vector<float> host_values(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

// ||got - ref|| / ||ref|| <= tol, and no NaN.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double tol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << what << " NaN at " << i;
    num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  const double rel = std::sqrt(num / std::max(den, 1e-30));
  EXPECT_LE(rel, tol) << what << ": relative L2 error " << rel;
}

}  // namespace r1::backend::testing
