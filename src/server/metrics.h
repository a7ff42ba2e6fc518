// Server metrics in the Prometheus text exposition format (written here; no
// client library), prefix r1serve_. Counters and histograms are updated from
// any thread; engine-side numbers (running, waiting, KV blocks, prefix cache,
// preemptions) are read from EngineStats at scrape time. Label values come
// from fixed sets, so bogus input cannot add series.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace r1::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  // Appends the _bucket/_sum/_count lines of `name`.
  void render(std::string& out, const std::string& name, const std::string& help) const;
  uint64_t count() const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), +Inf last
  double sum_ = 0;
  uint64_t total_ = 0;
};

// Finish reasons as the metrics label them.
enum class FinishLabel { kStop, kLength, kToolCalls, kAbort, kTimeout, kError, kCount };
const char* finish_label_name(FinishLabel l);

class Metrics {
 public:
  Metrics();

  void on_http_response(int status);
  void on_request_finished(FinishLabel reason);
  void add_tokens(int64_t prompt, int64_t generation);
  void add_cancelled() { cancelled_.fetch_add(1); }

  Histogram ttft, itl, e2e, queue_time;
  std::atomic<int64_t> running{0};  // generation requests the server holds
  std::atomic<int64_t> waiting{0};  // of them, not started yet

  // The exposition text; `stats` may be null when no engine is attached.
  std::string render(const engine::EngineStats* stats, bool ready, bool draining) const;

  uint64_t http_count(int status) const;
  uint64_t finished_count(FinishLabel l) const { return finished_[static_cast<int>(l)].load(); }

 private:
  std::array<std::atomic<uint64_t>, 600> http_{};  // by status code
  std::array<std::atomic<uint64_t>, static_cast<int>(FinishLabel::kCount)> finished_{};
  std::atomic<int64_t> prompt_tokens_{0}, generation_tokens_{0}, cancelled_{0};
};

// Escapes a label value ("\\", "\"", "\n").
std::string escape_label(const std::string& v);

}  // namespace r1::server
