// Shape and Tensor bookkeeping, aligned host allocation and dtype conversion.
#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "core/check.h"

namespace r1 {

Shape::Shape(std::initializer_list<int64_t> dims) {
  R1_CHECK(dims.size() <= kMaxRank, "rank {} > {}", dims.size(), kMaxRank);
  for (int64_t d : dims) dims_[static_cast<size_t>(rank_++)] = d;
}

Shape::Shape(const std::vector<int64_t>& dims) {
  R1_CHECK(dims.size() <= kMaxRank, "rank {} > {}", dims.size(), kMaxRank);
  for (int64_t d : dims) dims_[static_cast<size_t>(rank_++)] = d;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<size_t>(i)];
  return n;
}

std::string Shape::to_string() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i)
    s += (i ? ", " : "") + std::to_string(dims_[static_cast<size_t>(i)]);
  return s + "]";
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[static_cast<size_t>(i)] != o.dims_[static_cast<size_t>(i)]) return false;
  return true;
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  size_t alloc = (bytes + 63) / 64 * 64;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  R1_CHECK(p != nullptr, "out of host memory allocating {} bytes", alloc);
  Tensor t;
  t.data_ = p;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.owner_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::wrap(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner,
                    Device device) {
  Tensor t;
  t.data_ = data;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.owner_ = std::move(owner);
  t.device_ = device;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  R1_CHECK(shape.numel() == numel(), "reshape {} -> {}", shape_.to_string(), shape.to_string());
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  R1_CHECK(rank() >= 1 && begin >= 0 && begin <= end && end <= dim(0), "rows [{}, {}) of {}", begin,
           end, shape_.to_string());
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.data_ =
      static_cast<char*>(data_) + static_cast<size_t>(begin * row_size()) * dtype_size(dtype_);
  return t;
}

std::string Tensor::describe() const {
  return fmt::format("{}{} {}", dtype_name(dtype_), shape_.to_string(),
                     device_ == Device::kCpu ? "cpu" : "cuda");
}

Tensor to_f32(const Tensor& t) {
  R1_CHECK(t.device() == Device::kCpu, "to_f32 needs a CPU tensor");
  Tensor out = Tensor::empty(t.shape(), DType::kF32);
  float* o = out.data<float>();
  const int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::kF32:
      std::memcpy(o, t.raw(), t.nbytes());
      break;
    case DType::kBF16: {
      const uint16_t* s = t.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = bf16_to_f32(s[i]);
      break;
    }
    case DType::kF16: {
      const uint16_t* s = t.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = f16_to_f32(s[i]);
      break;
    }
    case DType::kF8E4M3: {
      const uint8_t* s = t.data<uint8_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = f8e4m3_to_f32(s[i]);
      break;
    }
    case DType::kF8E5M2: {
      const uint8_t* s = t.data<uint8_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = f8e5m2_to_f32(s[i]);
      break;
    }
    case DType::kF64: {
      const double* s = t.data<double>();
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<float>(s[i]);
      break;
    }
    case DType::kI8: {
      const int8_t* s = t.data<int8_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = s[i];
      break;
    }
    case DType::kU8: {
      const uint8_t* s = t.data<uint8_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = s[i];
      break;
    }
    default:
      R1_CHECK(false, "to_f32: unsupported dtype {}", dtype_name(t.dtype()));
  }
  return out;
}

Tensor convert_f32(const Tensor& t, DType dtype) {
  R1_CHECK(t.dtype() == DType::kF32 && t.device() == Device::kCpu, "convert_f32 input {}",
           t.describe());
  if (dtype == DType::kF32) return t;
  Tensor out = Tensor::empty(t.shape(), dtype);
  const float* s = t.data<float>();
  const int64_t n = t.numel();
  uint16_t* o = out.data<uint16_t>();
  if (dtype == DType::kBF16) {
    for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(s[i]);
  } else if (dtype == DType::kF16) {
    for (int64_t i = 0; i < n; ++i) o[i] = f32_to_f16(s[i]);
  } else {
    R1_CHECK(false, "convert_f32: unsupported target {}", dtype_name(dtype));
  }
  return out;
}

}  // namespace r1
