// Statistics the logits comparisons share: the standard deviation that error
// limits are expressed in (max|err| / std of the reference logits).
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

namespace r1::teststats {

inline double stddev(const float* x, size_t n) {
  double mean = 0, sq = 0;
  for (size_t i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<double>(n);
  for (size_t i = 0; i < n; ++i) sq += (x[i] - mean) * (x[i] - mean);
  return std::sqrt(sq / static_cast<double>(n));
}

inline double stddev(const std::vector<float>& x) {
  return stddev(x.data(), x.size());
}

}  // namespace r1::teststats
