// Hand-written matchers for the pre-tokenizer regexes of the tokenizers we
// serve (DeepSeek-V3's three Splits, Llama-3's and Qwen2/3's patterns). They
// find exactly the matches PCRE2 finds for those patterns (tests check them
// against it) at several times the speed; other patterns use PCRE2.
#pragma once

#include <string_view>
#include <vector>

#include "tokenizer/pre_tokenizer.h"

namespace r1::tok {

// Appends the non-empty matches in `text`, offset by `base`.
using FastFindAll = void (*)(std::string_view text, uint32_t base, std::vector<Span>& out);

// The matcher for `pattern`, or nullptr when it is not one we know.
FastFindAll fast_matcher_for(std::string_view pattern);

}  // namespace r1::tok
