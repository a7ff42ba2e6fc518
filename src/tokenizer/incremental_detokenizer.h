// IncrementalDetokenizer: turns a stream of token ids into text for
// streaming responses. Text is emitted as soon as it is final: never a broken
// UTF-8 sequence, and the concatenation of everything emitted (flush included)
// equals Tokenizer::decode of all the ids. One per stream; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "tokenizer/tokenizer.h"

namespace r1::tok {

class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(std::shared_ptr<const Tokenizer> tokenizer,
                                  bool skip_special_tokens = false);

  // Adds one token; returns the text that became final (possibly empty).
  std::string push(int32_t id);
  std::string push(std::span<const int32_t> ids);
  // Ends the stream: bytes still pending (an incomplete UTF-8 sequence) come
  // out as U+FFFD, as decode would write them.
  std::string flush();
  // Bytes held back because they may still become a complete character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  void append(int32_t id);
  std::string take_final();

  std::shared_ptr<const Tokenizer> tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;
};

}  // namespace r1::tok
