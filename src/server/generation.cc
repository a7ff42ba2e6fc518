// GenerationJob (see generation.h).
#include "server/generation.h"

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "server/sse.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace r1::server {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

namespace {

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::string hex_id(uint64_t a) {
  static thread_local uint64_t salt =
      static_cast<uint64_t>(Clock::now().time_since_epoch().count()) * 0x9E3779B97F4A7C15ull;
  uint64_t x = (a + salt) * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  return fmt::format("{:016x}{:08x}", x, static_cast<uint32_t>(a));
}

Json null_or(const std::string& s) {
  return s.empty() ? Json(nullptr) : Json(s);
}

}  // namespace

GenerationJob::GenerationJob(std::shared_ptr<ServerContext> ctx, std::shared_ptr<HttpRequest> req,
                             std::shared_ptr<HttpExchange> ex, std::string request_id,
                             int key_index, Endpoint endpoint)
    : ctx_(std::move(ctx)),
      req_(std::move(req)),
      ex_(std::move(ex)),
      request_id_(std::move(request_id)),
      key_index_(key_index),
      endpoint_(endpoint) {}

GenerationJob::~GenerationJob() {
  if (admitted_ && !finished_) {
    ctx_->active_jobs.fetch_sub(1);
    ctx_->metrics.running.fetch_sub(1);
  }
}

std::string GenerationJob::token_text(int32_t id) const {
  return ctx_->tokenizer ? ctx_->tokenizer->decode(std::span<const int32_t>(&id, 1), false)
                         : std::to_string(id);
}

void GenerationJob::reply_error(const ApiError& e) {
  HttpResponse r;
  r.status = e.status;
  r.body = e.to_json();
  r.headers.emplace_back("X-Request-Id", request_id_);
  if (e.status == 429 || e.status == 503) {
    r.headers.emplace_back("Retry-After", std::to_string(ctx_->config.retry_after_seconds));
  }
  ex_->respond(std::move(r));
  finalize(e.status, nullptr);
}

void GenerationJob::start() {
  const auto& cfg = ctx_->config;
  RequestLimits lim = cfg.limits;
  if (auto err = parse_request(req_->body, endpoint_, lim, p_)) return reply_error(*err);
  if (!p_.model.empty() && p_.model != cfg.served_model_name) {
    return reply_error(ApiError{404, fmt::format("The model `{}` does not exist.", p_.model),
                                "invalid_request_error", "model", "model_not_found"});
  }
  const tok::Tokenizer* tk = ctx_->tokenizer.get();
  if (!tk) return reply_error(internal_error("the server has no tokenizer"));
  bool tools_on = !p_.tools.is_null() && cfg.tool_call_parser;
  // Tool-call markers are special tokens: keep them in the text when tools are on.
  if (tools_on && p_.params.skip_special_tokens) {
    p_.params.skip_special_tokens = false;
    skip_special_override_ = true;
    if (tk->eos_id() >= 0) eos_text_ = tk->id_to_token(tk->eos_id());
  }
  std::vector<std::vector<int32_t>> prompts;
  const char* prompt_param = endpoint_ == Endpoint::kChat ? "messages" : "prompt";
  if (endpoint_ == Endpoint::kChat) {
    if (!ctx_->chat_template)
      return reply_error(bad_param("messages", "this model has no chat template"));
    auto text = ctx_->chat_template->render(p_.messages, p_.add_generation_prompt, p_.tools,
                                            p_.template_kwargs);
    if (!text.is_ok())
      return reply_error(bad_param("messages", "chat template: " + text.status().message()));
    if (cfg.log_prompts) prompt_text_ = *text;
    prompts.push_back(tk->encode(*text, /*add_special_tokens=*/false));
  } else {
    for (const auto& t : p_.prompt_texts) {
      if (cfg.log_prompts) prompt_text_ += t;
      prompts.push_back(tk->encode(t, /*add_special_tokens=*/true));
    }
    for (auto& ids : p_.prompt_ids) prompts.push_back(std::move(ids));
  }
  const int64_t max_len = lim.max_model_len;
  // Without max_tokens: what the context leaves, capped by --max-tokens.
  auto default_max_tokens = [&](int64_t plen) {
    int64_t left = max_len - plen;
    return lim.max_tokens > 0 ? std::min(left, lim.max_tokens) : left;
  };
  int32_t max_tokens_all = 0;
  for (const auto& pr : prompts) {
    int64_t plen = static_cast<int64_t>(pr.size());
    if (plen == 0) return reply_error(bad_param(prompt_param, "the prompt is empty"));
    if (lim.max_prompt_tokens > 0 && plen > lim.max_prompt_tokens) {
      return reply_error(
          bad_param(prompt_param, fmt::format("the prompt is {} tokens; this server allows at most "
                                              "{} (--max-prompt-tokens)",
                                              plen, lim.max_prompt_tokens)));
    }
    if (plen >= max_len) {
      return reply_error(
          bad_param(prompt_param,
                    fmt::format("This model's maximum context length is {} tokens. However, your "
                                "prompt is {} tokens. Please reduce the length of the {}.",
                                max_len, plen, prompt_param)));
    }
    int64_t mt = p_.max_tokens ? *p_.max_tokens : default_max_tokens(plen);
    if (plen + mt > max_len) {
      return reply_error(
          bad_param(p_.endpoint == Endpoint::kChat &&
                            req_->body.find("max_completion_tokens") != std::string::npos
                        ? "max_completion_tokens"
                        : "max_tokens",
                    fmt::format("This model's maximum context length is {} tokens. However, you "
                                "requested {} tokens ({} in the {}, {} in the completion). Please "
                                "reduce the length of the {} or completion.",
                                max_len, plen + mt, plen, prompt_param, mt, prompt_param)));
    }
    max_tokens_all = static_cast<int32_t>(mt);
    (void)max_tokens_all;
  }
  // Admission: a bounded number of generation requests in flight.
  if (ctx_->draining.load()) return reply_error(unavailable("the server is shutting down"));
  if (ctx_->active_jobs.fetch_add(1) >= cfg.max_concurrent_requests) {
    ctx_->active_jobs.fetch_sub(1);
    return reply_error(too_many_requests(fmt::format(
        "too many requests in flight (limit {}); retry later", cfg.max_concurrent_requests)));
  }
  admitted_ = true;
  ctx_->metrics.running.fetch_add(1);
  ctx_->metrics.waiting.fetch_add(1);
  ctx_->add_job(shared_from_this());

  uint64_t seq = ctx_->next_id.fetch_add(1);
  response_id_ = (endpoint_ == Endpoint::kChat ? "chatcmpl-" : "cmpl-") + hex_id(seq);
  if (cfg.request_timeout.count() > 0) deadline_ = req_->arrival + cfg.request_timeout;
  const int n = p_.params.n;
  for (size_t pi = 0; pi < prompts.size(); ++pi) {
    for (int k = 0; k < n; ++k) {
      Choice c;
      c.index = static_cast<int>(pi) * n + k;
      c.reasoning = ReasoningParser(endpoint_ == Endpoint::kChat && cfg.reasoning_parser);
      choices_.push_back(std::move(c));
    }
  }
  std::weak_ptr<GenerationJob> weak = shared_from_this();
  for (size_t pi = 0; pi < prompts.size(); ++pi) {
    Sub s;
    s.engine_id = fmt::format("{}-{}", seq, pi);
    s.prompt = prompts[pi];
    engine::GenerationRequest gr;
    gr.request_id = s.engine_id;
    gr.prompt = std::move(prompts[pi]);
    gr.params = p_.params;
    gr.params.max_tokens =
        p_.max_tokens
            ? *p_.max_tokens
            : static_cast<int32_t>(default_max_tokens(static_cast<int64_t>(s.prompt.size())));
    gr.deadline = deadline_;
    if (key_index_ >= 0) gr.cache_salt = fmt::format("key-{}", key_index_);
    auto ex = ex_;
    // The engine holds the job (through this callback) until its last event.
    Status st = ctx_->engine->submit(
        std::move(gr), [self = shared_from_this(), ex](const engine::EngineEvent& ev) {
          ex->post([self, ev] { self->on_event(ev); });
        });
    if (!st.is_ok()) {
      for (auto& prev : subs_) ctx_->engine->cancel(prev.engine_id);
      subs_.clear();
      ApiError e = from_status(st, st.code() == ErrorCode::kResourceExhausted ? "" : prompt_param);
      return reply_error(e);
    }
    subs_.push_back(std::move(s));
  }
  std::weak_ptr<GenerationJob> w2 = weak;
  ex_->set_on_disconnect([w2] {
    if (auto self = w2.lock()) self->on_disconnect();
  });
  if (p_.stream && !finished_) {
    ex_->start_stream(200, {{"X-Request-Id", request_id_}});
    started_stream_ = true;
    last_write_ = Clock::now();
    if (endpoint_ == Endpoint::kChat) {
      for (auto& c : choices_) emit(c, "", "", {}, {}, nullptr);
    }
  }
}

Json GenerationJob::chunk_base() const {
  Json j;
  j["id"] = response_id_;
  j["object"] = endpoint_ == Endpoint::kChat ? "chat.completion.chunk" : "text_completion";
  j["created"] =
      ctx_->created +
      std::chrono::duration_cast<std::chrono::seconds>(req_->arrival.time_since_epoch()).count() *
          0;
  j["created"] = static_cast<int64_t>(std::time(nullptr));
  j["model"] = ctx_->config.served_model_name;
  j["system_fingerprint"] = "r1serve-" + ctx_->config.version;
  return j;
}

Json GenerationJob::chat_logprobs(const std::vector<engine::TokenLogprob>& lps) const {
  Json content = Json::array();
  auto entry = [&](int32_t id, float lp) {
    std::string t = token_text(id);
    Json bytes = Json::array();
    for (unsigned char ch : t) bytes.push_back(static_cast<int>(ch));
    Json e;
    e["token"] = t;
    e["logprob"] = lp;
    e["bytes"] = std::move(bytes);
    return e;
  };
  for (const auto& tl : lps) {
    Json e = entry(tl.token_id, tl.logprob);
    Json top = Json::array();
    for (const auto& t : tl.top) top.push_back(entry(t.token_id, t.logprob));
    e["top_logprobs"] = std::move(top);
    content.push_back(std::move(e));
  }
  return Json{{"content", std::move(content)}};
}

Json GenerationJob::completion_logprobs(const std::vector<engine::TokenLogprob>& lps,
                                        size_t offset) const {
  Json tokens = Json::array(), lp = Json::array(), top = Json::array(), offs = Json::array();
  for (const auto& tl : lps) {
    std::string t = token_text(tl.token_id);
    tokens.push_back(t);
    lp.push_back(tl.logprob);
    Json m = Json::object();
    for (const auto& x : tl.top) m[token_text(x.token_id)] = x.logprob;
    top.push_back(std::move(m));
    offs.push_back(offset);
    offset += t.size();
  }
  Json j;
  j["tokens"] = std::move(tokens);
  j["token_logprobs"] = std::move(lp);
  j["top_logprobs"] = std::move(top);
  j["text_offset"] = std::move(offs);
  return j;
}

std::string GenerationJob::clean_content(std::string s) const {
  if (!skip_special_override_ || eos_text_.empty()) return s;
  size_t pos;
  while ((pos = s.find(eos_text_)) != std::string::npos) s.erase(pos, eos_text_.size());
  return s;
}

void GenerationJob::write_sse(const Json& j) {
  ex_->write(sse_data(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
  last_write_ = Clock::now();
}

// One stream chunk for one choice (streams only).
void GenerationJob::emit(Choice& c, std::string reasoning, std::string content,
                         std::vector<ToolCall> calls, const std::vector<engine::TokenLogprob>& lps,
                         const char* finish) {
  if (!started_stream_) return;
  Json choice;
  choice["index"] = c.index;
  if (endpoint_ == Endpoint::kChat) {
    Json delta = Json::object();
    if (!c.role_sent) {
      delta["role"] = "assistant";
      delta["content"] = "";
      c.role_sent = true;
    }
    if (!reasoning.empty() && p_.include_reasoning) {
      delta["reasoning_content"] = reasoning;
      delta["reasoning"] = reasoning;
    }
    if (!content.empty()) delta["content"] = content;
    if (!calls.empty()) {
      Json tc = Json::array();
      for (auto& call : calls) {
        Json t;
        t["index"] = static_cast<int>(c.calls.size());
        t["id"] = call.id;
        t["type"] = "function";
        t["function"] = Json{{"name", call.name}, {"arguments", call.arguments}};
        tc.push_back(std::move(t));
        c.calls.push_back(std::move(call));
      }
      delta["tool_calls"] = std::move(tc);
    }
    if (delta.empty() && lps.empty() && !finish) return;
    choice["delta"] = std::move(delta);
    choice["logprobs"] = p_.logprobs && !lps.empty() ? chat_logprobs(lps) : Json(nullptr);
  } else {
    if (content.empty() && lps.empty() && !finish) return;
    choice["text"] = content;
    choice["logprobs"] =
        p_.logprobs && !lps.empty() ? completion_logprobs(lps, c.text.size()) : Json(nullptr);
  }
  choice["finish_reason"] = finish ? Json(finish) : Json(nullptr);
  if (finish && !c.stop_reason.empty()) choice["stop_reason"] = c.stop_reason;
  Json j = chunk_base();
  j["choices"] = Json::array({std::move(choice)});
  if (p_.include_usage) j["usage"] = nullptr;
  write_sse(j);
}

const char* GenerationJob::finish_name(const Choice& c) const {
  using engine::FinishReason;
  switch (c.finish) {
    case FinishReason::kStop:
      return c.calls.empty() ? "stop" : "tool_calls";
    case FinishReason::kLength:
      return c.calls.empty() ? "length" : "tool_calls";
    case FinishReason::kCancelled:
      return "abort";
    case FinishReason::kTimeout:
      return "timeout";
    case FinishReason::kError:
      return "error";
    default:
      return "stop";
  }
}

void GenerationJob::on_event(const engine::EngineEvent& ev) {
  if (finished_) return;
  auto now = Clock::now();
  size_t si = 0;
  while (si < subs_.size() && subs_[si].engine_id != ev.request_id) ++si;
  if (si == subs_.size()) return;
  Sub& sub = subs_[si];
  if (!got_first_event_) {
    got_first_event_ = true;
    first_event_at_ = now;
    ctx_->metrics.queue_time.observe(seconds(now - req_->arrival));
    ctx_->metrics.waiting.fetch_sub(1);
  }
  size_t ci = si * p_.params.n + static_cast<size_t>(std::max(0, ev.index));
  if (ci >= choices_.size()) return;
  Choice& c = choices_[ci];
  if (!ev.token_ids.empty()) {
    if (!got_first_token_) {
      got_first_token_ = true;
      first_token_at_ = now;
      ctx_->metrics.ttft.observe(seconds(now - req_->arrival));
    } else if (c.last_token != Clock::time_point{}) {
      ctx_->metrics.itl.observe(seconds(now - c.last_token) /
                                static_cast<double>(ev.token_ids.size()));
    }
    c.last_token = now;
    c.tokens += static_cast<int64_t>(ev.token_ids.size());
  }
  if (p_.logprobs) c.logprobs.insert(c.logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
  bool tools_on = !p_.tools.is_null() && ctx_->config.tool_call_parser;
  auto process = [&](ReasoningParser::Delta rd, std::string& reasoning, std::string& content,
                     std::vector<ToolCall>& calls) {
    reasoning += rd.reasoning;
    std::string text = std::move(rd.content);
    if (tools_on && endpoint_ == Endpoint::kChat) {
      auto td = c.tools.push(text);
      content += td.content;
      for (auto& call : td.calls) calls.push_back(std::move(call));
    } else {
      content += text;
    }
  };
  std::string reasoning, content;
  std::vector<ToolCall> calls;
  process(c.reasoning.push(ev.text), reasoning, content, calls);
  const bool finishing = ev.finish != engine::FinishReason::kNone;
  if (finishing) {
    process(c.reasoning.finish(), reasoning, content, calls);
    if (tools_on && endpoint_ == Endpoint::kChat) content += c.tools.finish().content;
    c.finish = ev.finish;
    c.stop_reason = ev.stop_reason;
  }
  content = clean_content(std::move(content));
  c.reasoning_text += reasoning;
  c.text += content;
  if (!started_stream_) {
    for (auto& call : calls) c.calls.push_back(std::move(call));
  } else {
    if (!reasoning.empty() || !content.empty() || !calls.empty() ||
        (p_.logprobs && !ev.logprobs.empty())) {
      emit(c, reasoning, content, std::move(calls),
           p_.logprobs ? ev.logprobs : std::vector<engine::TokenLogprob>{}, nullptr);
    }
    if (finishing) {
      if (ev.finish == engine::FinishReason::kTimeout ||
          ev.finish == engine::FinishReason::kError) {
        ApiError e = ev.finish == engine::FinishReason::kTimeout
                         ? ApiError{408, "the request exceeded its time limit", "timeout", "",
                                    "request_timeout"}
                         : internal_error("generation failed: " + ev.error.message());
        write_sse(Json::parse(e.to_json()));
      }
      emit(c, "", "", {}, {}, finish_name(c));
    }
  }
  if (ev.request_done) {
    sub.done = true;
    if (ev.usage) {
      sub.usage = *ev.usage;
      sub.has_usage = true;
    }
  }
  if (std::all_of(subs_.begin(), subs_.end(), [](const Sub& s) { return s.done; })) complete();
}

Json GenerationJob::usage_json() const {
  int64_t prompt = 0, completion = 0, cached = 0;
  for (const auto& s : subs_) {
    prompt += s.has_usage ? s.usage.prompt_tokens : static_cast<int64_t>(s.prompt.size());
    cached += s.has_usage ? s.usage.cached_prompt_tokens : 0;
  }
  for (const auto& c : choices_) completion += c.tokens;
  Json u;
  u["prompt_tokens"] = prompt;
  u["completion_tokens"] = completion;
  u["total_tokens"] = prompt + completion;
  u["prompt_tokens_details"] = Json{{"cached_tokens", cached}};
  return u;
}

void GenerationJob::complete() {
  if (finished_) return;
  bool any_error = false, any_timeout = false;
  std::string error_msg;
  for (const auto& c : choices_) {
    if (c.finish == engine::FinishReason::kError) any_error = true;
    if (c.finish == engine::FinishReason::kTimeout) any_timeout = true;
  }
  const char* label = any_error ? "error" : any_timeout ? "timeout" : nullptr;
  if (!label) {
    bool tools = false, length = false;
    for (const auto& c : choices_) {
      tools |= !c.calls.empty();
      length |= c.finish == engine::FinishReason::kLength;
    }
    label = tools ? "tool_calls" : length ? "length" : "stop";
  }
  // The metrics and the access log are updated before the last bytes go out, so
  // a client that reads /metrics right after its response sees its request.
  if (started_stream_) {
    if (p_.include_usage) {
      Json j = chunk_base();
      j["choices"] = Json::array();
      j["usage"] = usage_json();
      write_sse(j);
    }
    finalize(200, label);
    ex_->write(sse_done());
    ex_->finish();
  } else if (any_error || any_timeout) {
    ApiError e = any_timeout ? ApiError{408, "the request exceeded its time limit", "timeout", "",
                                        "request_timeout"}
                             : internal_error("generation failed");
    HttpResponse r;
    r.status = e.status;
    r.body = e.to_json();
    r.headers.emplace_back("X-Request-Id", request_id_);
    finalize(e.status, label);
    ex_->respond(std::move(r));
  } else {
    Json j;
    j["id"] = response_id_;
    j["object"] = endpoint_ == Endpoint::kChat ? "chat.completion" : "text_completion";
    j["created"] = static_cast<int64_t>(std::time(nullptr));
    j["model"] = ctx_->config.served_model_name;
    Json arr = Json::array();
    for (size_t i = 0; i < choices_.size(); ++i) {
      const Choice& c = choices_[i];
      Json ch;
      ch["index"] = c.index;
      if (endpoint_ == Endpoint::kChat) {
        Json m;
        m["role"] = "assistant";
        bool reasoning_on = ctx_->config.reasoning_parser;
        m["content"] =
            c.text.empty() && (reasoning_on || !c.calls.empty()) ? Json(nullptr) : Json(c.text);
        if (reasoning_on) {
          Json r = p_.include_reasoning ? null_or(c.reasoning_text) : Json(nullptr);
          m["reasoning_content"] = r;
          m["reasoning"] = r;
        }
        if (!c.calls.empty()) {
          Json tc = Json::array();
          for (const auto& call : c.calls) {
            Json t;
            t["id"] = call.id;
            t["type"] = "function";
            t["function"] = Json{{"name", call.name}, {"arguments", call.arguments}};
            tc.push_back(std::move(t));
          }
          m["tool_calls"] = std::move(tc);
        }
        ch["message"] = std::move(m);
        ch["logprobs"] = p_.logprobs ? chat_logprobs(c.logprobs) : Json(nullptr);
      } else {
        std::string text = c.text;
        size_t prefix = 0;
        if (p_.echo) {
          size_t pi = i / static_cast<size_t>(p_.params.n);
          std::string prompt_text = pi < p_.prompt_texts.size()
                                        ? p_.prompt_texts[pi]
                                        : ctx_->tokenizer->decode(subs_[pi].prompt, false);
          prefix = prompt_text.size();
          text = prompt_text + text;
        }
        ch["text"] = text;
        ch["logprobs"] = p_.logprobs ? completion_logprobs(c.logprobs, prefix) : Json(nullptr);
      }
      ch["finish_reason"] = finish_name(c);
      ch["stop_reason"] = c.stop_reason.empty() ? Json(nullptr) : Json(c.stop_reason);
      arr.push_back(std::move(ch));
    }
    j["choices"] = std::move(arr);
    j["usage"] = usage_json();
    j["system_fingerprint"] = "r1serve-" + ctx_->config.version;
    HttpResponse r;
    r.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    r.headers.emplace_back("X-Request-Id", request_id_);
    finalize(200, label);
    ex_->respond(std::move(r));
  }
}

void GenerationJob::on_disconnect() {
  if (finished_) return;
  for (const auto& s : subs_) {
    if (!s.done) ctx_->engine->cancel(s.engine_id);
  }
  ctx_->metrics.add_cancelled();
  finalize(499, "abort");
}

void GenerationJob::abort(const ApiError& why, bool timeout) {
  if (finished_) return;
  for (const auto& s : subs_) {
    if (!s.done) ctx_->engine->cancel(s.engine_id);
  }
  // As in the normal end: metrics first, then the last bytes.
  if (started_stream_) {
    write_sse(Json::parse(why.to_json()));
    finalize(200, timeout ? "timeout" : "abort");
    ex_->write(sse_done());
    ex_->finish();
  } else {
    HttpResponse r;
    r.status = why.status;
    r.body = why.to_json();
    r.headers.emplace_back("X-Request-Id", request_id_);
    finalize(why.status, timeout ? "timeout" : "abort");
    ex_->respond(std::move(r));
  }
}

void GenerationJob::tick(Clock::time_point now) {
  if (finished_) return;
  if (deadline_ && now > *deadline_ + std::chrono::seconds(2)) {
    return abort(
        ApiError{408, "the request exceeded its time limit", "timeout", "", "request_timeout"},
        true);
  }
  if (started_stream_ && now - last_write_ >= ctx_->config.sse_keepalive) {
    ex_->write(sse_comment("keep-alive"));
    last_write_ = now;
  }
}

void GenerationJob::finalize(int status, const char* label) {
  if (finished_) return;
  finished_ = true;
  auto now = Clock::now();
  int64_t prompt = 0, completion = 0, cached = 0;
  for (const auto& s : subs_) {
    prompt += s.has_usage ? s.usage.prompt_tokens : static_cast<int64_t>(s.prompt.size());
    cached += s.has_usage ? s.usage.cached_prompt_tokens : 0;
  }
  for (const auto& c : choices_) completion += c.tokens;
  if (admitted_) {
    if (!got_first_event_) ctx_->metrics.waiting.fetch_sub(1);
    ctx_->metrics.running.fetch_sub(1);
    ctx_->metrics.e2e.observe(seconds(now - req_->arrival));
    ctx_->metrics.add_tokens(prompt, completion);
    FinishLabel fl = FinishLabel::kStop;
    std::string l = label ? label : "error";
    if (l == "length")
      fl = FinishLabel::kLength;
    else if (l == "tool_calls")
      fl = FinishLabel::kToolCalls;
    else if (l == "abort")
      fl = FinishLabel::kAbort;
    else if (l == "timeout")
      fl = FinishLabel::kTimeout;
    else if (l == "error")
      fl = FinishLabel::kError;
    ctx_->metrics.on_request_finished(fl);
    ctx_->active_jobs.fetch_sub(1);
    ctx_->remove_job(this);
  }
  if (ctx_->access_log.enabled()) {
    Json e = AccessLog::entry(request_id_, req_->method, req_->path, status, key_id(key_index_),
                              req_->remote);
    e["stream"] = p_.stream;
    e["finish_reason"] = label ? Json(label) : Json(nullptr);
    e["prompt_tokens"] = prompt;
    e["completion_tokens"] = completion;
    e["cached_tokens"] = cached;
    e["queue_ms"] =
        got_first_event_ ? Json(seconds(first_event_at_ - req_->arrival) * 1e3) : Json(nullptr);
    e["ttft_ms"] =
        got_first_token_ ? Json(seconds(first_token_at_ - req_->arrival) * 1e3) : Json(nullptr);
    e["e2e_ms"] = seconds(now - req_->arrival) * 1e3;
    if (ctx_->config.log_prompts) e["prompt"] = prompt_text_;
    ctx_->access_log.write(e);
  }
}

}  // namespace r1::server
