// Strict JSON parsing for untrusted files (safetensors headers, index files,
// config.json): well-formed UTF-8 JSON, no duplicate keys in any object (which
// nlohmann would silently collapse) and a bounded nesting depth.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace r1::io {

inline constexpr int kMaxJsonDepth = 32;

// `source` names the file (and region) in error messages.
Result<nlohmann::json> parse_json_strict(std::string_view text, const std::string& source);

// "string", "number", "object", ... for error messages.
const char* json_kind(const nlohmann::json& j);

}  // namespace r1::io
