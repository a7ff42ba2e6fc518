// Incremental <think> ... </think> splitting (see reasoning_parser.h).
#include "server/reasoning_parser.h"

#include <algorithm>

namespace r1::server {

size_t partial_suffix(std::string_view text, std::string_view tag) {
  size_t max = std::min(text.size(), tag.size() - 1);
  for (size_t n = max; n > 0; --n) {
    if (text.substr(text.size() - n) == tag.substr(0, n)) return n;
  }
  return 0;
}

ReasoningParser::Delta ReasoningParser::push(std::string_view text) {
  Delta d;
  pending_.append(text);
  std::string_view buf = pending_;
  while (!buf.empty()) {
    if (state_ == State::kStart) {
      // Whitespace before an opening tag stays with the tag.
      size_t ws = 0;
      while (ws < buf.size() && (buf[ws] == '\n' || buf[ws] == ' ')) ++ws;
      std::string_view rest = buf.substr(ws);
      if (rest.substr(0, kOpen.size()) == kOpen) {
        buf = rest.substr(kOpen.size());
        state_ = State::kReasoning;
        continue;
      }
      if (rest.size() < kOpen.size() && kOpen.substr(0, rest.size()) == rest)
        break;                     // wait for more
      state_ = State::kReasoning;  // R1: the prompt opened the reasoning
      continue;
    }
    if (state_ == State::kReasoning) {
      size_t pos = buf.find(kClose);
      if (pos != std::string_view::npos) {
        d.reasoning.append(buf.substr(0, pos));
        buf = buf.substr(pos + kClose.size());
        state_ = State::kContent;
        saw_end_ = true;
        continue;
      }
      size_t hold = partial_suffix(buf, kClose);
      d.reasoning.append(buf.substr(0, buf.size() - hold));
      buf = buf.substr(buf.size() - hold);
      break;
    }
    d.content.append(buf);
    buf = {};
  }
  pending_ = std::string(buf);
  return d;
}

ReasoningParser::Delta ReasoningParser::finish() {
  Delta d;
  if (state_ == State::kContent) {
    d.content = std::move(pending_);
  } else {
    d.reasoning = std::move(pending_);
  }
  pending_.clear();
  return d;
}

}  // namespace r1::server
