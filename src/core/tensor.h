// Tensor: a contiguous, row-major n-d array (rank <= 4) on one device, with a
// shared owner that keeps its storage alive (heap buffer, mapped file region or
// device allocation). Views share the owner; nothing is copied implicitly.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace r1 {

enum class Device : uint8_t { kCpu, kCuda };

class Shape {
 public:
  static constexpr int kMaxRank = 4;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[static_cast<size_t>(i)]; }
  int64_t& operator[](int i) { return dims_[static_cast<size_t>(i)]; }
  int64_t numel() const;
  std::vector<int64_t> to_vector() const { return {dims_.begin(), dims_.begin() + rank_}; }
  std::string to_string() const;
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

class Tensor {
 public:
  Tensor() = default;

  // A new zero-filled CPU tensor (64-byte aligned).
  static Tensor zeros(const Shape& shape, DType dtype);
  // A new uninitialized CPU tensor (64-byte aligned).
  static Tensor empty(const Shape& shape, DType dtype);
  // A view of memory owned by `owner` (which may be null for borrowed memory).
  static Tensor wrap(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner,
                     Device device = Device::kCpu);

  bool defined() const { return data_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + shape_.rank() : i]; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  // Elements per row (product of all but the first dimension).
  int64_t row_size() const { return rank() == 0 ? 1 : numel() / dim(0); }

  void* raw() const { return data_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(data_);
  }
  const std::shared_ptr<void>& owner() const { return owner_; }

  // Same storage, new shape of equal numel.
  Tensor reshape(const Shape& shape) const;
  // Rows [begin, end) along dimension 0, sharing storage.
  Tensor rows(int64_t begin, int64_t end) const;

  std::string describe() const;  // "BF16[4, 8] cpu"

 private:
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  std::shared_ptr<void> owner_;
};

// Converts any float tensor on the CPU to a new F32 tensor.
Tensor to_f32(const Tensor& t);
// Converts a CPU F32 tensor to `dtype` (F32, BF16, F16).
Tensor convert_f32(const Tensor& t, DType dtype);

}  // namespace r1
