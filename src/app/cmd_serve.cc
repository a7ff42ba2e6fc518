// `r1serve serve --model DIR`: the OpenAI-compatible HTTP server. Loads the
// model, tokenizer and chat template, starts the engine and the server,
// prints "r1serve listening on http://HOST:PORT" when ready, and on SIGTERM
// or SIGINT drains (in-flight requests finish up to --drain-timeout) and
// exits 0. Every flag can also come from R1SERVE_<FLAG>.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/command_registry.h"
#include "app/model_args.h"
#include "core/log.h"
#include "engine/engine.h"
#include "server/server.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace r1::app {
namespace {

struct ServeArgs {
  ModelArgs model;
  server::ServerConfig cfg;
  std::string api_key_file;
  std::vector<std::string> api_keys;
  std::string chat_template;
  std::string reasoning_parser = "auto";
  std::string tool_call_parser = "deepseek_v3";
  std::string log_format = "text";
  std::string log_level = "info";
  int64_t max_model_len = 0;
  int32_t max_num_seqs = 64;
  int32_t max_num_batched_tokens = 2048;
  int64_t block_size = 16;
  int64_t num_kv_blocks = 0;
  int64_t kv_cache_bytes = 256ll << 20;
  bool prefix_caching = true;
  int32_t max_queue_len = 1024;
  double request_timeout_s = 600;
  double drain_timeout_s = 30;
  double header_timeout_s = 10;
  double body_timeout_s = 30;
  double ready_stall_timeout_s = 10;
};

Status read_key_file(const std::string& path, std::vector<std::string>& keys) {
  std::ifstream f(path);
  if (!f) return make_error(ErrorCode::kIo, "--api-key-file {}: cannot open", path);
  std::string line;
  while (std::getline(f, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty() && line[0] != '#') keys.push_back(line);
  }
  if (keys.empty())
    return make_error(ErrorCode::kInvalidArgument, "--api-key-file {}: no keys in it", path);
  return Status();
}

int run_serve(ServeArgs& a) {
  init_logging(a.log_format == "json" ? LogFormat::kJson : LogFormat::kText, a.log_level);
  auto die = [](const std::string& m) {
    spdlog::error("r1serve serve: {}", m);
    return 1;
  };
  // Block the signals in every thread; the main thread waits for them.
  const sigset_t sigs = server::block_shutdown_signals();

  auto& cfg = a.cfg;
  cfg.api_keys = a.api_keys;
  if (!a.api_key_file.empty()) {
    Status st = read_key_file(a.api_key_file, cfg.api_keys);
    if (!st.is_ok()) return die(st.message());
  }
  auto tk = tok::Tokenizer::load(a.model.model_dir);
  if (!tk.is_ok()) return die("tokenizer: " + tk.status().message());
  std::shared_ptr<const tok::Tokenizer> tokenizer = *tk;
  std::shared_ptr<const tok::ChatTemplate> tmpl;
  {
    std::map<std::string, std::string> specials;
    std::ifstream cf(a.model.model_dir + "/tokenizer_config.json");
    if (cf) {
      auto j = nlohmann::ordered_json::parse(cf, nullptr, false);
      if (!j.is_discarded()) specials = tok::special_tokens_from_config(j);
    }
    Result<tok::ChatTemplate> t = a.chat_template.empty()
                                      ? tok::ChatTemplate::from_tokenizer_config(a.model.model_dir)
                                      : tok::ChatTemplate::from_file(a.chat_template, specials);
    if (t.is_ok()) {
      tmpl = std::make_shared<tok::ChatTemplate>(std::move(*t));
    } else if (!a.chat_template.empty()) {
      return die("--chat-template: " + t.status().message());
    } else {
      spdlog::warn("no chat template ({}); /v1/chat/completions will answer 400",
                   t.status().message());
    }
  }
  if (a.reasoning_parser == "auto") {
    cfg.reasoning_parser = tokenizer->token_to_id("</think>") >= 0;
  } else {
    cfg.reasoning_parser = a.reasoning_parser == "deepseek_r1";
  }
  cfg.tool_call_parser = a.tool_call_parser != "none";

  auto loaded = load_model(a.model);
  if (!loaded.is_ok()) return die(loaded.status().message());
  std::shared_ptr<backend::Backend> backend_keepalive(std::move(loaded->backend));
  std::shared_ptr<model::Model> model(std::move(loaded->model));
  engine::EngineConfig ec;
  ec.block_size = a.block_size;
  ec.num_kv_blocks = a.num_kv_blocks;
  ec.kv_cache_bytes = a.kv_cache_bytes;
  ec.max_num_seqs = a.max_num_seqs;
  ec.max_num_batched_tokens = a.max_num_batched_tokens;
  ec.max_model_len = a.max_model_len;
  ec.enable_prefix_caching = a.prefix_caching;
  ec.max_waiting = a.max_queue_len;
  auto eng = engine::make_engine(model, tokenizer, ec);
  if (!eng.is_ok()) return die("engine: " + eng.status().message());
  std::shared_ptr<engine::Engine> engine(std::move(*eng));

  int64_t max_len = a.max_model_len > 0 ? a.max_model_len : model->config().max_position_embeddings;
  engine::EngineStats st = engine->stats();
  if (st.kv_blocks_total > 0)
    max_len = std::min<int64_t>(max_len, st.kv_blocks_total * a.block_size);
  cfg.limits.max_model_len = max_len;
  cfg.limits.vocab_size =
      std::max<int32_t>(tokenizer->vocab_size(), static_cast<int32_t>(model->config().vocab_size));
  if (cfg.served_model_name.empty()) {
    std::string d = a.model.model_dir;
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    cfg.served_model_name = d.substr(d.find_last_of('/') + 1);
  }
  cfg.request_timeout = std::chrono::milliseconds(static_cast<int64_t>(a.request_timeout_s * 1000));
  cfg.drain_timeout = std::chrono::milliseconds(static_cast<int64_t>(a.drain_timeout_s * 1000));
  cfg.http.header_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(a.header_timeout_s * 1000));
  cfg.http.body_timeout = std::chrono::milliseconds(static_cast<int64_t>(a.body_timeout_s * 1000));
  cfg.ready_stall_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(a.ready_stall_timeout_s * 1000));

  server::Server srv(cfg, engine, tokenizer, tmpl);
  Status s = srv.start();
  if (!s.is_ok()) return die(s.message());
  std::printf("r1serve listening on http://%s:%d\n", cfg.http.host.c_str(), srv.port());
  std::fflush(stdout);
  spdlog::info("serving '{}' (max_model_len {}, reasoning parser {}, {} API key(s))",
               cfg.served_model_name, max_len, cfg.reasoning_parser ? "deepseek_r1" : "off",
               cfg.api_keys.size());

  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("signal {}: draining (up to {:.1f} s)", sig, a.drain_timeout_s);
  srv.begin_drain();
  bool clean = srv.drain();
  spdlog::info("drained ({}); stopping",
               clean ? "all requests finished" : "timeout: remaining requests ended");
  srv.stop();
  engine->shutdown();
  return 0;
}

void setup_serve(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve", "Run the OpenAI-compatible HTTP server");
  a->model.add_to(cmd);
  auto& c = a->cfg;
  auto opt = [&](const std::string& flags, auto& var, const std::string& help,
                 const std::string& group, const std::string& env) {
    return cmd->add_option(flags, var, help)
        ->capture_default_str()
        ->envname("R1SERVE_" + env)
        ->group(group);
  };
  opt("--host", c.http.host, "Address to listen on", "Server", "HOST");
  opt("--port", c.http.port, "Port (0: pick a free one and print it)", "Server", "PORT");
  opt("--served-model-name", c.served_model_name,
      "Model name in the API (default: the model folder name)", "Server", "SERVED_MODEL_NAME");
  opt("--api-key", a->api_keys, "API key clients must send as a Bearer token (repeatable)",
      "Server", "API_KEY")
      ->delimiter(',');
  opt("--api-key-file", a->api_key_file, "File with one API key per line", "Server",
      "API_KEY_FILE");
  cmd->add_flag("--metrics-public", c.metrics_public, "Serve /metrics without an API key")
      ->envname("R1SERVE_METRICS_PUBLIC")
      ->group("Server");
  opt("--io-threads", c.http.io_threads, "HTTP I/O threads", "Server", "IO_THREADS");
  opt("--chat-template", a->chat_template,
      "Jinja chat template file (default: tokenizer_config.json's)", "Templates", "CHAT_TEMPLATE");
  opt("--reasoning-parser", a->reasoning_parser,
      "deepseek_r1, none, or auto (on when the tokenizer has </think>)", "Templates",
      "REASONING_PARSER")
      ->check(CLI::IsMember({"auto", "deepseek_r1", "none"}));
  opt("--tool-call-parser", a->tool_call_parser, "deepseek_v3 or none", "Templates",
      "TOOL_CALL_PARSER")
      ->check(CLI::IsMember({"deepseek_v3", "none"}));
  opt("--max-model-len", a->max_model_len,
      "Context limit, prompt + output (0: the model's, capped by the KV cache)", "Limits",
      "MAX_MODEL_LEN");
  opt("--max-num-seqs", a->max_num_seqs, "Sequences per engine step", "Engine", "MAX_NUM_SEQS");
  opt("--max-num-batched-tokens", a->max_num_batched_tokens, "Tokens per engine step", "Engine",
      "MAX_NUM_BATCHED_TOKENS");
  opt("--block-size", a->block_size, "KV-cache block size in tokens", "Engine", "BLOCK_SIZE");
  opt("--num-kv-blocks", a->num_kv_blocks, "KV-cache blocks (0: from --kv-cache-bytes)", "Engine",
      "NUM_KV_BLOCKS");
  opt("--kv-cache-bytes", a->kv_cache_bytes, "KV-cache memory budget", "Engine", "KV_CACHE_BYTES");
  cmd->add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", a->prefix_caching,
                "Prefix caching")
      ->envname("R1SERVE_ENABLE_PREFIX_CACHING")
      ->group("Engine");
  opt("--max-concurrent-requests", c.max_concurrent_requests,
      "Generation requests held at once (running + queued); beyond: 429", "Limits",
      "MAX_CONCURRENT_REQUESTS");
  opt("--max-queue-len", a->max_queue_len, "Engine queue length; beyond: 429", "Limits",
      "MAX_QUEUE_LEN");
  opt("--max-body-bytes", c.http.max_body_bytes, "Request body limit (413 beyond)", "Limits",
      "MAX_BODY_BYTES");
  opt("--max-header-bytes", c.http.max_header_bytes, "Request line + headers limit (431 beyond)",
      "Limits", "MAX_HEADER_BYTES");
  opt("--max-connections", c.http.max_connections, "Open connections", "Limits", "MAX_CONNECTIONS");
  opt("--max-n", c.limits.max_n, "Largest n", "Limits", "MAX_N");
  opt("--max-prompt-tokens", c.limits.max_prompt_tokens,
      "Longest prompt in tokens (0: --max-model-len - 1)", "Limits", "MAX_PROMPT_TOKENS");
  opt("--max-tokens", c.limits.max_tokens,
      "Largest max_tokens, and the default when a request has none (0: what the context leaves)",
      "Limits", "MAX_TOKENS");
  opt("--request-timeout", a->request_timeout_s, "Seconds a generation request may take (0: none)",
      "Limits", "REQUEST_TIMEOUT");
  opt("--header-timeout", a->header_timeout_s,
      "Seconds to receive request headers (and keep-alive idle)", "Limits", "HEADER_TIMEOUT");
  opt("--body-timeout", a->body_timeout_s, "Seconds to receive a request body", "Limits",
      "BODY_TIMEOUT");
  opt("--drain-timeout", a->drain_timeout_s, "Seconds in-flight requests get after SIGTERM",
      "Limits", "DRAIN_TIMEOUT");
  opt("--ready-stall-timeout", a->ready_stall_timeout_s,
      "Seconds the engine may hold work without finishing a step before /ready says 503 (0: off)",
      "Limits", "READY_STALL_TIMEOUT");
  opt("--log-format", a->log_format, "text or json", "Logging", "LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}));
  opt("--log-level", a->log_level, "trace, debug, info, warn, error", "Logging", "LOG_LEVEL");
  opt("--access-log", c.access_log, "Access log: a file, or - for stdout (default: off)", "Logging",
      "ACCESS_LOG");
  cmd->add_flag("--log-prompts", c.log_prompts, "Put prompt text in the access log")
      ->envname("R1SERVE_LOG_PROMPTS")
      ->group("Logging");
  cmd->callback([a, &exit_code] { exit_code = run_serve(*a); });
}

const CommandRegistrar kRegistrar("serve", setup_serve);

}  // namespace
}  // namespace r1::app
