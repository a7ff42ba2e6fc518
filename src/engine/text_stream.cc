// TextStream: stop-string matching with hold-back over detokenized text.
#include "engine/text_stream.h"

#include <algorithm>

namespace r1::engine {

TextStream::TextStream(std::shared_ptr<const tok::Tokenizer> tokenizer, bool skip_special_tokens,
                       std::vector<std::string> stop_strings) {
  if (tokenizer) detok_.emplace(std::move(tokenizer), skip_special_tokens);
  for (auto& s : stop_strings)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string TextStream::push(int32_t id, bool match) {
  if (!detok_ || stopped_by_) return {};
  held_ += detok_->push(id);
  return release(match);
}

std::string TextStream::release(bool match) {
  if (!match || stops_.empty()) return std::exchange(held_, {});
  // The earliest stop string in the held text ends the stream there. Held
  // text never contains a complete stop string from earlier pushes, and
  // emitted text never ends in a prefix of one, so searching held_ suffices.
  size_t best = std::string::npos;
  const std::string* which = nullptr;
  for (const auto& s : stops_) {
    const size_t p = held_.find(s);
    if (p != std::string::npos && (p < best || (p == best && s.size() > which->size()))) {
      best = p;
      which = &s;
    }
  }
  if (which != nullptr) {
    stopped_by_ = *which;
    std::string out = held_.substr(0, best);
    held_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& s : stops_) {
    const size_t max_k = std::min(s.size() - 1, held_.size());
    for (size_t k = max_k; k > keep; --k) {
      if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string TextStream::finish() {
  if (!detok_ || stopped_by_) return {};
  held_ += detok_->flush();
  // A stop string may still complete within the flushed bytes.
  std::string out = release(true);
  if (!stopped_by_) out += std::exchange(held_, {});
  return out;
}

}  // namespace r1::engine
