// Scheduler: iteration-level continuous batching. Each step it plans which
// sequences run and how many tokens each computes (decodes and prefill
// chunks under one token budget), allocates their blocks, reuses cached
// prefix blocks on admission, and preempts the youngest sequences when
// blocks run out. It never touches tensors: the plan is applied elsewhere.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/block_allocator.h"
#include "engine/sequence.h"

namespace r1::engine {

struct SchedulerConfig {
  int32_t block_size = 16;
  int32_t max_num_seqs = 64;
  int32_t max_num_batched_tokens = 2048;
  bool enable_chunked_prefill = true;
};

struct ScheduledSeq {
  Sequence* seq;
  int32_t start;    // first position computed this step (== seq->num_computed)
  int32_t num_new;  // tokens computed this step
  bool sample;      // the step completes the sequence: its logits are sampled
};

struct StepPlan {
  std::vector<ScheduledSeq> seqs;
  std::vector<Sequence*> preempted;
  int32_t num_tokens = 0;
  bool empty() const { return seqs.empty(); }
};

// Policy: the tokens one step may compute.
class TokenBudget {
 public:
  explicit TokenBudget(int32_t limit) : left_(limit) {}
  int32_t left() const { return left_; }
  void take(int32_t n) { left_ -= n; }

 private:
  int32_t left_;
};

// Policy: whom to preempt when blocks run out -- the youngest running
// sequence (last admitted), so the oldest always progress.
struct PreemptYoungest {
  Sequence* pick(const std::vector<Sequence*>& running) const {
    return running.empty() ? nullptr : running.back();
  }
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, BlockAllocator& allocator);

  // A new (or re-queued) sequence joins the waiting queue, in arrival order.
  void add_waiting(Sequence* seq);
  // A sequence that already holds blocks (a fork) joins the running set.
  void add_running(Sequence* seq);
  // Leaves whichever queue holds it; its blocks are released.
  void remove(Sequence* seq);

  // Plans one step; allocates the blocks the plan writes.
  StepPlan schedule();
  // After the model ran the plan: advances num_computed and offers newly
  // full blocks to the prefix cache.
  void on_step_done(const StepPlan& plan);

  const std::vector<Sequence*>& running() const { return running_; }
  const std::deque<Sequence*>& waiting() const { return waiting_; }
  int64_t num_preemptions() const { return preemptions_; }
  // Blocks a sequence of `tokens` tokens needs.
  int64_t blocks_for(int64_t tokens) const {
    return (tokens + cfg_.block_size - 1) / cfg_.block_size;
  }

 private:
  void preempt(Sequence* seq, StepPlan& plan);
  // Shares the cached blocks of the longest cached prefix (never the whole
  // sequence: its last token must run to give logits). Returns blocks matched.
  int32_t match_prefix(Sequence* seq);
  bool grow(Sequence* seq, int32_t num_new);
  void insert_running(Sequence* seq);

  SchedulerConfig cfg_;
  BlockAllocator& alloc_;
  PreemptYoungest preemption_;
  std::vector<Sequence*> running_;  // oldest first
  std::deque<Sequence*> waiting_;   // oldest first
  int64_t preemptions_ = 0;
};

}  // namespace r1::engine
