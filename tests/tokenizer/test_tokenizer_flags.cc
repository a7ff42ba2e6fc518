// Added-token flags (lstrip, rstrip, single_word, normalized, overlapping
// tokens), NFC, TemplateProcessing and the GPT-2 ByteLevel regex, on the small
// hand-made tokenizer in tests/data/tokenizer/flags, against `tokenizers`'
// reference ids; and clear errors (never a crash) for malformed files.
#include <fstream>
#include <random>
#include <sstream>

#include "tokenizer_test_util.h"

namespace r1::tok {
namespace {

using nlohmann::json;

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(FlagsTokenizer, IdsMatchReference) {
  auto tok = testing::load_tokenizer("flags");
  ASSERT_NE(tok, nullptr);
  const auto& ref = testing::load_reference("flags");
  ASSERT_GE(ref.texts.size(), 30u);
  for (const auto& rec : ref.texts) {
    auto text = rec["text"].get<std::string>();
    EXPECT_EQ(tok->encode(text), rec["ids"].get<std::vector<int32_t>>()) << json(text).dump();
    if (rec.contains("ids_special")) {
      EXPECT_EQ(tok->encode(text, true), rec["ids_special"].get<std::vector<int32_t>>())
          << json(text).dump();
    }
    auto ids = rec["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok->decode(ids), rec["decoded"].get<std::string>());
    EXPECT_EQ(tok->decode(ids, true), rec["decoded_skip"].get<std::string>());
  }
}

TEST(FlagsTokenizer, FlagsBehaveAsDocumented) {
  auto tok = testing::load_tokenizer("flags");
  ASSERT_NE(tok, nullptr);
  const int32_t l = tok->token_to_id("<L>"), r = tok->token_to_id("<R>"),
                word = tok->token_to_id("word"), cafe = tok->token_to_id("café"),
                naive = tok->token_to_id("naïve"), a = tok->token_to_id("<a>"),
                ab = tok->token_to_id("<a><b>");
  ASSERT_GE(std::min({l, r, word, cafe, naive, a, ab}), 0);
  auto count = [](const std::vector<int32_t>& v, int32_t id) {
    return std::count(v.begin(), v.end(), id);
  };
  // lstrip swallows the spaces before <L>: the text before it has no trailing space.
  auto ids = tok->encode("hello    <L>world");
  ASSERT_EQ(count(ids, l), 1);
  auto before = std::vector<int32_t>(ids.begin(), std::find(ids.begin(), ids.end(), l));
  EXPECT_EQ(tok->decode(before), "hello");
  // rstrip swallows the spaces after <R>.
  ids = tok->encode("x<R>   y");
  auto after = std::vector<int32_t>(std::find(ids.begin(), ids.end(), r) + 1, ids.end());
  EXPECT_EQ(tok->decode(after), "y");
  // single_word: only whole words match.
  EXPECT_EQ(count(tok->encode("a word here"), word), 1);
  EXPECT_EQ(count(tok->encode("swordfish"), word), 0);
  EXPECT_EQ(count(tok->encode("word_x"), word), 0);
  // normalized=true matches after NFC, normalized=false only the raw text.
  EXPECT_EQ(count(tok->encode("cafe\u0301"), cafe), 1);
  EXPECT_EQ(count(tok->encode("nai\u0308ve"), naive), 0);
  EXPECT_EQ(count(tok->encode("na\u00efve"), naive), 1);
  // Leftmost-longest: "<a><b>" wins over "<a>".
  ids = tok->encode("<a><b>");
  EXPECT_EQ(ids, std::vector<int32_t>{ab});
  // TemplateProcessing puts <s> first.
  EXPECT_EQ(tok->encode("hi", true).front(), tok->token_to_id("<s>"));
  EXPECT_EQ(tok->prefix_ids(), std::vector<int32_t>{tok->token_to_id("<s>")});
}

json flags_json() {
  return json::parse(read_text(testing::tokenizer_dir("flags") + "/tokenizer.json"));
}

struct Malformed {
  const char* name;
  std::function<void(json&)> mutate;
  const char* expect_in_message;
};

TEST(TokenizerErrors, MalformedFilesGiveClearErrors) {
  std::vector<Malformed> cases = {
      {"no model", [](json& j) { j.erase("model"); }, "model"},
      {"vocab not object", [](json& j) { j["model"]["vocab"] = 3; }, "vocab"},
      {"merges not array", [](json& j) { j["model"]["merges"] = "x"; }, "merges"},
      {"merge of unknown token",
       [](json& j) {
         j["model"]["merges"].push_back(json::array({"zz", "qq"}));
       },
       "merges"},
      {"merge is a number", [](json& j) { j["model"]["merges"].push_back(5); }, "merges"},
      {"merge string with one token", [](json& j) { j["model"]["merges"].push_back("single"); },
       "merges"},
      {"negative id", [](json& j) { j["model"]["vocab"]["!"] = -4; }, "range"},
      {"id is a string", [](json& j) { j["model"]["vocab"]["!"] = "4"; }, "vocab"},
      {"missing byte token", [](json& j) { j["model"]["vocab"].erase("!"); }, "byte"},
      {"not BPE", [](json& j) { j["model"]["type"] = "WordPiece"; }, "BPE"},
      {"added_tokens not array", [](json& j) { j["added_tokens"] = json::object(); },
       "added_tokens"},
      {"added token without id", [](json& j) { j["added_tokens"][0].erase("id"); }, "id"},
      {"added token id huge", [](json& j) { j["added_tokens"][0]["id"] = 1LL << 40; }, "range"},
      {"bad regex",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
       },
       "regex"},
      {"unknown pre-tokenizer",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Whitespace"}};
       },
       "Whitespace"},
      {"unknown split behavior",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Sideways"}};
       },
       "Sideways"},
      {"unsupported normalizer",
       [](json& j) {
         j["normalizer"] = {{"type", "Lowercase"}};
       },
       "Lowercase"},
      {"no decoder", [](json& j) { j.erase("decoder"); }, "decoder"},
      {"template with unknown special",
       [](json& j) { j["post_processor"]["special_tokens"] = json::object(); }, "<s>"},
      {"not an object",
       [](json& j) {
         j = json::array({1, 2});
       },
       "object"},
  };
  for (const auto& c : cases) {
    json j = flags_json();
    c.mutate(j);
    auto r = Tokenizer::from_json(j.dump(), "", "case '" + std::string(c.name) + "'");
    ASSERT_FALSE(r.is_ok()) << c.name;
    EXPECT_NE(r.status().message().find(c.expect_in_message), std::string::npos)
        << c.name << ": " << r.status().message();
    EXPECT_NE(r.status().message().find(c.name), std::string::npos) << "error names its source";
  }
}

TEST(TokenizerErrors, BrokenJsonAndMissingFiles) {
  auto r = Tokenizer::from_json("{\"model\": {", "", "x.json");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("not valid JSON"), std::string::npos);
  std::string real = read_text(testing::tokenizer_dir("deepseek_v3") + "/tokenizer.json");
  ASSERT_GT(real.size(), 1000000u);
  r = Tokenizer::from_json(std::string_view(real).substr(0, real.size() / 2), "", "half");
  ASSERT_FALSE(r.is_ok());
  r = Tokenizer::from_json(read_text(testing::tokenizer_dir("flags") + "/tokenizer.json"), "{",
                           "flags");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("tokenizer_config.json"), std::string::npos);
  auto missing = Tokenizer::load("/nonexistent/dir");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
}

TEST(TokenizerErrors, RandomByteMutationsNeverCrash) {
  const std::string base = read_text(testing::tokenizer_dir("flags") + "/tokenizer.json");
  std::mt19937 rng(99);
  std::uniform_int_distribution<size_t> pos(0, base.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255), nmut(1, 4);
  int loaded = 0;
  for (int iter = 0; iter < 300; ++iter) {
    std::string s = base;
    for (int k = nmut(rng); k > 0; --k) s[pos(rng)] = static_cast<char>(byte(rng));
    auto r = Tokenizer::from_json(s, "", "mutant");
    if (r.is_ok()) {
      ++loaded;
      auto ids = r.value()->encode("the word <L> café <a><b> x");
      (void)r.value()->decode(ids);
    } else {
      EXPECT_FALSE(r.status().message().empty());
    }
  }
  RecordProperty("loaded_mutants", loaded);
}

}  // namespace
}  // namespace r1::tok
