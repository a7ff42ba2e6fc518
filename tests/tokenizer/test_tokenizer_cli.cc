// `r1serve tokenize` end to end: runs the built binary on inputs from the
// corpus and compares its output with the committed reference ids; bad input
// exits 1 with a message.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/wait.h>
#include <unistd.h>

#include "tokenizer_test_util.h"

namespace r1::tok {
namespace {

struct RunResult {
  int exit_code = -1;
  std::string out;
};

// Runs r1serve with `args`, feeding `input` on stdin (through a temp file).
RunResult run_r1serve(const std::string& args, const std::string& input) {
  static int counter = 0;
  auto in_path = std::filesystem::temp_directory_path() /
                 ("r1_tok_cli_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  {
    std::ofstream f(in_path, std::ios::binary);
    f << input;
  }
  std::string cmd =
      std::string(R1_BINARY_DIR) + "/r1serve " + args + " < " + in_path.string() + " 2>/dev/null";
  RunResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr);
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::filesystem::remove(in_path);
  return r;
}

TEST(TokenizeCli, BinaryExists) {
  ASSERT_TRUE(std::filesystem::exists(std::string(R1_BINARY_DIR) + "/r1serve"))
      << "build the r1serve target first";
}

TEST(TokenizeCli, PlainTextMatchesReference) {
  for (const std::string name : {"deepseek_v3", "llama3"}) {
    const auto& ref = testing::load_reference(name);
    for (size_t i : {0, 77, 300}) {
      ASSERT_LT(i, ref.texts.size());
      auto r = run_r1serve("tokenize --tokenizer " + testing::tokenizer_dir(name),
                           ref.texts[i]["text"].get<std::string>());
      ASSERT_EQ(r.exit_code, 0);
      EXPECT_EQ(nlohmann::json::parse(r.out), ref.texts[i]["ids"]) << name << " #" << i;
    }
  }
}

TEST(TokenizeCli, JsonlMatchesReference) {
  const auto& ref = testing::load_reference("qwen3");
  std::string input;
  std::vector<nlohmann::json> expected;
  for (size_t i = 0; i < ref.texts.size(); i += 7) {
    input += nlohmann::json(ref.texts[i]["text"]).dump() + "\n";
    expected.push_back(ref.texts[i]["ids"]);
  }
  auto r = run_r1serve(
      "tokenize --jsonl --tokenizer " + testing::tokenizer_dir("qwen3") + "/tokenizer.json", input);
  ASSERT_EQ(r.exit_code, 0);
  std::istringstream lines(r.out);
  std::string line;
  size_t k = 0;
  while (std::getline(lines, line)) {
    ASSERT_LT(k, expected.size());
    EXPECT_EQ(nlohmann::json::parse(line), expected[k]) << "line " << k;
    ++k;
  }
  EXPECT_EQ(k, expected.size());
}

TEST(TokenizeCli, AddSpecialTokensAddsBos) {
  auto tok = testing::load_tokenizer("deepseek_v3");
  ASSERT_NE(tok, nullptr);
  const auto& ref = testing::load_reference("deepseek_v3");
  auto r = run_r1serve(
      "tokenize --jsonl --add-special-tokens --tokenizer " + testing::tokenizer_dir("deepseek_v3"),
      nlohmann::json(ref.texts[0]["text"]).dump() + "\n");
  ASSERT_EQ(r.exit_code, 0);
  auto ids = nlohmann::json::parse(r.out).get<std::vector<int32_t>>();
  auto expected = ref.texts[0]["ids"].get<std::vector<int32_t>>();
  expected.insert(expected.begin(), tok->bos_id());
  EXPECT_EQ(ids, expected);
}

TEST(TokenizeCli, BadInputExitsOne) {
  const std::string dir = testing::tokenizer_dir("llama3");
  EXPECT_EQ(run_r1serve("tokenize --jsonl --tokenizer " + dir, "\"ok\"\nnot json\n").exit_code, 1);
  EXPECT_EQ(run_r1serve("tokenize --jsonl --tokenizer " + dir, "{\"a\": 1}\n").exit_code, 1);
  EXPECT_EQ(run_r1serve("tokenize --tokenizer /nonexistent/tokenizer.json", "x").exit_code, 1);
  EXPECT_NE(run_r1serve("tokenize", "x").exit_code, 0);  // --tokenizer is required
}

}  // namespace
}  // namespace r1::tok
