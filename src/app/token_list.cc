// parse_token_list.
#include "app/token_list.h"

#include <cctype>

namespace r1::app {

Result<std::vector<int32_t>> parse_token_list(const std::string& text, int64_t vocab_size) {
  std::vector<int32_t> out;
  size_t i = 0, item = 0;
  while (true) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t start = i;
    int64_t v = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      v = v * 10 + (text[i] - '0');
      if (v >= vocab_size)
        return make_error(ErrorCode::kInvalidArgument,
                          "--tokens item {} is not a token id below the vocabulary size {}",
                          item + 1, vocab_size);
      ++i;
    }
    if (i == start)
      return make_error(ErrorCode::kInvalidArgument,
                        "--tokens item {} ('{}') is not a non-negative integer", item + 1,
                        text.substr(start, text.find(',', start) - start));
    out.push_back(static_cast<int32_t>(v));
    ++item;
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i == text.size()) break;
    if (text[i] != ',')
      return make_error(ErrorCode::kInvalidArgument, "--tokens: unexpected '{}' after item {}",
                        text[i], item);
    ++i;
  }
  return out;
}

}  // namespace r1::app
