// Loading a whole model directory that is wrong in one place: a tensor
// missing, a tensor of the wrong shape, a truncated shard, an unknown
// model_type. Each is an error (never a crash) that names the checkpoint or
// file, the tensor, and what was expected.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "model/model.h"

namespace r1::model {
namespace {

namespace fs = std::filesystem;

const std::string kModels = std::string(R1_TEST_DATA_DIR) + "/models/";

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("r1_load_errors_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

// Copies `model`'s config.json and rewrites its single model.safetensors
// through `edit`, which may drop or replace tensors.
template <typename Edit>
void rewrite(const std::string& model, const TempDir& dir, Edit edit) {
  fs::copy_file(kModels + model + "/config.json", dir.file("config.json"));
  auto ck = io::Checkpoint::open(kModels + model + "/model.safetensors");
  ASSERT_TRUE(ck.is_ok()) << ck.status().to_string();
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& name : ck->names()) {
    auto t = ck->view(name);
    ASSERT_TRUE(t.is_ok());
    Tensor copy = *t;  // the view keeps the mapping alive
    if (edit(name, copy)) tensors.emplace_back(name, copy);
  }
  ASSERT_TRUE(io::write_safetensors(dir.file("model.safetensors"), tensors).is_ok());
}

Status load(const std::string& dir) {
  auto be = backend::make_cpu_backend(1);
  auto m = load_model_dir(dir, *be, LoadOptions{});
  return m.status();
}

TEST(LoadErrors, MissingTensorIsNamed) {
  TempDir dir;
  const std::string victim = "model.layers.1.self_attn.kv_a_proj_with_mqa.weight";
  rewrite("deepseek_v3_tiny", dir, [&](const std::string& n, Tensor&) { return n != victim; });
  Status s = load(dir.str());
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find(victim), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(dir.str()), std::string::npos) << s.message();
}

TEST(LoadErrors, WrongShapeNamesBothShapes) {
  TempDir dir;
  const std::string victim = "model.layers.0.self_attn.q_proj.weight";  // llama: [128, 128]
  rewrite("llama_tiny", dir, [&](const std::string& n, Tensor& t) {
    if (n == victim) t = Tensor::zeros(Shape{127, 128}, t.dtype());
    return true;
  });
  Status s = load(dir.str());
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find(victim), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("[127, 128]"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("[128, 128]"), std::string::npos) << s.message();
}

TEST(LoadErrors, TruncatedShardNamesFileAndTensor) {
  TempDir dir;
  fs::copy_file(kModels + "qwen2_tiny/config.json", dir.file("config.json"));
  std::ifstream in(kModels + "qwen2_tiny/model.safetensors", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(dir.file("model.safetensors"), std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  Status s = load(dir.str());
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find(dir.file("model.safetensors")), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("tensor '"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.message();
}

TEST(LoadErrors, UnknownModelTypeListsTheSupportedOnes) {
  TempDir dir;
  std::ofstream(dir.file("config.json")) << R"({"model_type": "mixtral", "vocab_size": 10})";
  Status s = load(dir.str());
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("mixtral"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("deepseek_v3, deepseek_v2, qwen2, llama"), std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace r1::model
