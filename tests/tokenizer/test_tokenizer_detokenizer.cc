// IncrementalDetokenizer properties on the real tokenizers: every emitted
// chunk is valid UTF-8, and the chunks joined equal decode() of all ids, for
// the corpus and for random id sequences (which split characters anywhere).
#include <random>

#include "tokenizer/bpe_model.h"
#include "tokenizer/incremental_detokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer_test_util.h"

namespace r1::tok {
namespace {

using testing::load_tokenizer;

// Streams `ids` one at a time; checks each chunk and returns the joined text.
std::string stream(const std::shared_ptr<Tokenizer>& tok, const std::vector<int32_t>& ids,
                   bool skip) {
  IncrementalDetokenizer detok(tok, skip);
  std::string all;
  for (int32_t id : ids) {
    std::string chunk = detok.push(id);
    EXPECT_TRUE(is_valid_utf8(chunk)) << "broken UTF-8 chunk after id " << id;
    EXPECT_LE(detok.pending_bytes(), 3u);
    all += chunk;
  }
  std::string tail = detok.flush();
  EXPECT_TRUE(is_valid_utf8(tail));
  return all + tail;
}

class DetokenizerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DetokenizerTest, StreamingCorpusEqualsDecode) {
  auto tok = load_tokenizer(GetParam());
  ASSERT_NE(tok, nullptr);
  for (const std::string& text : testing::read_corpus()) {
    auto ids = tok->encode(text);
    for (bool skip : {false, true}) EXPECT_EQ(stream(tok, ids, skip), tok->decode(ids, skip));
  }
}

TEST_P(DetokenizerTest, StreamingRandomIdsEqualsDecode) {
  auto tok = load_tokenizer(GetParam());
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(1234);
  // Single-byte tokens make partial and invalid UTF-8 likely.
  std::vector<int32_t> byte_ids;
  for (int b = 0; b < 256; ++b) byte_ids.push_back(tok->token_to_id(byte_to_unicode()[b]));
  std::uniform_int_distribution<int32_t> any(-5, tok->vocab_size() + 5);
  std::uniform_int_distribution<int> pick(0, 255), len(1, 40), kind(0, 2);
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<int32_t> ids(len(rng));
    int k = kind(rng);
    for (auto& id : ids) {
      if (k == 0 || (k == 2 && pick(rng) < 128))
        id = byte_ids[pick(rng)];
      else
        id = any(rng);
    }
    for (bool skip : {false, true}) {
      std::string expect = tok->decode(ids, skip);
      ASSERT_TRUE(is_valid_utf8(expect));
      ASSERT_EQ(stream(tok, ids, skip), expect) << nlohmann::json(ids).dump();
    }
  }
}

TEST_P(DetokenizerTest, EmitsAsSoonAsFinal) {
  auto tok = load_tokenizer(GetParam());
  ASSERT_NE(tok, nullptr);
  auto byte_id = [&](uint8_t b) { return tok->token_to_id(byte_to_unicode()[b]); };
  IncrementalDetokenizer detok(tok);
  // "中" = E4 B8 AD, fed byte by byte: nothing until the last byte.
  EXPECT_EQ(detok.push(byte_id(0xE4)), "");
  EXPECT_EQ(detok.push(byte_id(0xB8)), "");
  EXPECT_EQ(detok.pending_bytes(), 2u);
  EXPECT_EQ(detok.push(byte_id(0xAD)), "中");
  // Whole words come out at once.
  auto hello = tok->encode("Hello world");
  std::string got;
  for (int32_t id : hello) got += detok.push(id);
  EXPECT_EQ(got, "Hello world");
  // A byte that can never start a character is replaced at once.
  EXPECT_EQ(detok.push(byte_id(0xFF)), "\xEF\xBF\xBD");
  // An incomplete sequence cut short by an ASCII byte is final when it arrives.
  EXPECT_EQ(detok.push(byte_id(0xE4)), "");
  EXPECT_EQ(detok.push(byte_id('a')),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(detok.push(byte_id(0xF0)), "");
  EXPECT_EQ(detok.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(detok.flush(), "");
}

TEST_P(DetokenizerTest, SkipsSpecialTokensWhenAsked) {
  auto tok = load_tokenizer(GetParam());
  ASSERT_NE(tok, nullptr);
  int32_t special = -1;
  for (const auto& t : tok->added_tokens())
    if (t.special) special = t.id;
  ASSERT_GE(special, 0);
  IncrementalDetokenizer keep(tok, false), skip(tok, true);
  EXPECT_EQ(keep.push(special), tok->id_to_token(special));
  EXPECT_EQ(skip.push(special), "");
}

INSTANTIATE_TEST_SUITE_P(Real, DetokenizerTest,
                         ::testing::ValuesIn(testing::real_tokenizer_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace r1::tok
