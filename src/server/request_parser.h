// OpenAI request bodies -> validated ParsedRequest. Every field is checked for
// type and range at the edge; the first problem becomes a 400 ApiError naming
// the parameter. Unknown fields are ignored. Limits are documented in
// docs/server.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "server/api_error.h"

namespace r1::server {

struct RequestLimits {
  int32_t max_n = 16;
  int32_t max_top_logprobs = 20;
  int32_t max_stop = 4;
  int32_t max_stop_bytes = 256;
  int32_t max_logit_bias = 300;
  int32_t max_tools = 128;
  int32_t max_messages = 4096;
  int32_t max_prompts = 64;  // completions: prompts per request
  int64_t max_model_len = 4096;
  int64_t max_prompt_tokens = 0;  // per prompt (0: max_model_len - 1)
  int64_t max_tokens = 0;         // cap on max_tokens, and the default (0: what the context leaves)
  int32_t vocab_size = 0;         // token ids must be below it (0: unchecked)
};

enum class Endpoint { kChat, kCompletion };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kChat;
  std::string model;  // "" when absent
  bool stream = false;
  bool include_usage = false;
  engine::SamplingParams params;
  std::optional<int32_t> max_tokens;  // none: fill the context
  // chat
  bool logprobs = false;  // chat: logprobs flag; completions: params.logprobs >= 0
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();  // cleaned for the template
  nlohmann::ordered_json tools = nullptr;
  std::string tool_choice = "auto";  // auto | none | required | function
  std::string tool_choice_name;      // when tool_choice == "function"
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();
  bool add_generation_prompt = true;
  bool include_reasoning = true;
  // completions
  std::vector<std::string> prompt_texts;
  std::vector<std::vector<int32_t>> prompt_ids;
  bool echo = false;
  std::string user;
};

// Parses and validates a body. On failure returns the error (status 400, or
// 404 for an unknown model when `served_model` is set).
std::optional<ApiError> parse_request(std::string_view body, Endpoint endpoint,
                                      const RequestLimits& limits, ParsedRequest& out);

}  // namespace r1::server
