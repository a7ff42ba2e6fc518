// Prometheus text exposition (see metrics.h).
#include "server/metrics.h"

#include <cmath>

#include <fmt/format.h>

namespace r1::server {
namespace {

std::string fmt_double(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  return fmt::format("{}", v);
}

void header(std::string& out, const std::string& name, const char* type, const std::string& help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void scalar(std::string& out, const std::string& name, const char* type, const std::string& help,
            double v) {
  header(out, name, type, help);
  out += fmt::format("{} {}\n", name, fmt_double(v));
}

}  // namespace

std::string escape_label(const std::string& v) {
  std::string s;
  for (char c : v) {
    if (c == '\\')
      s += "\\\\";
    else if (c == '"')
      s += "\\\"";
    else if (c == '\n')
      s += "\\n";
    else
      s += c;
  }
  return s;
}

Histogram::Histogram(std::vector<double> b)
    : bounds_(std::move(b)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[i];
  sum_ += v;
  ++total_;
}

uint64_t Histogram::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  header(out, name, "histogram", help);
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, fmt_double(bounds_[i]), cum);
  }
  cum += counts_.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, cum);
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, fmt_double(sum_), name, total_);
}

const char* finish_label_name(FinishLabel l) {
  switch (l) {
    case FinishLabel::kStop:
      return "stop";
    case FinishLabel::kLength:
      return "length";
    case FinishLabel::kToolCalls:
      return "tool_calls";
    case FinishLabel::kAbort:
      return "abort";
    case FinishLabel::kTimeout:
      return "timeout";
    case FinishLabel::kError:
      return "error";
    default:
      return "unknown";
  }
}

namespace {
std::vector<double> latency_buckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
          0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
}
}  // namespace

Metrics::Metrics()
    : ttft(latency_buckets()),
      itl({0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
           1.0, 2.5}),
      e2e({0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
           120.0, 300.0}),
      queue_time(latency_buckets()) {}

void Metrics::on_http_response(int status) {
  if (status >= 100 && status < 600) http_[status].fetch_add(1, std::memory_order_relaxed);
}
void Metrics::on_request_finished(FinishLabel reason) {
  finished_[static_cast<int>(reason)].fetch_add(1, std::memory_order_relaxed);
}
void Metrics::add_tokens(int64_t prompt, int64_t generation) {
  prompt_tokens_.fetch_add(prompt, std::memory_order_relaxed);
  generation_tokens_.fetch_add(generation, std::memory_order_relaxed);
}
uint64_t Metrics::http_count(int status) const {
  return status >= 100 && status < 600 ? http_[status].load() : 0;
}

std::string Metrics::render(const engine::EngineStats* st, bool ready, bool draining) const {
  std::string out;
  out.reserve(8192);
  const std::string p = "r1serve_";
  int64_t run = running.load(), wait = waiting.load();
  scalar(out, p + "num_requests_running", "gauge",
         "Generation requests being processed (started in the engine).",
         static_cast<double>(std::max<int64_t>(0, run - wait)));
  scalar(out, p + "num_requests_waiting", "gauge", "Generation requests waiting to start.",
         static_cast<double>(std::max<int64_t>(0, wait)));
  header(out, p + "request_success_total", "counter",
         "Finished generation requests by finish reason.");
  for (int i = 0; i < static_cast<int>(FinishLabel::kCount); ++i) {
    out += fmt::format("{}request_success_total{{finished_reason=\"{}\"}} {}\n", p,
                       finish_label_name(static_cast<FinishLabel>(i)), finished_[i].load());
  }
  header(out, p + "http_requests_total", "counter", "HTTP responses by status code.");
  for (int s = 100; s < 600; ++s) {
    uint64_t c = http_[s].load();
    if (c) out += fmt::format("{}http_requests_total{{status=\"{}\"}} {}\n", p, s, c);
  }
  scalar(out, p + "request_cancelled_total", "counter",
         "Requests cancelled because the client went away.",
         static_cast<double>(cancelled_.load()));
  scalar(out, p + "prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
         static_cast<double>(prompt_tokens_.load()));
  scalar(out, p + "generation_tokens_total", "counter", "Generated tokens of finished requests.",
         static_cast<double>(generation_tokens_.load()));
  ttft.render(out, p + "time_to_first_token_seconds",
              "Time from arrival to the first generated token.");
  itl.render(out, p + "inter_token_latency_seconds",
             "Time between consecutive streamed token events.");
  e2e.render(out, p + "e2e_request_latency_seconds", "Time from arrival to the last token.");
  queue_time.render(out, p + "request_queue_time_seconds",
                    "Time from arrival to the first engine event.");
  if (st) {
    double total = static_cast<double>(st->kv_blocks_total);
    scalar(out, p + "kv_cache_usage_perc", "gauge",
           "Share of KV-cache blocks held by live sequences (0..1).",
           total > 0 ? static_cast<double>(st->kv_blocks_used) / total : 0.0);
    scalar(out, p + "kv_cache_blocks_total", "gauge", "KV-cache blocks in the pool.", total);
    scalar(out, p + "kv_cache_blocks_free", "gauge", "KV-cache blocks not held by a live sequence.",
           static_cast<double>(st->kv_blocks_total - st->kv_blocks_used));
    scalar(out, p + "kv_cache_blocks_cached", "gauge",
           "Free blocks that still hold reusable prefixes.",
           static_cast<double>(st->kv_blocks_cached));
    scalar(out, p + "prefix_cache_queries_total", "counter", "Prefix-cache block lookups.",
           static_cast<double>(st->prefix_cache_queries));
    scalar(out, p + "prefix_cache_hits_total", "counter", "Prefix-cache block lookups that hit.",
           static_cast<double>(st->prefix_cache_hits));
    scalar(out, p + "kv_cache_hit_rate", "gauge", "Prefix-cache hits / queries since start.",
           st->prefix_cache_queries > 0 ? static_cast<double>(st->prefix_cache_hits) /
                                              static_cast<double>(st->prefix_cache_queries)
                                        : 0.0);
    scalar(out, p + "num_preemptions_total", "counter", "Sequences preempted for KV-cache space.",
           static_cast<double>(st->preemptions));
    scalar(out, p + "engine_steps_total", "counter", "Engine steps run.",
           static_cast<double>(st->steps));
    scalar(out, p + "engine_sequences_running", "gauge", "Sequences in the engine's running batch.",
           static_cast<double>(st->running));
    scalar(out, p + "engine_sequences_waiting", "gauge", "Sequences in the engine's queue.",
           static_cast<double>(st->waiting));
  }
  scalar(out, p + "ready", "gauge", "1 when the server takes traffic.", ready ? 1.0 : 0.0);
  scalar(out, p + "draining", "gauge", "1 while shutting down.", draining ? 1.0 : 0.0);
  return out;
}

}  // namespace r1::server
