// ApiError: the one OpenAI-shaped error every failing request turns into
// ({"error": {"message", "type", "param", "code"}}), and the single place
// where engine/status errors are mapped to HTTP status codes.
#pragma once

#include <string>

#include "core/status.h"

namespace r1::server {

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" -> null
  std::string code;   // "" -> null

  std::string to_json() const;
};

ApiError bad_param(const std::string& param, const std::string& message);
ApiError not_found(const std::string& message, const std::string& code = "not_found");
ApiError unauthorized();
ApiError too_many_requests(const std::string& message);
ApiError unavailable(const std::string& message);
ApiError internal_error(const std::string& message);
// Maps an engine/status error to its HTTP status (the only such mapping).
ApiError from_status(const Status& status, const std::string& param = "");

}  // namespace r1::server
