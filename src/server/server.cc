// Server: dispatch over the route table, auth, the small routes (models,
// tokenize, health, metrics...), the periodic sweep and drain (see server.h).
#include "server/server.h"

#include <pthread.h>

#include <ctime>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "server/generation.h"
#include "server/routes.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace r1::server {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

void ServerContext::add_job(const std::shared_ptr<GenerationJob>& j) {
  std::lock_guard<std::mutex> lock(jobs_mu);
  jobs[j.get()] = j;
}
void ServerContext::remove_job(GenerationJob* j) {
  std::lock_guard<std::mutex> lock(jobs_mu);
  jobs.erase(j);
}
std::vector<std::shared_ptr<GenerationJob>> ServerContext::live_jobs() {
  std::vector<std::shared_ptr<GenerationJob>> out;
  std::lock_guard<std::mutex> lock(jobs_mu);
  for (auto& [k, w] : jobs) {
    if (auto s = w.lock()) out.push_back(std::move(s));
  }
  return out;
}

std::string request_id_for(const HttpRequest& req, std::atomic<uint64_t>& counter) {
  std::string_view h = req.header("x-request-id");
  bool ok = !h.empty() && h.size() <= 128;
  for (char c : h) {
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
                c == ':');
  }
  if (ok) return std::string(h);
  static const uint64_t boot = static_cast<uint64_t>(std::time(nullptr));
  return fmt::format("req-{:x}{:06x}", boot & 0xffffffff, counter.fetch_add(1) & 0xffffff);
}

std::string not_ready_reason(const engine::EngineStats* st, bool draining,
                             std::chrono::milliseconds stall_timeout, Clock::time_point now) {
  if (draining) return "draining";
  if (!st) return "no engine";
  if (!st->alive) return "the engine is not running";
  if (stall_timeout.count() > 0 && st->running + st->waiting > 0 &&
      now - st->last_step > stall_timeout) {
    return fmt::format("the engine has not completed a step for {:.1f} s",
                       std::chrono::duration<double>(now - st->last_step).count());
  }
  return "";
}

namespace {

HttpResponse json_response(int status, const Json& j, const std::string& rid) {
  HttpResponse r;
  r.status = status;
  r.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  r.headers.emplace_back("X-Request-Id", rid);
  return r;
}

HttpResponse error_response(const ApiError& e, const std::string& rid, int retry_after = 0) {
  HttpResponse r;
  r.status = e.status;
  r.body = e.to_json();
  r.headers.emplace_back("X-Request-Id", rid);
  if (retry_after > 0) r.headers.emplace_back("Retry-After", std::to_string(retry_after));
  return r;
}

}  // namespace

Server::Server(ServerConfig config, std::shared_ptr<engine::Engine> engine,
               std::shared_ptr<const tok::Tokenizer> tokenizer,
               std::shared_ptr<const tok::ChatTemplate> chat_template)
    : ctx_(std::make_shared<ServerContext>()), keys_(config.api_keys) {
  ctx_->config = std::move(config);
  ctx_->engine = std::move(engine);
  ctx_->tokenizer = std::move(tokenizer);
  ctx_->chat_template = std::move(chat_template);
  ctx_->created = static_cast<int64_t>(std::time(nullptr));
  auto ctx = ctx_;
  http_ = std::make_unique<HttpServer>(
      ctx_->config.http,
      [this](std::shared_ptr<HttpRequest> r, std::shared_ptr<HttpExchange> e) { handle(r, e); },
      [ctx](int status) { ctx->metrics.on_http_response(status); });
}

Server::~Server() {
  stop();
}

Status Server::start() {
  R1_RETURN_IF_ERROR(ctx_->access_log.open(ctx_->config.access_log));
  R1_RETURN_IF_ERROR(http_->listen());
  http_->start();
  http_->schedule(std::chrono::milliseconds(500), [this] { sweep(); });
  return Status();
}

int Server::port() const {
  return http_->port();
}

void Server::sweep() {
  if (stopping_.load()) return;
  auto now = Clock::now();
  for (auto& job : ctx_->live_jobs()) {
    std::weak_ptr<GenerationJob> w = job;
    job->exchange().post([w, now] {
      if (auto j = w.lock()) j->tick(now);
    });
  }
  http_->schedule(std::chrono::milliseconds(500), [this] { sweep(); });
}

void Server::begin_drain() {
  ctx_->draining = true;
}

bool Server::drain() {
  begin_drain();
  auto until = Clock::now() + ctx_->config.drain_timeout;
  while (ctx_->active_jobs.load() > 0 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  bool clean = ctx_->active_jobs.load() == 0;
  if (!clean) {
    ApiError e = unavailable("the server shut down before the request finished (drain timeout)");
    for (auto& job : ctx_->live_jobs()) {
      std::weak_ptr<GenerationJob> w = job;
      job->exchange().post([w, e] {
        if (auto j = w.lock()) j->abort(e, false);
      });
    }
    auto hard = Clock::now() + std::chrono::seconds(1);
    while (ctx_->active_jobs.load() > 0 && Clock::now() < hard) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  http_->stop_accepting();
  // Let the last bytes reach the clients.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return clean;
}

void Server::stop() {
  if (stopping_.exchange(true)) return;
  http_->stop();
}

void Server::handle(std::shared_ptr<HttpRequest> req, std::shared_ptr<HttpExchange> ex) {
  std::string rid = request_id_for(*req, ctx_->next_id);
  const RouteSpec* route = find_route(req->path);
  int key_index = -1;
  auto finish_small = [&](HttpResponse r) {
    if (ctx_->access_log.enabled()) {
      Json e =
          AccessLog::entry(rid, req->method, req->path, r.status, key_id(key_index), req->remote);
      e["e2e_ms"] = std::chrono::duration<double>(Clock::now() - req->arrival).count() * 1e3;
      ctx_->access_log.write(e);
    }
    if (ctx_->draining.load()) r.close = true;
    ex->respond(std::move(r));
  };
  if (!route) {
    return finish_small(
        error_response(not_found(fmt::format("no route for {} {}", req->method, req->path)), rid));
  }
  if (req->method != route->method &&
      !(req->method == "HEAD" && std::string_view(route->method) == "GET")) {
    HttpResponse r =
        error_response(ApiError{405, fmt::format("{} is not allowed on {}", req->method, req->path),
                                "invalid_request_error", "", "method_not_allowed"},
                       rid);
    r.headers.emplace_back("Allow", route->method);
    return finish_small(std::move(r));
  }
  if (keys_.enabled() && route_needs_key(*route, ctx_->config.metrics_public)) {
    auto k = keys_.check(req->header("authorization"));
    if (!k) return finish_small(error_response(unauthorized(), rid));
    key_index = *k;
  }
  const bool draining = ctx_->draining.load();
  auto& cfg = ctx_->config;
  switch (route->id) {
    case RouteId::kHealth:
    case RouteId::kLive:
      return finish_small(json_response(200, Json::object(), rid));
    case RouteId::kReady: {
      engine::EngineStats st;
      if (ctx_->engine) st = ctx_->engine->stats();
      std::string why = not_ready_reason(ctx_->engine ? &st : nullptr, draining,
                                         cfg.ready_stall_timeout, Clock::now());
      if (!why.empty()) return finish_small(error_response(unavailable(why), rid));
      return finish_small(json_response(200, Json{{"status", "ready"}}, rid));
    }
    case RouteId::kMetrics: {
      engine::EngineStats st;
      bool have = false;
      if (ctx_->engine) {
        st = ctx_->engine->stats();
        have = true;
      }
      HttpResponse r;
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      bool ready =
          not_ready_reason(have ? &st : nullptr, draining, cfg.ready_stall_timeout, Clock::now())
              .empty();
      r.body = ctx_->metrics.render(have ? &st : nullptr, ready, draining);
      return finish_small(std::move(r));
    }
    case RouteId::kVersion:
      return finish_small(json_response(200, Json{{"version", cfg.version}}, rid));
    case RouteId::kModels:
    case RouteId::kModel: {
      Json m;
      m["id"] = cfg.served_model_name;
      m["object"] = "model";
      m["created"] = ctx_->created;
      m["owned_by"] = "r1serve";
      m["root"] = cfg.served_model_name;
      m["max_model_len"] = cfg.limits.max_model_len;
      if (route->id == RouteId::kModel) {
        std::string id = req->path.substr(std::string_view("/v1/models/").size());
        if (id != cfg.served_model_name) {
          return finish_small(
              error_response(ApiError{404, fmt::format("The model `{}` does not exist.", id),
                                      "invalid_request_error", "model", "model_not_found"},
                             rid));
        }
        return finish_small(json_response(200, m, rid));
      }
      return finish_small(
          json_response(200, Json{{"object", "list"}, {"data", Json::array({m})}}, rid));
    }
    case RouteId::kTokenize:
    case RouteId::kDetokenize: {
      Json body = Json::parse(req->body, nullptr, false);
      if (body.is_discarded() || !body.is_object()) {
        return finish_small(error_response(ApiError{400, "the request body is not a JSON object",
                                                    "invalid_request_error", "", "invalid_json"},
                                           rid));
      }
      const auto& tk = ctx_->tokenizer;
      if (route->id == RouteId::kDetokenize) {
        auto t = body.find("tokens");
        if (t == body.end() || !t->is_array()) {
          return finish_small(
              error_response(bad_param("tokens", "'tokens' must be an array of token ids"), rid));
        }
        std::vector<int32_t> ids;
        for (const auto& v : *t) {
          if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
              v.get<int64_t>() >= tk->vocab_size()) {
            return finish_small(error_response(
                bad_param("tokens",
                          fmt::format("token ids must be integers in [0, {})", tk->vocab_size())),
                rid));
          }
          ids.push_back(v.get<int32_t>());
        }
        return finish_small(json_response(200, Json{{"prompt", tk->decode(ids, false)}}, rid));
      }
      std::vector<int32_t> ids;
      auto addsp = body.find("add_special_tokens");
      if (addsp != body.end() && !addsp->is_boolean()) {
        return finish_small(
            error_response(bad_param("add_special_tokens", "must be a boolean"), rid));
      }
      if (body.contains("messages")) {
        ParsedRequest pr;
        auto err = parse_request(req->body, Endpoint::kChat, cfg.limits, pr);
        if (err) return finish_small(error_response(*err, rid));
        if (!ctx_->chat_template) {
          return finish_small(
              error_response(bad_param("messages", "this model has no chat template"), rid));
        }
        auto text = ctx_->chat_template->render(pr.messages, pr.add_generation_prompt, pr.tools,
                                                pr.template_kwargs);
        if (!text.is_ok())
          return finish_small(error_response(bad_param("messages", text.status().message()), rid));
        ids = tk->encode(*text, addsp != body.end() && addsp->get<bool>());
      } else {
        auto p = body.find("prompt");
        if (p == body.end() || !p->is_string()) {
          return finish_small(
              error_response(bad_param("prompt", "'prompt' must be a string"), rid));
        }
        ids = tk->encode(p->get<std::string>(), addsp == body.end() || addsp->get<bool>());
      }
      Json r;
      r["count"] = ids.size();
      r["max_model_len"] = cfg.limits.max_model_len;
      r["tokens"] = ids;
      return finish_small(json_response(200, r, rid));
    }
    case RouteId::kChatCompletions:
    case RouteId::kCompletions: {
      if (draining) {
        return finish_small(error_response(unavailable("the server is shutting down"), rid,
                                           cfg.retry_after_seconds));
      }
      auto job = std::make_shared<GenerationJob>(
          ctx_, req, ex, rid, key_index,
          route->id == RouteId::kChatCompletions ? Endpoint::kChat : Endpoint::kCompletion);
      job->start();
      return;
    }
  }
}

sigset_t block_shutdown_signals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return sigs;
}

}  // namespace r1::server
