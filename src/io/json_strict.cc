// parse_json_strict: nlohmann's DOM parser with a callback that rejects
// duplicate keys and deep nesting while the document is built.
#include "io/json_strict.h"

#include <unordered_set>
#include <vector>

namespace r1::io {

namespace {
struct ObjectState {
  std::unordered_set<std::string> keys;
  std::string last_key;
};
}  // namespace

const char* json_kind(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::object:
      return "object";
    case nlohmann::json::value_t::array:
      return "array";
    case nlohmann::json::value_t::string:
      return "string";
    case nlohmann::json::value_t::boolean:
      return "boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return "integer";
    case nlohmann::json::value_t::number_float:
      return "number";
    case nlohmann::json::value_t::binary:
      return "binary";
    case nlohmann::json::value_t::discarded:
      return "discarded";
  }
  return "unknown";
}

Result<nlohmann::json> parse_json_strict(std::string_view text, const std::string& source) {
  using json = nlohmann::json;
  // nlohmann stops at a NUL byte as if the input ended there; raw NULs are
  // never valid JSON, so refuse them rather than ignore what follows.
  if (size_t nul = text.find('\0'); nul != std::string_view::npos)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: malformed JSON: NUL byte at offset {} of {}", source, nul, text.size());
  std::vector<ObjectState> stack;
  std::string duplicate;  // "key" (in "parent")
  bool too_deep = false;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    if (too_deep || !duplicate.empty()) return false;  // already failed; build nothing more
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth) {
          too_deep = true;
          return false;
        }
        if (event == json::parse_event_t::object_start) stack.emplace_back();
        break;
      case json::parse_event_t::key: {
        if (stack.empty()) break;
        const std::string& k = parsed.get_ref<const std::string&>();
        if (!stack.back().keys.insert(k).second) {
          duplicate = "'" + k + "'";
          if (stack.size() >= 2)
            duplicate += " in object '" + stack[stack.size() - 2].last_key + "'";
          return false;
        }
        stack.back().last_key = k;
        break;
      }
      case json::parse_event_t::object_end:
        if (!stack.empty()) stack.pop_back();
        break;
      default:
        break;
    }
    return true;
  };
  json result;
  try {
    result = json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                         /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    if (too_deep || !duplicate.empty()) {
      // fallthrough to the clearer messages below
    } else {
      return make_error(ErrorCode::kInvalidArgument, "{}: malformed JSON: {}", source, e.what());
    }
  }
  if (too_deep)
    return make_error(ErrorCode::kInvalidArgument, "{}: JSON nested deeper than {} levels", source,
                      kMaxJsonDepth);
  if (!duplicate.empty())
    return make_error(ErrorCode::kInvalidArgument, "{}: duplicate key {}", source, duplicate);
  if (result.is_discarded())
    return make_error(ErrorCode::kInvalidArgument, "{}: malformed JSON", source);
  return result;
}

}  // namespace r1::io
