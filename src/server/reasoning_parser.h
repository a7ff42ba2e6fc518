// ReasoningParser: splits DeepSeek-R1 output text into reasoning (before
// </think>) and content (after), incrementally, as vLLM's deepseek_r1 parser
// does: an opening <think> at the start is dropped, output with no </think>
// is all reasoning (truncated generations), and tags split across deltas are
// held back until they are complete.
#pragma once

#include <string>
#include <string_view>

namespace r1::server {

class ReasoningParser {
 public:
  struct Delta {
    std::string reasoning;
    std::string content;
    bool empty() const { return reasoning.empty() && content.empty(); }
  };

  // enabled = false: everything is content.
  explicit ReasoningParser(bool enabled = true)
      : state_(enabled ? State::kStart : State::kContent) {}

  Delta push(std::string_view text);
  // Releases text held back at the end of the stream.
  Delta finish();
  bool reasoning_ended() const { return state_ == State::kContent; }
  bool saw_reasoning_end() const { return saw_end_; }

  static constexpr std::string_view kOpen = "<think>";
  static constexpr std::string_view kClose = "</think>";

 private:
  enum class State { kStart, kReasoning, kContent };
  State state_;
  bool saw_end_ = false;
  std::string pending_;
};

// Length of the longest suffix of `text` that is a proper prefix of `tag`
// (text that may still become the tag).
size_t partial_suffix(std::string_view text, std::string_view tag);

}  // namespace r1::server
