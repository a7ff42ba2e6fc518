// API-key checks (see auth.h).
#include "server/auth.h"

#include <cctype>

namespace r1::server {

bool constant_time_equal(std::string_view a, std::string_view b) {
  volatile unsigned char diff = a.size() != b.size() ? 1 : 0;
  const size_t n = b.size();
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = a.empty() ? 0 : static_cast<unsigned char>(a[i < a.size() ? i : 0]);
    diff = diff | (x ^ static_cast<unsigned char>(b[i]));
  }
  return diff == 0;
}

std::optional<int> ApiKeys::check(std::string_view h) const {
  // Scheme is case-insensitive ("Bearer"), then one or more spaces.
  if (h.size() < 7) return std::nullopt;
  static constexpr std::string_view kScheme = "bearer";
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(h[i])) != kScheme[i]) return std::nullopt;
  }
  if (h[6] != ' ') return std::nullopt;
  std::string_view token = h.substr(7);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  if (token.empty()) return std::nullopt;
  std::optional<int> found;
  for (size_t i = 0; i < keys_.size(); ++i) {
    bool eq = constant_time_equal(token, keys_[i]);
    if (eq && !found) found = static_cast<int>(i);
  }
  return found;
}

std::string key_id(int index) {
  return index < 0 ? "-" : "key-" + std::to_string(index);
}

bool is_public_path(std::string_view path, bool metrics_public) {
  if (path == "/health" || path == "/ready" || path == "/live") return true;
  return metrics_public && path == "/metrics";
}

}  // namespace r1::server
