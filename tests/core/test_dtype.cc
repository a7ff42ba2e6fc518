// Scalar dtype conversions against values computed by hand from the formats.
#include <cmath>

#include <gtest/gtest.h>

#include "core/dtype.h"
#include "core/npy.h"

namespace r1 {
namespace {

TEST(DType, Bf16RoundTripAndRounding) {
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even -> 1.0.
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);  // halfway 0x3f81/0x3f82 -> even
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(DType, Fp8E4M3) {
  EXPECT_EQ(f8e4m3_to_f32(0x7e), 448.0f);  // max finite
  EXPECT_EQ(f8e4m3_to_f32(0xfe), -448.0f);
  EXPECT_TRUE(std::isnan(f8e4m3_to_f32(0x7f)));
  EXPECT_EQ(f8e4m3_to_f32(0x38), 1.0f);                  // e=7, m=0
  EXPECT_EQ(f8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  for (int c = 0; c < 0x7f; ++c)
    EXPECT_EQ(f32_to_f8e4m3(f8e4m3_to_f32(static_cast<uint8_t>(c))), c);
  EXPECT_EQ(f32_to_f8e4m3(1000.0f), 0x7e);  // saturates
}

TEST(DType, F16) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  for (uint32_t h = 0; h < 0x7c00; h += 7)
    EXPECT_EQ(f32_to_f16(f16_to_f32(static_cast<uint16_t>(h))), h);
}

TEST(DType, NamesRoundTrip) {
  for (auto t : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3, DType::kI8, DType::kU8})
    EXPECT_EQ(dtype_from_name(dtype_name(t)), t);
  EXPECT_FALSE(dtype_from_name("F7").has_value());
}

TEST(Npy, WriteThenRead) {
  const std::string path = testing::TempDir() + "/t.npy";
  std::vector<float> v = {1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(write_npy_f32(path, v.data(), {2, 3}).is_ok());
  auto a = read_npy(path);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->descr, "<f4");
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a->as<float>()[i], v[static_cast<size_t>(i)]);
}

}  // namespace
}  // namespace r1
