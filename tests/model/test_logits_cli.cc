// `r1serve logits` end to end: the built binary writes a little-endian
// float32 .npy of shape [n_tokens, vocab] that matches the transformers
// reference logits, prints nothing on stdout, and fails with exit code 1 and
// a message on stderr for bad input. Also `--load-format dummy` on a
// directory holding only config.json equals `make-model` with the same seed.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"

#include "core/npy.h"
#include "logit_stats.h"

namespace r1 {
namespace {

namespace fs = std::filesystem;

using clitest::CliRun;
using clitest::slurp;
using clitest::TempDir;
const std::string& kBinary = clitest::kR1serveBinary;
const std::string kModels = std::string(R1_TEST_DATA_DIR) + "/models/";

CliRun run(const std::string& args) {
  return clitest::run_r1serve(args);
}
std::string join(const std::vector<int32_t>& ids) {
  return clitest::join_ids(ids);
}

using teststats::stddev;

TEST(LogitsCli, BinaryExists) {
  ASSERT_TRUE(fs::exists(kBinary)) << "build the r1serve target first";
}

TEST(LogitsCli, WritesReferenceLogitsAndNothingOnStdout) {
  for (const std::string name : {"deepseek_v3_fp8_tiny", "qwen2_tiny"}) {
    SCOPED_TRACE(name);
    std::ifstream rf(kModels + name + "/reference.json");
    ASSERT_TRUE(rf.good());
    const auto ref = nlohmann::json::parse(rf);
    const auto tokens = ref["sequences"][1].get<std::vector<int32_t>>();  // 40 tokens
    TempDir tmp;
    const std::string npy = tmp.file("out.npy");
    CliRun r = run("logits --threads 2 --model " + kModels + name + " --tokens " + join(tokens) +
                   " --out " + npy);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "") << "stdout must stay empty";
    // The header says little-endian float32, C order, [n, vocab].
    const std::string bytes = slurp(npy);
    ASSERT_GT(bytes.size(), 10u);
    EXPECT_EQ(bytes.substr(0, 6), "\x93NUMPY");
    EXPECT_NE(bytes.find("'descr': '<f4'"), std::string::npos);
    EXPECT_NE(bytes.find("'fortran_order': False"), std::string::npos);
    auto got = read_npy(npy);
    ASSERT_TRUE(got.is_ok()) << got.status().to_string();
    auto want = read_npy(kModels + name + "/logits_1.npy");
    ASSERT_TRUE(want.is_ok());
    ASSERT_EQ(got->shape, want->shape);
    ASSERT_EQ(got->shape, (std::vector<int64_t>{static_cast<int64_t>(tokens.size()), 512}));
    const size_t n = tokens.size() * 512;
    const double sd = stddev(want->as<float>(), n);
    double max_err = 0;
    for (size_t i = 0; i < n; ++i)
      max_err = std::max(max_err, std::fabs(double(got->as<float>()[i]) - want->as<float>()[i]));
    EXPECT_LE(max_err, 1e-4 * sd);
  }
}

TEST(LogitsCli, BadInputFailsWithAMessageOnStderr) {
  TempDir tmp;
  const std::string model = kModels + "llama_tiny";
  for (const std::string& args : std::vector<std::string>{
           "--tokens 1,2,999999 --out " + tmp.file("a.npy"),  // outside the vocabulary
           "--tokens 1,x,3 --out " + tmp.file("b.npy"),       // not a number
           "--tokens 1,2 --out /nonexistent-dir/c.npy"}) {    // cannot write
    CliRun r = run("logits --model " + model + " " + args);
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_EQ(r.out, "") << args;
    EXPECT_NE(r.err.find("r1serve logits:"), std::string::npos) << args << ": " << r.err;
  }
  CliRun missing = run("logits --model " + tmp.file("nope") + " --tokens 1 --out " + tmp.file("d"));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.out, "");
  EXPECT_NE(missing.err.find(tmp.file("nope")), std::string::npos) << missing.err;
}

TEST(LogitsCli, DummyWeightsEqualMakeModelWithTheSameSeed) {
  TempDir tmp;
  const std::string cfg_only = tmp.file("cfg_only"), made = tmp.file("made");
  fs::create_directories(cfg_only);
  fs::copy_file(kModels + "deepseek_v3_tiny/config.json", cfg_only + "/config.json");
  CliRun mk = run("make-model --config " + cfg_only + "/config.json --out " + made + " --seed 5");
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  const std::string tokens = " --tokens 3,1,4,1,5,9,2,6 --threads 2";
  CliRun a = run("logits --model " + cfg_only + " --load-format dummy --seed 5" + tokens +
                 " --out " + tmp.file("dummy5.npy"));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, "");
  CliRun b = run("logits --model " + made + tokens + " --out " + tmp.file("made5.npy"));
  ASSERT_EQ(b.exit_code, 0) << b.err;
  CliRun c = run("logits --model " + cfg_only + " --load-format dummy --seed 6" + tokens +
                 " --out " + tmp.file("dummy6.npy"));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto d5 = read_npy(tmp.file("dummy5.npy")), m5 = read_npy(tmp.file("made5.npy")),
       d6 = read_npy(tmp.file("dummy6.npy"));
  ASSERT_TRUE(d5.is_ok() && m5.is_ok() && d6.is_ok());
  ASSERT_EQ(d5->shape, (std::vector<int64_t>{8, 512}));
  ASSERT_EQ(d5->shape, m5->shape);
  const size_t n = 8 * 512;
  EXPECT_EQ(std::memcmp(d5->as<float>(), m5->as<float>(), n * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(d5->as<float>(), d6->as<float>(), n * sizeof(float)), 0);
  // Without dummy, a directory with only config.json is a clear error.
  CliRun e = run("logits --model " + cfg_only + tokens + " --out " + tmp.file("x.npy"));
  EXPECT_EQ(e.exit_code, 1);
  EXPECT_NE(e.err.find("safetensors"), std::string::npos) << e.err;
}

}  // namespace
}  // namespace r1
