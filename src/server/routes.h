// The route table: every path the server answers, its method and who may
// call it. Auth is deny-by-default: only kPublic routes (and kMetrics ones
// when --metrics-public) skip the API-key check. Tests iterate this table.
#pragma once

#include <string_view>
#include <vector>

namespace r1::server {

enum class RouteId {
  kChatCompletions,
  kCompletions,
  kModels,
  kModel,  // /v1/models/{id}
  kTokenize,
  kDetokenize,
  kHealth,
  kLive,
  kReady,
  kMetrics,
  kVersion,
};

enum class Access { kPublic, kMetrics, kKey };

struct RouteSpec {
  RouteId id;
  const char* method;
  const char* path;  // a trailing '*' matches any suffix
  Access access;
};

const std::vector<RouteSpec>& route_table();
// The route for a path (ignoring the method); null when none.
const RouteSpec* find_route(std::string_view path);
bool route_needs_key(const RouteSpec& r, bool metrics_public);

}  // namespace r1::server
