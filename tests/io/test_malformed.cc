// Regression corpus of crafted malformed safetensors files and checkpoint
// directories. Each must be rejected quickly (well under 100 ms) with an error
// naming the file, the tensor where there is one, and what was wrong.
#include <gtest/gtest.h>

#include <chrono>

#include "io/checkpoint.h"
#include "io/io_test_util.h"

namespace r1::io {
namespace {

using testing::safetensors_bytes;
using testing::TempDir;
using testing::write_bytes;

struct Case {
  std::string name;
  std::string bytes;
  std::string tensor;  // must appear in the message when non-empty
  std::string what;    // must appear in the message
};

std::string file_with(const std::string& header, size_t data_bytes) {
  return safetensors_bytes(header, std::string(data_bytes, '\0'));
}

std::string one(const std::string& entry, size_t data_bytes = 64) {
  return file_with(R"({"t":)" + entry + "}", data_bytes);
}

std::vector<Case> corpus() {
  std::vector<Case> c;
  const std::string ok_entry = R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})";
  // Framing.
  c.push_back({"empty_file", "", "", "too short"});
  c.push_back({"seven_bytes", std::string(7, '\x01'), "", "too short"});
  c.push_back({"zero_header_len", safetensors_bytes("", ""), "", "too short for a JSON"});
  c.push_back({"header_len_past_eof", safetensors_bytes("{}", "", 100), "", "truncated"});
  c.push_back({"header_len_2_63", safetensors_bytes("{}", "", uint64_t{1} << 63), "", "limit"});
  c.push_back({"header_len_max", safetensors_bytes("{}", "", UINT64_MAX), "", "limit"});
  c.push_back({"header_len_over_cap",
               safetensors_bytes("{}", "", SafetensorsFile::kMaxHeaderBytes + 1), "", "limit"});
  c.push_back({"header_len_short_of_json",
               safetensors_bytes(R"({"t":)" + ok_entry + "}", std::string(16, '\0'), 10), "",
               "malformed JSON"});
  // JSON shape.
  c.push_back({"json_array", file_with("[]", 0), "", "JSON object"});
  c.push_back({"json_string", file_with(R"("abc")", 0), "", "JSON object"});
  c.push_back({"json_number", file_with("12345678", 0), "", "JSON object"});
  c.push_back({"json_null", file_with("null", 0), "", "JSON object"});
  c.push_back({"json_truncated", file_with(R"({"t":{"dtype":"F32")", 0), "", "malformed JSON"});
  c.push_back({"json_garbage", file_with("{abc}", 0), "", "malformed JSON"});
  c.push_back(
      {"json_trailing_nul", file_with(std::string("{}") + '\0' + '\0', 0), "", "malformed JSON"});
  c.push_back({"json_two_values", file_with("{}{}", 0), "", "malformed JSON"});
  c.push_back({"json_bad_utf8", file_with("{\"t\xff\xfe\":1}", 0), "", "malformed JSON"});
  c.push_back({"json_deep_nesting", file_with(std::string(5000, '[') + std::string(5000, ']'), 0),
               "", "nested deeper"});
  c.push_back({"json_comment", file_with("{/* x */}", 0), "", "malformed JSON"});
  // Duplicate keys.
  c.push_back({"dup_tensor", file_with(R"({"t":)" + ok_entry + R"(,"t":)" + ok_entry + "}", 16), "",
               "duplicate key 't'"});
  c.push_back({"dup_field",
               one(R"({"dtype":"F32","dtype":"I32","shape":[2,2],"data_offsets":[0,16]})"), "t",
               "duplicate key 'dtype'"});
  c.push_back({"dup_metadata", file_with(R"({"__metadata__":{"a":"1","a":"2"}})", 0), "",
               "duplicate key 'a'"});
  // Entries.
  c.push_back({"entry_not_object", one(R"("F32")"), "t", "must be an object"});
  c.push_back({"entry_array", one("[1,2]"), "t", "must be an object"});
  c.push_back({"empty_name", file_with(R"({"":)" + ok_entry + "}", 16), "", "empty tensor name"});
  c.push_back(
      {"missing_dtype", one(R"({"shape":[2,2],"data_offsets":[0,16]})"), "t", "missing \"dtype\""});
  c.push_back(
      {"missing_shape", one(R"({"dtype":"F32","data_offsets":[0,16]})"), "t", "missing \"shape\""});
  c.push_back({"missing_offsets", one(R"({"dtype":"F32","shape":[2,2]})"), "t",
               "missing \"data_offsets\""});
  c.push_back({"unknown_dtype", one(R"({"dtype":"F128","shape":[2,2],"data_offsets":[0,16]})"), "t",
               "unknown dtype \"F128\""});
  c.push_back({"lowercase_dtype", one(R"({"dtype":"f32","shape":[2,2],"data_offsets":[0,16]})"),
               "t", "unknown dtype"});
  c.push_back({"dtype_number", one(R"({"dtype":7,"shape":[2,2],"data_offsets":[0,16]})"), "t",
               "must be a string"});
  c.push_back({"shape_not_array", one(R"({"dtype":"F32","shape":4,"data_offsets":[0,16]})"), "t",
               "must be an array"});
  c.push_back({"shape_negative", one(R"({"dtype":"F32","shape":[-2,2],"data_offsets":[0,16]})"),
               "t", "non-negative"});
  c.push_back({"shape_float", one(R"({"dtype":"F32","shape":[2.5,2],"data_offsets":[0,16]})"), "t",
               "non-negative integers"});
  c.push_back({"shape_string", one(R"({"dtype":"F32","shape":["2",2],"data_offsets":[0,16]})"), "t",
               "non-negative integers"});
  c.push_back({"shape_dim_2_63",
               one(R"({"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,16]})"), "t",
               "below 2^63"});
  c.push_back({"shape_dim_2_64",
               one(R"({"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,16]})"), "t",
               "non-negative integers"});
  c.push_back({"rank_9", one(R"({"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]})"),
               "t", "rank 9 exceeds"});
  c.push_back({"nbytes_overflow_numel",
               one(R"({"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]})"),
               "t", "overflows"});
  c.push_back({"nbytes_overflow_elem",
               one(R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,16]})"), "t",
               "overflows"});
  c.push_back({"huge_but_no_overflow",
               one(R"({"dtype":"U8","shape":[4611686018427387904],"data_offsets":[0,16]})"), "t",
               "needs 4611686018427387904 bytes"});
  c.push_back({"offsets_past_eof",
               one(R"({"dtype":"F32","shape":[4,4],"data_offsets":[0,64]})", 32), "t",
               "past the data section"});
  c.push_back(
      {"offsets_wrap",
       one(R"({"dtype":"U8","shape":[7],"data_offsets":[18446744073709551608,18446744073709551615]})"),
       "t", "past the data section"});
  c.push_back({"offsets_begin_after_end",
               one(R"({"dtype":"F32","shape":[0],"data_offsets":[16,8]})"), "t", "after end"});
  c.push_back({"offsets_one_value", one(R"({"dtype":"F32","shape":[2,2],"data_offsets":[16]})"),
               "t", "[begin, end]"});
  c.push_back({"offsets_three_values",
               one(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,16,32]})"), "t",
               "[begin, end]"});
  c.push_back({"offsets_negative", one(R"({"dtype":"F32","shape":[2,2],"data_offsets":[-16,0]})"),
               "t", "[begin, end]"});
  c.push_back({"offsets_strings", one(R"({"dtype":"F32","shape":[2,2],"data_offsets":["0","16"]})"),
               "t", "[begin, end]"});
  c.push_back({"offsets_object", one(R"({"dtype":"F32","shape":[2,2],"data_offsets":{"a":0}})"),
               "t", "[begin, end]"});
  c.push_back({"span_too_small", one(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,12]})"), "t",
               "needs 16 bytes"});
  c.push_back({"span_too_large", one(R"({"dtype":"BF16","shape":[2,2],"data_offsets":[0,16]})"),
               "t", "needs 8 bytes"});
  c.push_back({"overlap_same", file_with(R"({"a":)" + ok_entry + R"(,"b":)" + ok_entry + "}", 16),
               "a", "overlap"});
  c.push_back({"overlap_partial",
               file_with(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},
                            "b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                         32),
               "b", "overlap"});
  c.push_back({"overlap_nested",
               file_with(R"({"a":{"dtype":"U8","shape":[64],"data_offsets":[0,64]},
                            "b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]},
                            "c":{"dtype":"U8","shape":[4],"data_offsets":[40,44]}})",
                         64),
               "a", "overlap"});
  // Metadata.
  c.push_back({"metadata_array", file_with(R"({"__metadata__":["pt"]})", 0), "",
               "__metadata__ must be an object"});
  c.push_back({"metadata_number_value", file_with(R"({"__metadata__":{"format":1}})", 0), "",
               "value of 'format' must be a string"});
  c.push_back({"metadata_object_value", file_with(R"({"__metadata__":{"format":{"a":"b"}}})", 0),
               "", "value of 'format' must be a string"});
  c.push_back({"metadata_null_value", file_with(R"({"__metadata__":{"format":null}})", 0), "",
               "must be a string"});
  return c;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

TEST(Malformed, SafetensorsCorpusIsRejected) {
  TempDir dir;
  auto cases = corpus();
  EXPECT_GE(cases.size(), 40u);
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    const std::string path = dir.file(k.name + ".safetensors");
    write_bytes(path, k.bytes);
    auto t0 = std::chrono::steady_clock::now();
    auto f = SafetensorsFile::open(path);
    double ms = ms_since(t0);
    ASSERT_FALSE(f.is_ok()) << "accepted";
    const std::string& msg = f.status().message();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    if (!k.tensor.empty()) {
      EXPECT_NE(msg.find("'" + k.tensor + "'"), std::string::npos) << msg;
    }
    EXPECT_NE(msg.find(k.what), std::string::npos) << msg;
    EXPECT_LT(ms, 100.0);
    // Checkpoint::open on the same file reports the same.
    auto ck = Checkpoint::open(path);
    ASSERT_FALSE(ck.is_ok());
    EXPECT_NE(ck.status().message().find(path), std::string::npos);
  }
}

TEST(Malformed, ValidEdgeCasesAreAccepted) {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> ok = {
      {"empty_header", file_with("{}", 0)},
      {"padded_header", file_with("{}      ", 0)},
      {"zero_size_tensors", file_with(R"({"a":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},
                    "b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                    "c":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                                      4)},
      {"metadata_only", file_with(R"({"__metadata__":{"format":"pt"}})", 0)},
      {"rank_8",
       file_with(R"({"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,2],"data_offsets":[0,2]}})", 2)},
      {"trailing_bytes", file_with(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 9)},
  };
  for (const auto& [name, bytes] : ok) {
    const std::string path = dir.file(name + ".safetensors");
    write_bytes(path, bytes);
    auto f = SafetensorsFile::open(path);
    EXPECT_TRUE(f.is_ok()) << name << ": " << f.status().to_string();
  }
  // Rank 8 is a valid file but not a valid Tensor (rank <= 4): view says so.
  auto ck = Checkpoint::open(dir.file("rank_8.safetensors"));
  ASSERT_TRUE(ck.is_ok());
  auto v = ck->view("a");
  ASSERT_FALSE(v.is_ok());
  EXPECT_NE(v.status().message().find("rank 8"), std::string::npos);
}

TEST(Malformed, MissingFileAndDirectories) {
  TempDir dir;
  auto r = Checkpoint::open(dir.file("nope"));
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find(dir.file("nope")), std::string::npos);
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);

  r = Checkpoint::open(dir.path().string());  // empty directory
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("*.safetensors"), std::string::npos);

  auto f = SafetensorsFile::open(dir.path().string());  // a directory, not a file
  ASSERT_FALSE(f.is_ok());
  EXPECT_NE(f.status().message().find(dir.path().string()), std::string::npos);
}

// Checkpoint directories with an index.
class IndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Tensor a = Tensor::zeros(Shape{4, 4}, DType::kF32);
    Tensor b = Tensor::zeros(Shape{2}, DType::kBF16);
    ASSERT_TRUE(write_safetensors(dir_.file("s1.safetensors"), {{"a", a}}).is_ok());
    ASSERT_TRUE(write_safetensors(dir_.file("s2.safetensors"), {{"b", b}}).is_ok());
  }
  Status open_with_index(const std::string& index) {
    write_bytes(dir_.file("model.safetensors.index.json"), index);
    auto t0 = std::chrono::steady_clock::now();
    auto r = Checkpoint::open(dir_.path().string());
    EXPECT_LT(ms_since(t0), 100.0);
    EXPECT_FALSE(r.is_ok()) << "accepted: " << index;
    if (!r.is_ok()) {
      EXPECT_NE(r.status().message().find("model.safetensors.index.json"), std::string::npos)
          << r.status().message();
    }
    return r.status();
  }
  TempDir dir_;
};

TEST_F(IndexTest, GoodIndexOpens) {
  write_bytes(dir_.file("model.safetensors.index.json"),
              R"({"metadata":{},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  auto r = Checkpoint::open(dir_.path().string());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->file_of(*r->find("b")), dir_.file("s2.safetensors"));
}

TEST_F(IndexTest, PathTraversal) {
  Status s = open_with_index(R"({"weight_map":{"a":"../s1.safetensors"}})");
  EXPECT_NE(s.message().find("../s1.safetensors"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("'a'"), std::string::npos);
  s = open_with_index(R"({"weight_map":{"a":"sub/../../x.safetensors"}})");
  EXPECT_NE(s.message().find("not a plain relative path"), std::string::npos) << s.message();
  s = open_with_index(R"({"weight_map":{"a":"/etc/passwd"}})");
  EXPECT_NE(s.message().find("/etc/passwd"), std::string::npos) << s.message();
  s = open_with_index(R"({"weight_map":{"a":""}})");
  EXPECT_NE(s.message().find("not a plain relative path"), std::string::npos) << s.message();
}

TEST_F(IndexTest, MissingFile) {
  Status s = open_with_index(R"({"weight_map":{"a":"s1.safetensors","b":"s9.safetensors"}})");
  EXPECT_EQ(s.code(), ErrorCode::kNotFound);
  EXPECT_NE(s.message().find("s9.safetensors"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("'b'"), std::string::npos);
}

TEST_F(IndexTest, TensorNotInNamedFile) {
  Status s = open_with_index(R"({"weight_map":{"a":"s2.safetensors","b":"s2.safetensors"}})");
  EXPECT_NE(s.message().find("'a'"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("s2.safetensors"), std::string::npos);
  EXPECT_NE(s.message().find("no such tensor"), std::string::npos);
}

TEST_F(IndexTest, MalformedIndex) {
  Status s = open_with_index("{\"weight_map\":");
  EXPECT_NE(s.message().find("malformed JSON"), std::string::npos);
  s = open_with_index("[]");
  EXPECT_NE(s.message().find("JSON object"), std::string::npos);
  s = open_with_index(R"({"metadata":{}})");
  EXPECT_NE(s.message().find("weight_map"), std::string::npos);
  s = open_with_index(R"({"weight_map":["s1.safetensors"]})");
  EXPECT_NE(s.message().find("weight_map"), std::string::npos);
  s = open_with_index(R"({"weight_map":{"a":1}})");
  EXPECT_NE(s.message().find("'a'"), std::string::npos);
  s = open_with_index(R"({"weight_map":{}})");
  EXPECT_NE(s.message().find("empty"), std::string::npos);
  s = open_with_index(R"({"weight_map":{"a":"s1.safetensors","a":"s2.safetensors"}})");
  EXPECT_NE(s.message().find("duplicate key 'a'"), std::string::npos) << s.message();
}

TEST_F(IndexTest, CorruptShardNamedByIndex) {
  write_bytes(dir_.file("s2.safetensors"), safetensors_bytes("{}", "", 1000));
  write_bytes(dir_.file("model.safetensors.index.json"),
              R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  auto r = Checkpoint::open(dir_.path().string());
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find(dir_.file("s2.safetensors")), std::string::npos)
      << r.status().message();
}

TEST(Malformed, DuplicateTensorAcrossShards) {
  TempDir dir;
  Tensor a = Tensor::zeros(Shape{4}, DType::kF32);
  ASSERT_TRUE(write_safetensors(dir.file("x1.safetensors"), {{"w", a}}).is_ok());
  ASSERT_TRUE(write_safetensors(dir.file("x2.safetensors"), {{"w", a}}).is_ok());
  auto r = Checkpoint::open(dir.path().string());
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("'w'"), std::string::npos);
  EXPECT_NE(r.status().message().find("x1.safetensors"), std::string::npos);
  EXPECT_NE(r.status().message().find("x2.safetensors"), std::string::npos);
}

TEST(Malformed, Fp8ScaleProblems) {
  TempDir dir;
  Tensor q = Tensor::zeros(Shape{130, 256}, DType::kF8E4M3);
  Tensor q3 = Tensor::zeros(Shape{2, 2, 2}, DType::kF8E4M3);
  Tensor good = Tensor::zeros(Shape{2, 2}, DType::kF32);
  Tensor wrong = Tensor::zeros(Shape{1, 2}, DType::kF32);
  Tensor int_scale = Tensor::zeros(Shape{2, 2}, DType::kI32);
  const std::string path = dir.file("m.safetensors");
  ASSERT_TRUE(write_safetensors(path, {{"noscale.weight", q},
                                       {"wrong.weight", q},
                                       {"wrong.weight_scale_inv", wrong},
                                       {"int.weight", q},
                                       {"int.weight_scale_inv", int_scale},
                                       {"ok.weight", q},
                                       {"ok.weight_scale_inv", good},
                                       {"cube.weight", q3}})
                  .is_ok());
  auto ck = Checkpoint::open(path);
  ASSERT_TRUE(ck.is_ok());
  auto r = ck->load("noscale.weight", Shape{130, 256}, DType::kBF16);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("noscale.weight_scale_inv"), std::string::npos);
  EXPECT_NE(r.status().message().find(path), std::string::npos);
  r = ck->load("wrong.weight", Shape{130, 256}, DType::kBF16);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("wrong.weight_scale_inv"), std::string::npos);
  EXPECT_NE(r.status().message().find("expected F32 [2, 2]"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("[1, 2]"), std::string::npos);
  r = ck->load("int.weight", Shape{130, 256}, DType::kF32);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("I32"), std::string::npos) << r.status().message();
  r = ck->load("cube.weight", Shape{2, 2, 2}, DType::kF32);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("2-D"), std::string::npos) << r.status().message();
  r = ck->load("ok.weight", Shape{130, 256}, DType::kF32, 0, 128);
  ASSERT_FALSE(r.is_ok());
  EXPECT_TRUE(ck->load("ok.weight", Shape{130, 256}, DType::kF32).is_ok());
  r = ck->load("ok.weight_scale_inv", Shape{2, 2}, DType::kI32);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kUnsupported);
}

}  // namespace
}  // namespace r1::io
