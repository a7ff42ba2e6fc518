// Reading and writing NumPy .npy files (version 1.0, little-endian, C order):
// the format of reference logits in tests and of `r1serve logits --out`.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace r1 {

struct NpyArray {
  std::vector<int64_t> shape;
  std::string descr;       // "<f4", "<i4", "<i8"
  std::vector<char> data;  // raw little-endian bytes
  int64_t numel() const;
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(data.data());
  }
};

Result<NpyArray> read_npy(const std::string& path);
Status write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);

}  // namespace r1
