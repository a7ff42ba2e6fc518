// bench_http_pump: the real r1::server::Server (transport, routes, template,
// tokenizer, GenerationJob, SSE) over a "pump" engine that generates tokens
// for free: every --step-us it gives each running request one token. With the
// engine cost gone, bench_server.mjs --pump measures what the HTTP layer alone
// sustains. Not a test.
//
//   bench_http_pump --model DIR [--port 0] [--io-threads 2] [--step-us 1000]
//
// DIR needs tokenizer.json and tokenizer_config.json (the tiny test model's
// folder); prints "r1serve listening on http://127.0.0.1:PORT" like
// `r1serve serve` and exits 0 on SIGTERM.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "server/server.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace {

using namespace r1;

class PumpEngine : public engine::Engine {
 public:
  explicit PumpEngine(std::chrono::microseconds step) : step_(step) {
    thread_ = std::thread([this] { loop(); });
  }
  ~PumpEngine() override { shutdown(); }
  Status submit(engine::GenerationRequest r, engine::EventCallback cb) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return Status(ErrorCode::kUnavailable, "shut down");
    std::string id = r.request_id;
    live_[id] = Req{std::move(r), std::move(cb), 0};
    return Status();
  }
  void cancel(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(id);
    if (it == live_.end()) return;
    engine::EngineEvent ev;
    ev.request_id = id;
    ev.finish = engine::FinishReason::kCancelled;
    ev.request_done = true;
    it->second.cb(ev);
    live_.erase(it);
  }
  engine::EngineStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    engine::EngineStats s;
    s.running = static_cast<int64_t>(live_.size());
    s.kv_blocks_total = 1;
    s.block_size = 16;
    s.steps = steps_;
    s.generation_tokens = tokens_;
    s.last_step = std::chrono::steady_clock::now();
    return s;
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Req {
    engine::GenerationRequest req;
    engine::EventCallback cb;
    int32_t done = 0;
  };
  void loop() {
    for (;;) {
      std::this_thread::sleep_for(step_);
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      ++steps_;
      for (auto it = live_.begin(); it != live_.end();) {
        Req& r = it->second;
        engine::EngineEvent ev;
        ev.request_id = it->first;
        ev.token_ids = {1000 + r.done % 1000};
        ev.text = " tok";
        ++r.done;
        ++tokens_;
        if (r.done >= r.req.params.max_tokens) {
          ev.finish = engine::FinishReason::kLength;
          ev.request_done = true;
          ev.usage = engine::Usage{static_cast<int64_t>(r.req.prompt.size()), r.done, 0};
        }
        r.cb(ev);
        it = ev.request_done ? live_.erase(it) : std::next(it);
      }
    }
  }

  std::chrono::microseconds step_;
  mutable std::mutex mu_;
  std::map<std::string, Req> live_;
  bool stop_ = false;
  int64_t steps_ = 0, tokens_ = 0;
  std::thread thread_;
};

const char* arg(int argc, char** argv, const char* name, const char* def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = arg(argc, argv, "--model", "");
  if (dir.empty()) {
    std::fprintf(
        stderr,
        "usage: bench_http_pump --model DIR [--port 0] [--io-threads 2] [--step-us 1000]\n");
    return 2;
  }
  const sigset_t sigs = server::block_shutdown_signals();
  auto tk = tok::Tokenizer::load(dir);
  auto tmpl = tok::ChatTemplate::from_tokenizer_config(dir);
  if (!tk.is_ok() || !tmpl.is_ok()) {
    std::fprintf(stderr, "bench_http_pump: cannot load the tokenizer or template from %s\n",
                 dir.c_str());
    return 1;
  }
  server::ServerConfig cfg;
  cfg.http.port = std::atoi(arg(argc, argv, "--port", "0"));
  cfg.http.io_threads = std::atoi(arg(argc, argv, "--io-threads", "2"));
  cfg.served_model_name = "tiny-r1";
  cfg.reasoning_parser = true;
  cfg.max_concurrent_requests = 1 << 20;
  cfg.limits.max_model_len = 4096;
  cfg.limits.vocab_size = (*tk)->vocab_size();
  auto eng = std::make_shared<PumpEngine>(
      std::chrono::microseconds(std::atoi(arg(argc, argv, "--step-us", "1000"))));
  server::Server srv(cfg, eng, *tk, std::make_shared<const tok::ChatTemplate>(std::move(*tmpl)));
  Status st = srv.start();
  if (!st.is_ok()) {
    std::fprintf(stderr, "bench_http_pump: %s\n", st.message().c_str());
    return 1;
  }
  std::printf("r1serve listening on http://127.0.0.1:%d\n", srv.port());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&sigs, &sig);
  srv.begin_drain();
  srv.drain();
  srv.stop();
  eng->shutdown();
  return 0;
}
