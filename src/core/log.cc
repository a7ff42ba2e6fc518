// Logger set-up: stderr sink, text or JSON-lines pattern.
#include "core/log.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace r1 {

void init_logging(LogFormat format, std::string_view level) {
  auto logger = spdlog::stderr_logger_mt("r1serve");
  if (format == LogFormat::kJson) {
    // The message is escaped by whoever builds structured lines; plain
    // messages are written as a JSON string field.
    logger->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","msg":"%v"})");
  } else {
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  }
  logger->set_level(spdlog::level::from_str(std::string(level)));
  spdlog::set_default_logger(logger);
}

}  // namespace r1
