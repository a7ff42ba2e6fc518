// Access log lines (see access_log.h).
#include "server/access_log.h"

#include <chrono>

namespace r1::server {

AccessLog::~AccessLog() {
  if (f_ && owned_) std::fclose(f_);
}

Status AccessLog::open(const std::string& path) {
  if (path.empty()) return Status();
  if (path == "-") {
    f_ = stdout;
    return Status();
  }
  f_ = std::fopen(path.c_str(), "a");
  if (!f_) return make_error(ErrorCode::kIo, "--access-log {}: cannot open for appending", path);
  owned_ = true;
  return Status();
}

nlohmann::ordered_json AccessLog::entry(const std::string& request_id, const std::string& method,
                                        const std::string& path, int status,
                                        const std::string& key_id, const std::string& remote) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  nlohmann::ordered_json e;
  e["ts"] = static_cast<double>(ms) / 1000.0;
  e["request_id"] = request_id;
  e["method"] = method;
  e["path"] = path;
  e["status"] = status;
  e["key_id"] = key_id;
  e["remote"] = remote;
  return e;
}

void AccessLog::write(const nlohmann::ordered_json& entry) {
  if (!f_) return;
  std::string line = entry.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '\n';
  std::lock_guard<std::mutex> lock(mu_);
  std::fwrite(line.data(), 1, line.size(), f_);
  std::fflush(f_);
}

}  // namespace r1::server
