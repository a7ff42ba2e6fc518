// Logging: spdlog to stderr, human-readable by default or one JSON object per
// line (--log-format json). Every layer logs through these helpers.
#pragma once

#include <string_view>

#include <spdlog/spdlog.h>

namespace r1 {

enum class LogFormat { kText, kJson };

// Configures the default logger once at start-up (level: trace, debug, info,
// warn, error, off).
void init_logging(LogFormat format, std::string_view level);

}  // namespace r1
