// AddedVocabulary: the "added_tokens" of tokenizer.json and how they are cut
// out of text before normalization and BPE, as `tokenizers` does it:
// leftmost-longest matching, single_word / lstrip / rstrip, and two passes
// (tokens with normalized=false on the raw text, then the others on each
// normalized piece).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace r1::tok {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// A piece of text: either an added token (id >= 0) or text to tokenize (id -1).
struct TextPiece {
  uint32_t begin = 0;
  uint32_t end = 0;
  int32_t id = -1;
};

class AddedVocabulary {
 public:
  // `pattern` is what is searched for: the content, or for normalized tokens
  // the normalized content.
  void add(const AddedToken& token, std::string pattern);

  // Splits `text` on the tokens of one pass (normalized or not); appends pieces.
  void split(std::string_view text, bool normalized_pass, std::vector<TextPiece>& out) const;
  bool has_tokens(bool normalized_pass) const { return !tries_[normalized_pass].empty; }

  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;
    int32_t token = -1;  // index into tokens_ when a pattern ends here
  };
  struct Trie {
    std::vector<Node> nodes{Node{}};
    bool empty = true;
    std::array<int32_t, 256> root{};  // child of the root per first byte (0: none)
  };
  // Longest pattern starting at text[pos]: its length and token index, or -1.
  std::pair<size_t, int32_t> longest_at(const Trie& trie, std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;
  Trie tries_[2];
};

}  // namespace r1::tok
