// AddedVocabulary: a byte trie per pass and the match loop of `tokenizers`'
// AddedVocabulary::find_matches (leftmost-longest, then the single_word,
// lstrip and rstrip adjustments).
#include "tokenizer/added_vocabulary.h"

#include <algorithm>

#include "tokenizer/unicode.h"

namespace r1::tok {
namespace {

// The code point that ends right before byte `end` of `s` (valid UTF-8).
uint32_t code_point_before(std::string_view s, size_t end) {
  size_t b = end - 1;
  while (b > 0 && (static_cast<uint8_t>(s[b]) & 0xC0) == 0x80) --b;
  return next_code_point(s, b);
}

}  // namespace

void AddedVocabulary::add(const AddedToken& token, std::string pattern) {
  auto index = static_cast<int32_t>(tokens_.size());
  tokens_.push_back(token);
  if (pattern.empty()) return;
  Trie& trie = tries_[token.normalized ? 1 : 0];
  trie.empty = false;
  int32_t node = 0;
  for (size_t k = 0; k < pattern.size(); ++k) {
    auto byte = static_cast<uint8_t>(pattern[k]);
    auto& children = trie.nodes[node].children;
    auto it = std::find_if(children.begin(), children.end(),
                           [byte](const auto& c) { return c.first == byte; });
    int32_t next;
    if (it != children.end()) {
      next = it->second;
    } else {
      next = static_cast<int32_t>(trie.nodes.size());
      children.push_back({byte, next});
      trie.nodes.emplace_back();
      if (node == 0) trie.root[byte] = next;
    }
    node = next;
  }
  // The first token with a given content wins, as in a HashMap keyed by content.
  if (trie.nodes[node].token < 0) trie.nodes[node].token = index;
}

std::pair<size_t, int32_t> AddedVocabulary::longest_at(const Trie& trie, std::string_view text,
                                                       size_t pos) const {
  int32_t node = trie.root[static_cast<uint8_t>(text[pos])];
  size_t best_len = 0;
  int32_t best = -1;
  size_t k = pos + 1;
  while (node > 0) {
    if (trie.nodes[node].token >= 0) {
      best = trie.nodes[node].token;
      best_len = k - pos;
    }
    if (k >= text.size()) break;
    auto byte = static_cast<uint8_t>(text[k]);
    int32_t next = 0;
    for (const auto& c : trie.nodes[node].children) {
      if (c.first == byte) {
        next = c.second;
        break;
      }
    }
    node = next;
    ++k;
  }
  return {best_len, best};
}

void AddedVocabulary::split(std::string_view text, bool normalized_pass,
                            std::vector<TextPiece>& out) const {
  const Trie& trie = tries_[normalized_pass ? 1 : 0];
  auto n = static_cast<uint32_t>(text.size());
  if (trie.empty) {
    if (n > 0) out.push_back({0, n, -1});
    return;
  }
  uint32_t start_offset = 0;  // end of the last emitted piece
  size_t pos = 0;
  while (pos < text.size()) {
    if (trie.root[static_cast<uint8_t>(text[pos])] == 0) {
      ++pos;
      continue;
    }
    auto [len, index] = longest_at(trie, text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[index];
    size_t start = pos, stop = pos + len;
    pos = stop;  // the search resumes after the match, whatever is done with it
    if (tok.single_word) {
      bool start_ok = start == 0 || !is_word_char(code_point_before(text, start));
      bool stop_ok = true;
      if (stop < text.size()) {
        size_t i = stop;
        stop_ok = !is_word_char(next_code_point(text, i));
      }
      if (!start_ok || !stop_ok) continue;
    }
    if (tok.lstrip) {
      size_t s = start;
      while (s > 0) {
        size_t b = s - 1;
        while (b > 0 && (static_cast<uint8_t>(text[b]) & 0xC0) == 0x80) --b;
        size_t i = b;
        if (!is_whitespace(next_code_point(text, i))) break;
        s = b;
      }
      start = std::max<size_t>(s, start_offset);
    }
    if (tok.rstrip) {
      while (stop < text.size()) {
        size_t i = stop;
        if (!is_whitespace(next_code_point(text, i))) break;
        stop = i;
      }
    }
    if (start_offset < start) out.push_back({start_offset, static_cast<uint32_t>(start), -1});
    out.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(stop), tok.id});
    start_offset = static_cast<uint32_t>(stop);
  }
  if (start_offset < n) out.push_back({start_offset, n, -1});
}

}  // namespace r1::tok
