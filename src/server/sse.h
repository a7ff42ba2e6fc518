// Server-sent events framing: `data: JSON\n\n` per event, `data: [DONE]\n\n`
// at the end, `: comment\n\n` keep-alives; and a small parser (for tests and
// the benchmark client) that splits a byte stream back into data payloads.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace r1::server {

std::string sse_data(std::string_view payload);  // payload must not contain '\n'
inline std::string sse_done() {
  return "data: [DONE]\n\n";
}
inline std::string sse_comment(std::string_view c) {
  return ": " + std::string(c) + "\n\n";
}

class SseParser {
 public:
  // Feeds bytes; returns the data payloads of the events completed by them.
  std::vector<std::string> push(std::string_view bytes);

 private:
  std::string buf_;
  std::string data_;
  bool has_data_ = false;
};

}  // namespace r1::server
