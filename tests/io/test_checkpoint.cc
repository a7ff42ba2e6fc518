// Checkpoint: writer -> reader round trips for every dtype, zero-copy views,
// conversions, sharded indexes (a weight and its scale_inv in different
// shards) and FP8 block dequantization against a scalar reference.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "io/checkpoint.h"
#include "io/io_test_util.h"

namespace r1::io {
namespace {

using testing::TempDir;

Tensor random_tensor(const Shape& shape, DType dtype, uint32_t seed) {
  Tensor t = Tensor::empty(shape, dtype);
  std::mt19937 rng(seed);
  auto* p = t.data<uint8_t>();
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>(rng());
  if (dtype == DType::kBool)
    for (size_t i = 0; i < t.nbytes(); ++i) p[i] &= 1;
  return t;
}

Tensor normal_f32(const Shape& shape, uint32_t seed, float stddev = 1.0f) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

const DType kAllDTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2,
                            DType::kF64, DType::kI8,  DType::kU8,   DType::kI16,    DType::kU16,
                            DType::kI32, DType::kU32, DType::kI64,  DType::kU64,    DType::kBool};

TEST(Checkpoint, RoundTripEveryDType) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> tensors;
  uint32_t seed = 1;
  for (DType dt : kAllDTypes) {
    tensors.emplace_back(std::string("t.") + std::string(dtype_name(dt)),
                         random_tensor(Shape{3, 5, 7}, dt, seed++));
  }
  tensors.emplace_back("scalar", random_tensor(Shape{}, DType::kF32, 99));
  tensors.emplace_back("empty", Tensor::empty(Shape{0, 4}, DType::kBF16));
  const std::string path = dir.file("model.safetensors");
  ASSERT_TRUE(write_safetensors(path, tensors, {{"format", "pt"}}).is_ok());

  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->tensors().size(), tensors.size());

  auto ck = Checkpoint::open(path);
  ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
  for (const auto& [name, t] : tensors) {
    auto v = ck->view(name);
    ASSERT_TRUE(v.is_ok()) << v.status().to_string();
    EXPECT_EQ(v->dtype(), t.dtype()) << name;
    EXPECT_EQ(v->shape(), t.shape()) << name;
    EXPECT_EQ(std::memcmp(v->raw(), t.raw(), t.nbytes()), 0) << name;
    // Views are always aligned for their element type (copied when the file
    // packs a tensor at an odd offset, which contiguous safetensors allows).
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v->raw()) % dtype_size(t.dtype()), 0u) << name;
  }
  // And through the directory scan.
  auto ck2 = Checkpoint::open(dir.path().string());
  ASSERT_TRUE(ck2.is_ok()) << ck2.status().to_string();
  EXPECT_EQ(ck2->names().size(), tensors.size());
}

TEST(Checkpoint, ZeroCopyWhenDTypeMatches) {
  TempDir dir;
  Tensor w = normal_f32(Shape{16, 8}, 3);
  const std::string path = dir.file("m.safetensors");
  ASSERT_TRUE(write_safetensors(path, {{"w", w}}).is_ok());
  auto ck = Checkpoint::open(path);
  ASSERT_TRUE(ck.is_ok());
  auto t = ck->load("w", Shape{16, 8}, DType::kF32);
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  const auto& mapped = ck->files()[0].file();
  const uint8_t* p = static_cast<const uint8_t*>(t->raw());
  EXPECT_GE(p, mapped->data());
  EXPECT_LT(p, mapped->data() + mapped->size());
  EXPECT_EQ(std::memcmp(t->raw(), w.raw(), w.nbytes()), 0);
  // The view keeps the mapping alive after the checkpoint is gone.
  Tensor keep = *t;
  ck = Result<Checkpoint>(Status(ErrorCode::kInternal, "dropped"));
  EXPECT_EQ(std::memcmp(keep.raw(), w.raw(), w.nbytes()), 0);
}

TEST(Checkpoint, ConvertsBetweenFloatTypes) {
  TempDir dir;
  Tensor f32 = normal_f32(Shape{33, 17}, 5);
  Tensor bf16 = convert_f32(f32, DType::kBF16);
  Tensor f16 = convert_f32(f32, DType::kF16);
  Tensor f64 = Tensor::empty(f32.shape(), DType::kF64);
  Tensor i8 = Tensor::empty(f32.shape(), DType::kI8);
  for (int64_t i = 0; i < f32.numel(); ++i) {
    f64.data<double>()[i] = f32.data<float>()[i];
    i8.data<int8_t>()[i] = static_cast<int8_t>(i % 200 - 100);
  }
  const std::string path = dir.file("m.safetensors");
  ASSERT_TRUE(write_safetensors(
                  path, {{"f32", f32}, {"bf16", bf16}, {"f16", f16}, {"f64", f64}, {"i8", i8}})
                  .is_ok());
  auto ck = Checkpoint::open(path);
  ASSERT_TRUE(ck.is_ok());
  Shape s{33, 17};
  for (DType want : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (const char* name : {"f32", "bf16", "f16", "f64"}) {
      auto t = ck->load(name, s, want);
      ASSERT_TRUE(t.is_ok()) << t.status().to_string();
      ASSERT_EQ(t->dtype(), want);
      Tensor back = to_f32(*t);
      // Reference: source -> f32 -> want -> f32.
      Tensor src = to_f32(*ck->view(name));
      Tensor ref = to_f32(convert_f32(src, want));
      for (int64_t i = 0; i < s.numel(); ++i)
        ASSERT_EQ(back.data<float>()[i], ref.data<float>()[i]) << name << " i=" << i;
    }
    auto t = ck->load("i8", s, want);
    ASSERT_TRUE(t.is_ok()) << t.status().to_string();
    Tensor back = to_f32(*t);
    for (int64_t i = 0; i < s.numel(); ++i)
      ASSERT_EQ(back.data<float>()[i], static_cast<float>(i % 200 - 100));
  }
}

// Scalar reference: W[r, c] = fp8(q[r, c]) * S[r / 128, c / 128].
Tensor dequant_reference(const Tensor& q, const Tensor& s, int64_t br, int64_t bc) {
  Tensor out = Tensor::empty(q.shape(), DType::kF32);
  const int64_t rows = q.dim(0), cols = q.dim(1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out.data<float>()[r * cols + c] = f8e4m3_to_f32(q.data<uint8_t>()[r * cols + c]) *
                                        s.data<float>()[(r / br) * s.dim(1) + c / bc];
  return out;
}

void make_fp8(int64_t rows, int64_t cols, uint32_t seed, Tensor* q, Tensor* s) {
  *q = Tensor::empty(Shape{rows, cols}, DType::kF8E4M3);
  std::mt19937 rng(seed);
  for (int64_t i = 0; i < q->numel(); ++i) {
    uint8_t v = static_cast<uint8_t>(rng());
    if ((v & 0x7f) == 0x7f) v &= 0xfe;  // no NaN codes
    q->data<uint8_t>()[i] = v;
  }
  *s = Tensor::empty(Shape{(rows + 127) / 128, (cols + 127) / 128}, DType::kF32);
  std::uniform_real_distribution<float> d(1e-4f, 1e-2f);
  for (int64_t i = 0; i < s->numel(); ++i) s->data<float>()[i] = d(rng);
}

TEST(Checkpoint, ShardedIndexWithScaleInAnotherShard) {
  TempDir dir;
  // 576 x 384: like kv_a_proj_with_mqa, the last row block is partial.
  Tensor q, s;
  make_fp8(576, 384, 11, &q, &s);
  Tensor q2, s2;
  make_fp8(200, 130, 12, &q2, &s2);  // partial in both directions
  Tensor norm = normal_f32(Shape{384}, 13);
  ASSERT_TRUE(write_safetensors(dir.file("model-00001-of-00002.safetensors"),
                                {{"a.weight", q}, {"b.weight_scale_inv", s2}, {"norm", norm}})
                  .is_ok());
  ASSERT_TRUE(write_safetensors(dir.file("model-00002-of-00002.safetensors"),
                                {{"a.weight_scale_inv", s}, {"b.weight", q2}})
                  .is_ok());
  testing::write_bytes(dir.file("model.safetensors.index.json"), R"({
    "metadata": {"total_size": 1},
    "weight_map": {
      "a.weight": "model-00001-of-00002.safetensors",
      "b.weight_scale_inv": "model-00001-of-00002.safetensors",
      "norm": "model-00001-of-00002.safetensors",
      "a.weight_scale_inv": "model-00002-of-00002.safetensors",
      "b.weight": "model-00002-of-00002.safetensors"
    }})");
  auto ck = Checkpoint::open(dir.path().string());
  ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
  EXPECT_EQ(ck->num_files(), 2u);
  for (auto [name, qq, ss] : {std::tuple{"a.weight", &q, &s}, std::tuple{"b.weight", &q2, &s2}}) {
    Tensor ref = dequant_reference(*qq, *ss, 128, 128);
    auto w = ck->load(name, qq->shape(), DType::kF32);
    ASSERT_TRUE(w.is_ok()) << w.status().to_string();
    for (int64_t i = 0; i < ref.numel(); ++i)
      ASSERT_EQ(w->data<float>()[i], ref.data<float>()[i]) << name << " i=" << i;
    auto wb = ck->load(name, qq->shape(), DType::kBF16);
    ASSERT_TRUE(wb.is_ok()) << wb.status().to_string();
    for (int64_t i = 0; i < ref.numel(); ++i)
      ASSERT_EQ(wb->data<uint16_t>()[i], f32_to_bf16(ref.data<float>()[i])) << name;
  }
  EXPECT_TRUE(ck->load("norm", Shape{384}, DType::kF32).is_ok());
}

TEST(Checkpoint, LargeConversionIsParallelAndExact) {
  TempDir dir;
  Tensor q, s;
  make_fp8(1024 + 64, 2048, 21, &q, &s);  // > 2M elements: threaded path
  Tensor big = convert_f32(normal_f32(Shape{1500, 1500}, 22), DType::kBF16);
  ASSERT_TRUE(
      write_safetensors(dir.file("m.safetensors"), {{"w", q}, {"w_scale_inv", s}, {"big", big}})
          .is_ok());
  auto ck = Checkpoint::open(dir.file("m.safetensors"));
  ASSERT_TRUE(ck.is_ok());
  auto w = ck->load("w", q.shape(), DType::kF32);
  ASSERT_TRUE(w.is_ok());
  Tensor ref = dequant_reference(q, s, 128, 128);
  EXPECT_EQ(std::memcmp(w->raw(), ref.raw(), ref.nbytes()), 0);
  auto b = ck->load("big", big.shape(), DType::kF32);
  ASSERT_TRUE(b.is_ok());
  Tensor bref = to_f32(big);
  EXPECT_EQ(std::memcmp(b->raw(), bref.raw(), bref.nbytes()), 0);
}

TEST(Checkpoint, LoadErrorsNameFileTensorAndShapes) {
  TempDir dir;
  Tensor q, s;
  make_fp8(256, 256, 1, &q, &s);
  Tensor bad_s = Tensor::zeros(Shape{2, 3}, DType::kF32);
  const std::string path = dir.file("m.safetensors");
  ASSERT_TRUE(write_safetensors(path, {{"w", normal_f32(Shape{4, 4}, 1)},
                                       {"noscale.weight", q},
                                       {"badscale.weight", q},
                                       {"badscale.weight_scale_inv", bad_s}})
                  .is_ok());
  auto ck = Checkpoint::open(path);
  ASSERT_TRUE(ck.is_ok());
  auto r = ck->load("missing.weight", Shape{4, 4}, DType::kF32);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(r.status().message().find("missing.weight"), std::string::npos);
  EXPECT_NE(r.status().message().find(path), std::string::npos);

  r = ck->load("w", Shape{4, 5}, DType::kF32);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("[4, 5]"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("[4, 4]"), std::string::npos);
  EXPECT_NE(r.status().message().find(path), std::string::npos);

  r = ck->load("noscale.weight", Shape{256, 256}, DType::kF32);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("noscale.weight_scale_inv"), std::string::npos)
      << r.status().message();

  r = ck->load("badscale.weight", Shape{256, 256}, DType::kF32);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("[2, 2]"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("[2, 3]"), std::string::npos);
}

}  // namespace
}  // namespace r1::io
