// Element types of tensors and the scalar conversions between them
// (bf16, f16 and fp8 e4m3 to and from f32).
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace r1 {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kF8E4M3,  // "fn" variant: no infinities, max 448
  kF8E5M2,
  kF64,
  kI8,
  kU8,
  kI16,
  kU16,
  kI32,
  kU32,
  kI64,
  kU64,
  kBool,
};

// Size of one element in bytes.
size_t dtype_size(DType t);
// Name as safetensors spells it ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
// Parse a safetensors dtype string; nullopt if unknown.
std::optional<DType> dtype_from_name(std::string_view name);
bool dtype_is_float(DType t);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// FP8 E4M3 (fn): 1 sign, 4 exponent (bias 7), 3 mantissa; e=15,m=7 is NaN.
float f8e4m3_to_f32(uint8_t v);
uint8_t f32_to_f8e4m3(float f);  // round to nearest even, saturating at +-448
float f8e5m2_to_f32(uint8_t v);

}  // namespace r1
