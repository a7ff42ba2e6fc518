// IncrementalDetokenizer: appends each token's bytes and releases the longest
// prefix whose UTF-8 repair can no longer change (append_utf8_lossy with
// final_chunk=false keeps only a trailing, still-completable sequence).
#include "tokenizer/incremental_detokenizer.h"

#include "tokenizer/unicode.h"

namespace r1::tok {

IncrementalDetokenizer::IncrementalDetokenizer(std::shared_ptr<const Tokenizer> tokenizer,
                                               bool skip_special_tokens)
    : tokenizer_(std::move(tokenizer)), skip_special_tokens_(skip_special_tokens) {}

void IncrementalDetokenizer::append(int32_t id) {
  if (skip_special_tokens_ && tokenizer_->is_special(id)) return;
  pending_ += tokenizer_->token_bytes(id);  // empty for unknown ids, as decode skips them
}

std::string IncrementalDetokenizer::take_final() {
  std::string out;
  size_t keep = append_utf8_lossy(out, pending_, /*final_chunk=*/false);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string IncrementalDetokenizer::push(int32_t id) {
  append(id);
  return take_final();
}

std::string IncrementalDetokenizer::push(std::span<const int32_t> ids) {
  for (int32_t id : ids) append(id);
  return take_final();
}

std::string IncrementalDetokenizer::flush() {
  std::string out;
  append_utf8_lossy(out, pending_, /*final_chunk=*/true);
  pending_.clear();
  return out;
}

}  // namespace r1::tok
