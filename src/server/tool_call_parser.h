// ToolCallParser: finds DeepSeek tool calls in generated text,
//   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
//   ```json
//   ARGS
//   ```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>
// (and the V3.1 form NAME<｜tool▁sep｜>ARGS), incrementally: plain text before
// the calls is content, each call is reported once it is complete.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace r1::server {

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;
};

class ToolCallParser {
 public:
  struct Delta {
    std::string content;
    std::vector<ToolCall> calls;  // calls completed by this push
  };

  Delta push(std::string_view text);
  // End of output: an unfinished call section is returned as content.
  Delta finish();
  int num_calls() const { return num_calls_; }

  static constexpr std::string_view kCallsBegin = "<｜tool▁calls▁begin｜>";
  static constexpr std::string_view kCallsEnd = "<｜tool▁calls▁end｜>";
  static constexpr std::string_view kCallBegin = "<｜tool▁call▁begin｜>";
  static constexpr std::string_view kCallEnd = "<｜tool▁call▁end｜>";
  static constexpr std::string_view kSep = "<｜tool▁sep｜>";

 private:
  enum class State { kText, kCalls, kAfter };
  bool parse_call(std::string_view segment, ToolCall& call);
  State state_ = State::kText;
  std::string pending_;
  std::string raw_;  // the call section so far, for finish()
  int num_calls_ = 0;
};

std::string make_tool_call_id();

}  // namespace r1::server
