// LlmEngine: the Engine implementation. One thread runs the loop
// schedule -> run model -> postprocess; submit/cancel/stats are called from
// any thread and only touch a mutex-guarded inbox and a stats snapshot.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/block_allocator.h"
#include "engine/engine.h"
#include "engine/model_runner.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace r1::engine {

class LlmEngine final : public Engine {
 public:
  // Sizes the KV pool (num_kv_blocks, else kv_cache_bytes) and starts the
  // engine thread.
  static Result<std::unique_ptr<LlmEngine>> create(std::shared_ptr<model::Model> model,
                                                   std::shared_ptr<const tok::Tokenizer> tokenizer,
                                                   const EngineConfig& config);
  ~LlmEngine() override;

  Status submit(GenerationRequest request, EventCallback on_event) override;
  void cancel(const std::string& request_id) override;
  EngineStats stats() const override;
  void shutdown() override;

 private:
  LlmEngine(std::shared_ptr<model::Model> model, std::shared_ptr<const tok::Tokenizer> tokenizer,
            const EngineConfig& config, int64_t num_blocks, int64_t max_len);

  Status validate(const GenerationRequest& r) const;
  void loop();
  // Engine thread only:
  void admit(std::unique_ptr<RequestState> rq);
  void apply_cancel(const std::string& id);
  void expire_deadlines();
  void step();
  // True when every row the step samples is plain greedy (Sampler::plain_greedy):
  // the model then picks the tokens on its device and no logits are copied.
  bool greedy_step(const StepPlan& plan) const;
  // `greedy`: each sampled row's token from the device (logits unused), else null.
  void postprocess(const StepPlan& plan, const std::vector<float>& logits,
                   const std::vector<int32_t>* greedy);
  // The next token of `seq` from its logits row, or `greedy_id` when row is null.
  void sample_into(Sequence& seq, const float* row, int32_t greedy_id);
  void fork(Sequence& parent, const float* row, int32_t greedy_id);
  void append_token(Sequence& seq, int32_t token, std::optional<TokenLogprob> lp);
  void finish_sequence(Sequence& seq, FinishReason reason, std::string stop_reason = {});
  void finish_request(RequestState& rq, FinishReason reason, const Status& error);
  void fail_all(FinishReason reason, const Status& error);
  void deliver();
  void publish_stats();
  std::vector<int32_t> stop_ids_for(const SamplingParams& p) const;

  std::shared_ptr<model::Model> model_;
  std::shared_ptr<const tok::Tokenizer> tokenizer_;
  EngineConfig cfg_;
  int64_t num_blocks_;
  int64_t max_len_;  // min(max_model_len, pool capacity)
  std::vector<int32_t> eos_ids_;

  // Engine-thread state.
  BlockAllocator alloc_;
  Scheduler sched_;
  ModelRunner runner_;
  Sampler sampler_;
  std::unordered_map<std::string, std::unique_ptr<RequestState>> requests_;
  std::vector<RequestState*> touched_;
  int64_t next_seq_id_ = 0;
  int64_t steps_ = 0, step_errors_ = 0, prompt_tokens_ = 0, generation_tokens_ = 0;
  // Engine-thread time per loop phase (EngineStats::time_*), nanoseconds.
  int64_t ns_schedule_ = 0, ns_model_ = 0, ns_post_ = 0, ns_other_ = 0;
  std::vector<float> logits_;
  std::vector<int32_t> greedy_ids_;

  // Shared state, guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<RequestState>> inbox_;
  std::vector<std::string> cancels_;
  std::unordered_set<std::string> live_ids_;
  bool stopping_ = false;
  EngineStats stats_;

  std::thread thread_;
};

}  // namespace r1::engine
