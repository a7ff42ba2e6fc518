// The route table (see routes.h).
#include "server/routes.h"

namespace r1::server {

const std::vector<RouteSpec>& route_table() {
  static const std::vector<RouteSpec> kRoutes = {
      {RouteId::kChatCompletions, "POST", "/v1/chat/completions", Access::kKey},
      {RouteId::kCompletions, "POST", "/v1/completions", Access::kKey},
      {RouteId::kModels, "GET", "/v1/models", Access::kKey},
      {RouteId::kModel, "GET", "/v1/models/*", Access::kKey},
      {RouteId::kTokenize, "POST", "/tokenize", Access::kKey},
      {RouteId::kDetokenize, "POST", "/detokenize", Access::kKey},
      {RouteId::kHealth, "GET", "/health", Access::kPublic},
      {RouteId::kLive, "GET", "/live", Access::kPublic},
      {RouteId::kReady, "GET", "/ready", Access::kPublic},
      {RouteId::kMetrics, "GET", "/metrics", Access::kMetrics},
      {RouteId::kVersion, "GET", "/version", Access::kKey},
  };
  return kRoutes;
}

const RouteSpec* find_route(std::string_view path) {
  for (const auto& r : route_table()) {
    std::string_view p = r.path;
    if (!p.empty() && p.back() == '*') {
      p.remove_suffix(1);
      if (path.size() > p.size() && path.substr(0, p.size()) == p) return &r;
    } else if (path == p) {
      return &r;
    }
  }
  return nullptr;
}

bool route_needs_key(const RouteSpec& r, bool metrics_public) {
  if (r.access == Access::kPublic) return false;
  if (r.access == Access::kMetrics) return !metrics_public;
  return true;
}

}  // namespace r1::server
