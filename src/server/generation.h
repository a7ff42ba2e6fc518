// GenerationJob: one /v1/chat/completions or /v1/completions request from
// parsed body to the last byte: renders and tokenizes the prompt, submits it
// to the engine (one engine request per prompt, n samples each), turns engine
// events into OpenAI responses or SSE chunks (reasoning and tool calls split
// out), cancels on client disconnect, and records metrics and the access log.
// All of its methods run on the connection's strand.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/reasoning_parser.h"
#include "server/request_parser.h"
#include "server/server.h"
#include "server/tool_call_parser.h"

namespace r1::server {

class GenerationJob : public std::enable_shared_from_this<GenerationJob> {
 public:
  GenerationJob(std::shared_ptr<ServerContext> ctx, std::shared_ptr<HttpRequest> req,
                std::shared_ptr<HttpExchange> ex, std::string request_id, int key_index,
                Endpoint endpoint);
  ~GenerationJob();

  void start();
  // Ends the request now (drain timeout, server-side deadline): cancels it in
  // the engine and sends an error (an error event and [DONE] for streams).
  void abort(const ApiError& why, bool timeout);
  // Periodic: SSE keep-alive comments and the server-side deadline.
  void tick(std::chrono::steady_clock::time_point now);
  HttpExchange& exchange() { return *ex_; }

 private:
  struct Choice {
    int index = 0;
    ReasoningParser reasoning{false};
    ToolCallParser tools;
    std::string text, reasoning_text;
    std::vector<ToolCall> calls;
    std::vector<engine::TokenLogprob> logprobs;
    int64_t tokens = 0;
    engine::FinishReason finish = engine::FinishReason::kNone;
    std::string stop_reason;
    bool role_sent = false;
    std::chrono::steady_clock::time_point last_token{};
  };
  struct Sub {
    std::string engine_id;
    std::vector<int32_t> prompt;
    bool done = false;
    engine::Usage usage;
    bool has_usage = false;
  };

  void on_event(const engine::EngineEvent& ev);
  void on_disconnect();
  void complete();
  void finalize(int status, const char* finish_label);
  void reply_error(const ApiError& e);
  void emit(Choice& c, std::string reasoning, std::string content, std::vector<ToolCall> calls,
            const std::vector<engine::TokenLogprob>& lps, const char* finish);
  void write_sse(const nlohmann::ordered_json& j);
  nlohmann::ordered_json chunk_base() const;
  nlohmann::ordered_json usage_json() const;
  nlohmann::ordered_json chat_logprobs(const std::vector<engine::TokenLogprob>& lps) const;
  nlohmann::ordered_json completion_logprobs(const std::vector<engine::TokenLogprob>& lps,
                                             size_t offset0) const;
  std::string token_text(int32_t id) const;
  std::string clean_content(std::string s) const;
  const char* finish_name(const Choice& c) const;

  std::shared_ptr<ServerContext> ctx_;
  std::shared_ptr<HttpRequest> req_;
  std::shared_ptr<HttpExchange> ex_;
  std::string request_id_;
  std::string response_id_;
  int key_index_;
  Endpoint endpoint_;
  ParsedRequest p_;
  std::vector<Sub> subs_;
  std::vector<Choice> choices_;
  bool started_stream_ = false;
  bool finished_ = false;
  bool admitted_ = false;
  bool got_first_event_ = false;
  bool got_first_token_ = false;
  bool skip_special_override_ = false;
  std::string eos_text_;
  std::string prompt_text_;  // for the access log with --log-prompts
  std::chrono::steady_clock::time_point first_token_at_{}, first_event_at_{}, last_write_{};
  std::optional<std::chrono::steady_clock::time_point> deadline_;
};

}  // namespace r1::server
