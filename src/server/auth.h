// API-key checks: constant-time comparison, key ids for logs (never the key),
// and the public-route allowlist. Deny by default: a route needs a key unless
// it is on the allowlist.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace r1::server {

// Time depends only on b's length (the secret's length), not on where a and b differ.
bool constant_time_equal(std::string_view a, std::string_view b);

class ApiKeys {
 public:
  ApiKeys() = default;
  explicit ApiKeys(std::vector<std::string> keys) : keys_(std::move(keys)) {}
  bool enabled() const { return !keys_.empty(); }
  // Checks an Authorization header value ("Bearer KEY"); returns the index of
  // the matching key. Every key is compared, so time does not tell which.
  std::optional<int> check(std::string_view authorization) const;
  size_t size() const { return keys_.size(); }

 private:
  std::vector<std::string> keys_;
};

// "key-N" for logs.
std::string key_id(int index);

// Paths reachable without a key.
bool is_public_path(std::string_view path, bool metrics_public);

}  // namespace r1::server
