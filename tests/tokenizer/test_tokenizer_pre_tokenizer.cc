// The hand-written matchers of fast_split.cc against PCRE2 on the same
// patterns (the patterns read from the real tokenizer.json files): identical
// matches on the corpus and on random strings rich in edge-case characters.
#include <fstream>
#include <random>

#include "tokenizer/fast_split.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer_test_util.h"

namespace r1::tok {
namespace {

std::vector<std::string> real_split_patterns() {
  std::vector<std::string> out;
  for (const auto& name : testing::real_tokenizer_names()) {
    std::ifstream f(testing::tokenizer_dir(name) + "/tokenizer.json");
    EXPECT_TRUE(f.good()) << name;
    auto j = nlohmann::json::parse(f);
    for (const auto& p : j["pre_tokenizer"]["pretokenizers"])
      if (p["type"] == "Split") out.push_back(p["pattern"]["Regex"].get<std::string>());
  }
  return out;
}

std::string random_text(std::mt19937& rng) {
  static const std::vector<uint32_t> pool = {
      'a',     'Z',      'q',     's',     'S',     't',    'T',     'r',     'e',     'v',
      'l',     'L',      'm',     'd',     'D',     '0',    '7',     '\'',    '\'',    ' ',
      ' ',     ' ',      '\t',    '\r',    '\n',    '\n',   '!',     '.',     ',',     '-',
      '_',     '$',      '<',     '>',     '|',     '#',    '(',     ')',     '"',     '\\',
      '`',     '~',      0x0B,    0x0C,    0x1C,    0x1F,   0x7F,    0x85,    0xA0,    0xAD,
      0xB2,    0xBD,     0xE9,    0x17F,   0x212A,  0x301,  0x308,   0x200D,  0x200B,  0x180E,
      0x1680,  0x2000,   0x2009,  0x2028,  0x2029,  0x202F, 0x205F,  0x3000,  0xFEFF,  0x4E2D,
      0x9FA5,  0x9FA6,   0x3042,  0x3040,  0x309F,  0x30A2, 0x30FF,  0x3100,  0xD55C,  0x1100,
      0x0661,  0x0967,   0x2163,  0x2460,  0x20AC,  0xA9,   0x2019,  0x201C,  0x3001,  0x300C,
      0xFF01,  0xFF21,   0x1F600, 0x1F44D, 0x1F3FD, 0xFE0F, 0x1D400, 0x1D7D8, 0x20000, 0xE0041,
      0xF0000, 0x10FFFD, 0x378,   0xFFFF,  0x0E01,  0x0E31};
  std::uniform_int_distribution<size_t> pick(0, pool.size() - 1);
  std::uniform_int_distribution<int> len(0, 30), any(0, 0x10FFFF), kind(0, 9);
  std::string s;
  for (int n = len(rng); n > 0; --n) {
    uint32_t cp = pool[pick(rng)];
    if (kind(rng) == 0) {
      cp = static_cast<uint32_t>(any(rng));
      if (cp >= 0xD800 && cp < 0xE000) cp = 'x';
    }
    append_utf8(s, cp);
  }
  return s;
}

TEST(FastSplit, RealPatternsAreRecognized) {
  auto patterns = real_split_patterns();
  ASSERT_EQ(patterns.size(), 5u);
  for (const auto& p : patterns) EXPECT_NE(fast_matcher_for(p), nullptr) << p;
  EXPECT_EQ(fast_matcher_for("\\p{N}+"), nullptr);
}

TEST(FastSplit, SameMatchesAsPcre2) {
  auto corpus = testing::read_corpus();
  std::mt19937 rng(4242);
  for (int i = 0; i < 30000; ++i) corpus.push_back(random_text(rng));
  for (const auto& pattern : real_split_patterns()) {
    auto fast = Regex::compile(pattern, false, true);
    auto slow = Regex::compile(pattern, false, false);
    ASSERT_TRUE(fast.is_ok() && slow.is_ok());
    ASSERT_TRUE(fast.value()->uses_fast_matcher());
    ASSERT_FALSE(slow.value()->uses_fast_matcher());
    int failures = 0;
    for (const auto& text : corpus) {
      std::vector<Span> a, b;
      fast.value()->find_all(text, 0, a);
      slow.value()->find_all(text, 0, b);
      bool same = a.size() == b.size();
      for (size_t k = 0; same && k < a.size(); ++k)
        same = a[k].begin == b[k].begin && a[k].end == b[k].end;
      if (!same && ++failures <= 5) {
        std::string fa, sb;
        for (const auto& sp : a) fa += "[" + text.substr(sp.begin, sp.end - sp.begin) + "]";
        for (const auto& sp : b) sb += "[" + text.substr(sp.begin, sp.end - sp.begin) + "]";
        ADD_FAILURE() << "pattern " << pattern << "\ntext " << nlohmann::json(text).dump()
                      << "\nfast  " << nlohmann::json(fa).dump() << "\npcre2 "
                      << nlohmann::json(sb).dump();
      }
    }
    EXPECT_EQ(failures, 0) << pattern;
  }
}

}  // namespace
}  // namespace r1::tok
