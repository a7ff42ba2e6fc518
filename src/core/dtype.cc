// dtype names, sizes and the non-trivial scalar conversions.
#include "core/dtype.h"

#include <cmath>

namespace r1 {

namespace {
struct DTypeInfo {
  DType type;
  std::string_view name;
  size_t size;
  bool is_float;
};
constexpr DTypeInfo kInfos[] = {
    {DType::kF32, "F32", 4, true},        {DType::kF16, "F16", 2, true},
    {DType::kBF16, "BF16", 2, true},      {DType::kF8E4M3, "F8_E4M3", 1, true},
    {DType::kF8E5M2, "F8_E5M2", 1, true}, {DType::kF64, "F64", 8, true},
    {DType::kI8, "I8", 1, false},         {DType::kU8, "U8", 1, false},
    {DType::kI16, "I16", 2, false},       {DType::kU16, "U16", 2, false},
    {DType::kI32, "I32", 4, false},       {DType::kU32, "U32", 4, false},
    {DType::kI64, "I64", 8, false},       {DType::kU64, "U64", 8, false},
    {DType::kBool, "BOOL", 1, false},
};
const DTypeInfo& info(DType t) {
  for (const auto& i : kInfos)
    if (i.type == t) return i;
  return kInfos[0];
}
}  // namespace

size_t dtype_size(DType t) {
  return info(t).size;
}
std::string_view dtype_name(DType t) {
  return info(t).name;
}
bool dtype_is_float(DType t) {
  return info(t).is_float;
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& i : kInfos)
    if (i.name == name) return i.type;
  return std::nullopt;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant ? std::nanf("") : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t absx = x & 0x7fffffff;
  if (absx > 0x7f800000) return static_cast<uint16_t>(sign | 0x7e00);
  if (absx >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // overflow -> inf
  if (absx < 0x38800000) {                                              // subnormal or zero
    float a;
    std::memcpy(&a, &absx, 4);
    float scaled = a * 16777216.0f;  // 2^24
    uint32_t m = static_cast<uint32_t>(std::nearbyint(scaled));
    return static_cast<uint16_t>(sign | m);
  }
  uint32_t rounded = absx + 0xfff + ((absx >> 13) & 1);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000) >> 13));
}

float f8e4m3_to_f32(uint8_t v) {
  uint32_t sign = v >> 7, exp = (v >> 3) & 0xf, mant = v & 7;
  float r;
  if (exp == 15 && mant == 7) return std::nanf("");
  if (exp == 0) {
    r = std::ldexp(static_cast<float>(mant), -9);  // m/8 * 2^-6
  } else {
    r = std::ldexp(static_cast<float>(8 + mant), static_cast<int>(exp) - 10);
  }
  return sign ? -r : r;
}

uint8_t f32_to_f8e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;
  // Search the 127 non-negative finite codes for the nearest (ties to even code).
  uint8_t best = 0;
  float best_err = INFINITY;
  for (uint8_t c = 0; c <= 0x7e; ++c) {
    float err = std::fabs(f8e4m3_to_f32(c) - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) {
      best_err = err;
      best = c;
    }
  }
  return sign | best;
}

float f8e5m2_to_f32(uint8_t v) {
  return f16_to_f32(static_cast<uint16_t>(v) << 8);
}

}  // namespace r1
