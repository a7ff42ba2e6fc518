// Server: the OpenAI-compatible HTTP front of one engine. Owns the transport,
// the route table dispatch, API-key checks, admission limits (429/503),
// metrics, the access log and graceful drain. Generation requests themselves
// are GenerationJobs (generation.h).
#pragma once

#include <signal.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"
#include "server/access_log.h"
#include "server/auth.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/request_parser.h"

namespace r1::tok {
class Tokenizer;
class ChatTemplate;
}  // namespace r1::tok

namespace r1::server {

struct ServerConfig {
  HttpServerOptions http;
  std::string served_model_name;  // "" -> the model folder name
  std::string model_root;         // shown in /v1/models
  std::vector<std::string> api_keys;
  bool metrics_public = false;
  RequestLimits limits;
  int max_concurrent_requests = 512;                  // generation requests held at once
  std::chrono::milliseconds request_timeout{600000};  // 0: none
  std::chrono::milliseconds drain_timeout{30000};
  std::chrono::milliseconds sse_keepalive{15000};
  // /ready turns 503 when the engine has work but has not finished a step
  // for this long (a stalled scheduler or a hung forward). 0: never.
  std::chrono::milliseconds ready_stall_timeout{10000};
  int retry_after_seconds = 1;
  bool reasoning_parser = false;  // deepseek_r1
  bool tool_call_parser = true;   // deepseek_v3
  std::string access_log;         // "", "-" or a path
  bool log_prompts = false;
  std::string version = "0.1.0";
};

class GenerationJob;

// What a GenerationJob needs from the server.
struct ServerContext {
  ServerConfig config;
  std::shared_ptr<engine::Engine> engine;
  std::shared_ptr<const tok::Tokenizer> tokenizer;
  std::shared_ptr<const tok::ChatTemplate> chat_template;
  Metrics metrics;
  AccessLog access_log;
  int64_t created = 0;  // unix seconds at start
  std::atomic<bool> draining{false};
  std::atomic<int64_t> active_jobs{0};
  std::atomic<uint64_t> next_id{1};

  std::mutex jobs_mu;
  std::unordered_map<GenerationJob*, std::weak_ptr<GenerationJob>> jobs;
  void add_job(const std::shared_ptr<GenerationJob>& j);
  void remove_job(GenerationJob* j);
  std::vector<std::shared_ptr<GenerationJob>> live_jobs();
};

class Server {
 public:
  Server(ServerConfig config, std::shared_ptr<engine::Engine> engine,
         std::shared_ptr<const tok::Tokenizer> tokenizer,
         std::shared_ptr<const tok::ChatTemplate> chat_template);
  ~Server();
  Status start();
  int port() const;
  // SIGTERM: /ready turns 503, new requests get 503.
  void begin_drain();
  // Waits for in-flight requests up to the drain timeout; then ends the
  // rest with an error. Returns true when all finished on their own.
  bool drain();
  void stop();
  ServerContext& context() { return *ctx_; }

 private:
  void handle(std::shared_ptr<HttpRequest> req, std::shared_ptr<HttpExchange> ex);
  void sweep();

  std::shared_ptr<ServerContext> ctx_;
  std::unique_ptr<HttpServer> http_;
  ApiKeys keys_;
  std::atomic<bool> stopping_{false};
};

// Why the server cannot take traffic ("" when it can): draining, the engine
// thread is dead, or the engine has work and has not stepped for
// `stall_timeout`.
std::string not_ready_reason(const engine::EngineStats* st, bool draining,
                             std::chrono::milliseconds stall_timeout,
                             std::chrono::steady_clock::time_point now);

// A request id: the client's X-Request-Id when it is sane, else a new one.
std::string request_id_for(const HttpRequest& req, std::atomic<uint64_t>& counter);

// Blocks SIGTERM and SIGINT in the calling thread (threads started later inherit
// it) and ignores SIGPIPE; returns the blocked set, for sigwait in the thread
// that drains the server.
sigset_t block_shutdown_signals();

}  // namespace r1::server
