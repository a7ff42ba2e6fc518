// ApiError serialization and the Status -> HTTP mapping.
#include "server/api_error.h"

#include <nlohmann/json.hpp>

namespace r1::server {

std::string ApiError::to_json() const {
  nlohmann::ordered_json e;
  e["message"] = message;
  e["type"] = type;
  e["param"] = param.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(param);
  e["code"] = code.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(code);
  nlohmann::ordered_json j;
  j["error"] = std::move(e);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

ApiError bad_param(const std::string& param, const std::string& message) {
  return ApiError{400, message, "invalid_request_error", param,
                  param.empty() ? "" : "invalid_value"};
}
ApiError not_found(const std::string& message, const std::string& code) {
  return ApiError{404, message, "invalid_request_error", "", code};
}
ApiError unauthorized() {
  return ApiError{401, "Incorrect or missing API key. Send it as 'Authorization: Bearer KEY'.",
                  "authentication_error", "", "invalid_api_key"};
}
ApiError too_many_requests(const std::string& message) {
  return ApiError{429, message, "rate_limit_error", "", "rate_limit_exceeded"};
}
ApiError unavailable(const std::string& message) {
  return ApiError{503, message, "service_unavailable", "", "service_unavailable"};
}
ApiError internal_error(const std::string& message) {
  return ApiError{500, message, "server_error", "", "internal_error"};
}

ApiError from_status(const Status& s, const std::string& param) {
  switch (s.code()) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kOutOfRange:
    case ErrorCode::kUnsupported:
      return bad_param(param, s.message());
    case ErrorCode::kNotFound:
      return not_found(s.message());
    case ErrorCode::kResourceExhausted:
      return too_many_requests(s.message());
    case ErrorCode::kUnavailable:
    case ErrorCode::kCancelled:
      return unavailable(s.message());
    default:
      return internal_error(s.message());
  }
}

}  // namespace r1::server
