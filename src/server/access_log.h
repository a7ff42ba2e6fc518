// AccessLog: one JSON object per line per request, to a file or stdout.
// Holds what operators need (ids, key id, status, tokens, latencies); prompt
// text only when the server was started with --log-prompts.
#pragma once

#include <cstdio>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace r1::server {

class AccessLog {
 public:
  AccessLog() = default;
  ~AccessLog();
  // "" : off; "-": stdout; else a file opened for appending.
  Status open(const std::string& path);
  bool enabled() const { return f_ != nullptr; }
  void write(const nlohmann::ordered_json& entry);
  // The fields every line starts with: ts (seconds since the epoch, to the
  // millisecond), request_id, method, path, status, key_id, remote.
  static nlohmann::ordered_json entry(const std::string& request_id, const std::string& method,
                                      const std::string& path, int status,
                                      const std::string& key_id, const std::string& remote);

 private:
  std::mutex mu_;
  FILE* f_ = nullptr;
  bool owned_ = false;
};

}  // namespace r1::server
