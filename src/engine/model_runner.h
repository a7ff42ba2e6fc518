// ModelRunner: applies a StepPlan to the model -- packs the scheduled
// sequences into one backend::BatchInfo (tokens, positions, slot mapping,
// block tables) and runs Model::forward on the engine's paged KV cache.
// Owns the cache; makes no decisions.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "engine/scheduler.h"
#include "model/model.h"

namespace r1::engine {

class ModelRunner {
 public:
  ModelRunner(model::Model& model, int64_t num_blocks, int64_t block_size);

  // Builds the batch of `plan` (pure; exposed for tests).
  backend::BatchInfo build_batch(const StepPlan& plan) const;
  // Runs `plan`. `logits` gets one row of vocab_size() per entry with
  // `sample` set, in plan order. Exceptions from the model propagate.
  void run(const StepPlan& plan, std::vector<float>& logits);
  // Runs `plan` when every sampled row is plain greedy: `ids` gets each
  // sampled row's argmax token, chosen on the model's device.
  void run_greedy(const StepPlan& plan, std::vector<int32_t>& ids);

  int32_t vocab_size() const { return vocab_size_; }
  const backend::KvCache& cache() const { return cache_; }

 private:
  model::Model& model_;
  backend::KvCache cache_;
  int64_t block_size_;
  int32_t vocab_size_;
};

}  // namespace r1::engine
