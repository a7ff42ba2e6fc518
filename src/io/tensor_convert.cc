// Conversion loops for loading weights: one tight loop per (source, target)
// pair through lookup tables (fp8, f16) or bit shifts (bf16), unaligned-safe
// loads via memcpy, and a plain std::thread split for tensors of many MB.
#include "io/tensor_convert.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <thread>
#include <vector>

namespace r1::io {

namespace {

constexpr int64_t kParallelMinElements = int64_t{1} << 21;  // 2M elements
constexpr int64_t kChunkMinElements = int64_t{1} << 19;

// Calls fn(begin, end) over [0, n) on up to hardware_concurrency threads.
template <typename Fn>
void parallel_range(int64_t n, int64_t min_chunk, const Fn& fn) {
  int64_t threads = std::max(1u, std::thread::hardware_concurrency());
  threads = std::min<int64_t>(threads, std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk)));
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  int64_t chunk = (n + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t) {
    int64_t b = std::min(n, t * chunk), e = std::min(n, b + chunk);
    pool.emplace_back([&fn, b, e] { fn(b, e); });
  }
  fn(int64_t{0}, std::min(n, chunk));
  for (auto& th : pool) th.join();
}

const std::array<float, 256>& fp8_table(DType t) {
  static const std::array<float, 256> e4m3 = [] {
    std::array<float, 256> a{};
    for (int i = 0; i < 256; ++i)
      a[static_cast<size_t>(i)] = f8e4m3_to_f32(static_cast<uint8_t>(i));
    return a;
  }();
  static const std::array<float, 256> e5m2 = [] {
    std::array<float, 256> a{};
    for (int i = 0; i < 256; ++i)
      a[static_cast<size_t>(i)] = f8e5m2_to_f32(static_cast<uint8_t>(i));
    return a;
  }();
  return t == DType::kF8E5M2 ? e5m2 : e4m3;
}

const float* f16_table() {
  static const std::vector<float> table = [] {
    std::vector<float> v(65536);
    for (uint32_t i = 0; i < 65536; ++i) v[i] = f16_to_f32(static_cast<uint16_t>(i));
    return v;
  }();
  return table.data();
}

template <typename T>
inline T load_raw(const uint8_t* p, int64_t i) {
  T v;
  std::memcpy(&v, p + static_cast<size_t>(i) * sizeof(T), sizeof(T));
  return v;
}

// Stores floats produced by `get(i)` into dst[begin, end) as `want`.
template <typename Get>
void store_range(void* dst, DType want, int64_t begin, int64_t end, const Get& get) {
  switch (want) {
    case DType::kF32: {
      float* d = static_cast<float*>(dst);
      for (int64_t i = begin; i < end; ++i) d[i] = get(i);
      break;
    }
    case DType::kBF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (int64_t i = begin; i < end; ++i) d[i] = f32_to_bf16(get(i));
      break;
    }
    case DType::kF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (int64_t i = begin; i < end; ++i) d[i] = f32_to_f16(get(i));
      break;
    }
    default:
      break;  // callers check is_load_target
  }
}

void convert_range(const uint8_t* s, DType stored, void* dst, DType want, int64_t b, int64_t e) {
  switch (stored) {
    case DType::kF32:
      store_range(dst, want, b, e, [s](int64_t i) { return load_raw<float>(s, i); });
      break;
    case DType::kBF16:
      store_range(dst, want, b, e,
                  [s](int64_t i) { return bf16_to_f32(load_raw<uint16_t>(s, i)); });
      break;
    case DType::kF16: {
      const float* lut = f16_table();
      store_range(dst, want, b, e, [s, lut](int64_t i) { return lut[load_raw<uint16_t>(s, i)]; });
      break;
    }
    case DType::kF8E4M3:
    case DType::kF8E5M2: {
      const float* lut = fp8_table(stored).data();
      store_range(dst, want, b, e, [s, lut](int64_t i) { return lut[s[i]]; });
      break;
    }
    case DType::kF64:
      store_range(dst, want, b, e,
                  [s](int64_t i) { return static_cast<float>(load_raw<double>(s, i)); });
      break;
    case DType::kI8:
      store_range(dst, want, b, e,
                  [s](int64_t i) { return static_cast<float>(load_raw<int8_t>(s, i)); });
      break;
    case DType::kU8:
    case DType::kBool:
      store_range(dst, want, b, e, [s](int64_t i) { return static_cast<float>(s[i]); });
      break;
    case DType::kI16:
      store_range(dst, want, b, e,
                  [s](int64_t i) { return static_cast<float>(load_raw<int16_t>(s, i)); });
      break;
    case DType::kU16:
      store_range(dst, want, b, e,
                  [s](int64_t i) { return static_cast<float>(load_raw<uint16_t>(s, i)); });
      break;
    case DType::kI32:
      store_range(dst, want, b, e,
                  [s](int64_t i) { return static_cast<float>(load_raw<int32_t>(s, i)); });
      break;
    case DType::kU32:
      store_range(dst, want, b, e,
                  [s](int64_t i) { return static_cast<float>(load_raw<uint32_t>(s, i)); });
      break;
    case DType::kI64:
      store_range(dst, want, b, e,
                  [s](int64_t i) { return static_cast<float>(load_raw<int64_t>(s, i)); });
      break;
    case DType::kU64:
      store_range(dst, want, b, e,
                  [s](int64_t i) { return static_cast<float>(load_raw<uint64_t>(s, i)); });
      break;
  }
}

}  // namespace

bool is_load_target(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16;
}

void convert_elements(const uint8_t* src, DType stored, void* dst, DType want, int64_t n) {
  if (n <= 0) return;
  if (stored == want) {
    std::memcpy(dst, src, static_cast<size_t>(n) * dtype_size(stored));
    return;
  }
  if (n < kParallelMinElements) {
    convert_range(src, stored, dst, want, 0, n);
    return;
  }
  parallel_range(n, kChunkMinElements,
                 [&](int64_t b, int64_t e) { convert_range(src, stored, dst, want, b, e); });
}

void dequantize_fp8_blocks(const uint8_t* q, int64_t rows, int64_t cols, const float* scale,
                           int64_t block_rows, int64_t block_cols, void* dst, DType want) {
  if (rows <= 0 || cols <= 0) return;
  const float* lut = fp8_table(DType::kF8E4M3).data();
  const int64_t scale_cols = (cols + block_cols - 1) / block_cols;
  auto run_rows = [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* qr = q + r * cols;
      const float* sr = scale + (r / block_rows) * scale_cols;
      for (int64_t c0 = 0; c0 < cols; c0 += block_cols) {
        const float s = sr[c0 / block_cols];
        const int64_t c1 = std::min(cols, c0 + block_cols);
        for (int64_t c = c0; c < c1; ++c) row[static_cast<size_t>(c)] = lut[qr[c]] * s;
      }
      const int64_t base = r * cols;
      switch (want) {
        case DType::kF32:
          std::memcpy(static_cast<float*>(dst) + base, row.data(),
                      static_cast<size_t>(cols) * sizeof(float));
          break;
        case DType::kBF16: {
          uint16_t* d = static_cast<uint16_t*>(dst) + base;
          for (int64_t c = 0; c < cols; ++c) d[c] = f32_to_bf16(row[static_cast<size_t>(c)]);
          break;
        }
        case DType::kF16: {
          uint16_t* d = static_cast<uint16_t*>(dst) + base;
          for (int64_t c = 0; c < cols; ++c) d[c] = f32_to_f16(row[static_cast<size_t>(c)]);
          break;
        }
        default:
          break;
      }
    }
  };
  if (rows * cols < kParallelMinElements) {
    run_rows(0, rows);
    return;
  }
  int64_t min_rows = std::max<int64_t>(1, kChunkMinElements / cols);
  parallel_range(rows, min_rows, run_rows);
}

}  // namespace r1::io
