// ModelRunner: StepPlan -> BatchInfo -> Model::forward.
#include "engine/model_runner.h"

#include <algorithm>

#include "core/check.h"

namespace r1::engine {

ModelRunner::ModelRunner(model::Model& model, int64_t num_blocks, int64_t block_size)
    : model_(model),
      cache_(model.backend().alloc_kv_cache(model.kv_cache_spec(), num_blocks, block_size)),
      block_size_(block_size),
      vocab_size_(static_cast<int32_t>(model.config().vocab_size)) {}

backend::BatchInfo ModelRunner::build_batch(const StepPlan& plan) const {
  backend::BatchInfo b;
  size_t max_blocks = 1;
  for (const auto& s : plan.seqs) max_blocks = std::max(max_blocks, s.seq->blocks.size());
  b.max_blocks_per_seq = static_cast<int32_t>(max_blocks);
  b.query_start.push_back(0);
  b.block_tables.assign(plan.seqs.size() * max_blocks, -1);
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const ScheduledSeq& s = plan.seqs[i];
    const Sequence& seq = *s.seq;
    R1_CHECK(s.start + s.num_new <= static_cast<int32_t>(seq.blocks.size() * block_size_),
             "sequence {} scheduled past its blocks", seq.id);
    for (size_t k = 0; k < seq.blocks.size(); ++k)
      b.block_tables[i * max_blocks + k] = seq.blocks[k].id();
    for (int32_t p = s.start; p < s.start + s.num_new; ++p) {
      b.token_ids.push_back(seq.tokens[static_cast<size_t>(p)]);
      b.positions.push_back(p);
      const int64_t block = seq.blocks[static_cast<size_t>(p / block_size_)].id();
      b.slot_mapping.push_back(static_cast<int32_t>(block * block_size_ + p % block_size_));
    }
    b.query_start.push_back(static_cast<int32_t>(b.token_ids.size()));
    b.context_lens.push_back(s.start + s.num_new);
    if (s.sample) b.logits_indices.push_back(static_cast<int32_t>(b.token_ids.size()) - 1);
  }
  return b;
}

void ModelRunner::run(const StepPlan& plan, std::vector<float>& logits) {
  logits.clear();
  if (plan.empty()) return;
  backend::BatchInfo batch = build_batch(plan);
  model_.forward(batch, cache_, logits);
  R1_CHECK(logits.size() == batch.logits_indices.size() * static_cast<size_t>(vocab_size_),
           "forward returned {} logits for {} rows", logits.size(), batch.logits_indices.size());
}

void ModelRunner::run_greedy(const StepPlan& plan, std::vector<int32_t>& ids) {
  ids.clear();
  if (plan.empty()) return;
  backend::BatchInfo batch = build_batch(plan);
  model_.forward_argmax(batch, cache_, ids);
  R1_CHECK(ids.size() == batch.logits_indices.size(), "forward returned {} tokens for {} rows",
           ids.size(), batch.logits_indices.size());
}

}  // namespace r1::engine
