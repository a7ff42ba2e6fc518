// Helpers for engine tests: load a tiny reference model, a scripted fake
// model (no weights; logits chosen per position), and a collector that runs
// requests through an Engine and waits for their final events.
#pragma once

#include <condition_variable>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "engine/engine.h"
#include "model/model.h"

namespace r1::engine::testing {

inline const std::string kModels = std::string(R1_TEST_DATA_DIR) + "/models/";

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return nlohmann::json::parse(f);
}

// A model and the backend it lives on (the backend must outlive the model).
struct TinyModel {
  std::shared_ptr<backend::Backend> backend;
  std::shared_ptr<model::Model> model;
};

inline TinyModel load_tiny(const std::string& name, int threads = 2) {
  TinyModel t;
  t.backend = backend::make_cpu_backend(threads);
  auto m = model::load_model_dir(kModels + name, *t.backend, model::LoadOptions{});
  EXPECT_TRUE(m.is_ok()) << m.status().to_string();
  if (m.is_ok()) {
    auto be = t.backend;
    std::unique_ptr<model::Model> raw = std::move(m).value();
    // The model holds a reference to the backend: keep it alive alongside.
    t.model = std::shared_ptr<model::Model>(raw.release(), [be](model::Model* p) { delete p; });
  }
  return t;
}

// Scripted model: the logits of a token at position p put `peak` on
// script(p + 1) (or on next(token, p) when set) and small values elsewhere.
// Records the batches it ran; can throw at a given step.
class FakeModel : public model::Model {
 public:
  explicit FakeModel(int64_t vocab, std::function<int32_t(int32_t token, int32_t pos)> next)
      : backend_(backend::make_cpu_backend(1)), next_(std::move(next)) {
    cfg_.vocab_size = vocab;
    cfg_.max_position_embeddings = 4096;
    cfg_.eos_token_ids = {1};
    spec_.num_layers = 1;
    spec_.num_kv_heads = 1;
    spec_.head_dim = 1;
  }
  const io::ModelConfig& config() const override { return cfg_; }
  backend::Backend& backend() override { return *backend_; }
  backend::KvCacheSpec kv_cache_spec() const override { return spec_; }
  int64_t decode_weight_bytes() const override { return 0; }
  void forward(const backend::BatchInfo& b, backend::KvCache& cache,
               std::vector<float>& logits) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++steps_;
      if (throw_at_step_ == steps_) throw std::runtime_error("injected fault");
      batches_.push_back(b);
    }
    EXPECT_EQ(cache.num_blocks > 0, true);
    const int64_t V = cfg_.vocab_size;
    logits.assign(b.logits_indices.size() * static_cast<size_t>(V), 0.0f);
    for (size_t r = 0; r < b.logits_indices.size(); ++r) {
      const int32_t t = b.logits_indices[r];
      float* row = logits.data() + r * V;
      for (int64_t v = 0; v < V; ++v) row[v] = static_cast<float>((v * 7 + t * 3) % 11) * 0.1f;
      const int32_t nx = next_(b.token_ids[t], b.positions[t]);
      row[nx] = 10.0f;
    }
  }
  void throw_at_step(int64_t s) {
    std::lock_guard<std::mutex> lock(mu_);
    throw_at_step_ = s;
  }
  std::vector<backend::BatchInfo> batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }

 private:
  std::unique_ptr<backend::Backend> backend_;
  std::function<int32_t(int32_t, int32_t)> next_;
  io::ModelConfig cfg_;
  backend::KvCacheSpec spec_;
  std::mutex mu_;
  int64_t steps_ = 0, throw_at_step_ = -1;
  std::vector<backend::BatchInfo> batches_;
};

// Output of one sample as assembled from events.
struct SampleOut {
  std::vector<int32_t> tokens;
  std::string text;
  std::vector<TokenLogprob> logprobs;
  FinishReason finish = FinishReason::kNone;
  std::string stop_reason;
  int events = 0;
};

struct RequestOut {
  std::map<int32_t, SampleOut> samples;
  std::optional<Usage> usage;
  bool done = false;
  int done_events = 0;
  Status error;
  int events_after_done = 0;
};

// Collects events of many requests; wait() blocks until all are done.
class Collector {
 public:
  EventCallback callback() {
    return [this](const EngineEvent& ev) {
      std::lock_guard<std::mutex> lock(mu_);
      RequestOut& r = out_[ev.request_id];
      if (r.done) ++r.events_after_done;
      SampleOut& s = r.samples[ev.index];
      s.tokens.insert(s.tokens.end(), ev.token_ids.begin(), ev.token_ids.end());
      s.text += ev.text;
      s.logprobs.insert(s.logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
      ++s.events;
      if (ev.finish != FinishReason::kNone) {
        s.finish = ev.finish;
        s.stop_reason = ev.stop_reason;
      }
      if (!ev.error.is_ok()) r.error = ev.error;
      if (ev.request_done) {
        r.done = true;
        ++r.done_events;
        r.usage = ev.usage;
        ++num_done_;
        cv_.notify_all();
      }
      if (on_event) on_event(ev);
    };
  }
  void wait(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return num_done_ >= n; });
  }
  std::map<std::string, RequestOut> results() {
    std::lock_guard<std::mutex> lock(mu_);
    return out_;
  }
  std::function<void(const EngineEvent&)> on_event;  // extra hook (engine thread)

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, RequestOut> out_;
  int num_done_ = 0;
};

inline GenerationRequest greedy_request(std::string id, std::vector<int32_t> prompt,
                                        int32_t max_tokens) {
  GenerationRequest r;
  r.request_id = std::move(id);
  r.prompt = std::move(prompt);
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  return r;
}

}  // namespace r1::engine::testing
