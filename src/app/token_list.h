// Parsing "5,17,300" token lists from the command line, strictly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace r1::app {

// Comma-separated non-negative integers below `vocab_size`; whitespace around
// items is allowed. Errors name the offending item and its position.
Result<std::vector<int32_t>> parse_token_list(const std::string& text, int64_t vocab_size);

}  // namespace r1::app
