// Scheduler: running sequences first (oldest first, preempting the youngest
// for blocks), then admission from the waiting queue while budget, sequence
// slots and blocks last.
#include "engine/scheduler.h"

#include <algorithm>

#include "core/check.h"

namespace r1::engine {

Scheduler::Scheduler(const SchedulerConfig& config, BlockAllocator& allocator)
    : cfg_(config), alloc_(allocator) {
  R1_CHECK(cfg_.block_size > 0 && cfg_.max_num_seqs > 0 && cfg_.max_num_batched_tokens > 0,
           "bad scheduler config");
}

void Scheduler::add_waiting(Sequence* seq) {
  seq->status = SeqStatus::kWaiting;
  auto it = std::upper_bound(
      waiting_.begin(), waiting_.end(), seq,
      [](const Sequence* a, const Sequence* b) { return a->arrival < b->arrival; });
  waiting_.insert(it, seq);
}

void Scheduler::insert_running(Sequence* seq) {
  seq->status = SeqStatus::kRunning;
  auto it = std::upper_bound(
      running_.begin(), running_.end(), seq,
      [](const Sequence* a, const Sequence* b) { return a->arrival < b->arrival; });
  running_.insert(it, seq);
}

void Scheduler::add_running(Sequence* seq) {
  insert_running(seq);
}

void Scheduler::remove(Sequence* seq) {
  if (auto it = std::find(running_.begin(), running_.end(), seq); it != running_.end())
    running_.erase(it);
  if (auto it = std::find(waiting_.begin(), waiting_.end(), seq); it != waiting_.end())
    waiting_.erase(it);
  seq->release_blocks();
  seq->status = SeqStatus::kFinished;
}

void Scheduler::preempt(Sequence* seq, StepPlan& plan) {
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  seq->release_blocks();
  seq->num_computed = 0;  // recomputed later (cached blocks may survive)
  add_waiting(seq);
  plan.preempted.push_back(seq);
  ++preemptions_;
}

bool Scheduler::grow(Sequence* seq, int32_t num_new) {
  const int64_t need =
      blocks_for(seq->num_computed + num_new) - static_cast<int64_t>(seq->blocks.size());
  if (need <= 0) return true;
  auto blocks = alloc_.allocate_n(need);
  if (!blocks) return false;
  for (auto& b : *blocks) seq->blocks.push_back(std::move(b));
  return true;
}

int32_t Scheduler::match_prefix(Sequence* seq) {
  if (!alloc_.prefix_caching_enabled() || seq->num_computed != 0 || !seq->blocks.empty()) return 0;
  const int32_t max_blocks = (seq->num_tokens() - 1) / cfg_.block_size;
  const std::string& salt = seq->request->req.cache_salt;
  int32_t matched = 0;
  for (; matched < max_blocks; ++matched) {
    auto ref =
        alloc_.acquire_cached(seq->block_hash(static_cast<size_t>(matched), cfg_.block_size, salt));
    if (!ref) break;
    seq->blocks.push_back(std::move(*ref));
  }
  seq->num_computed = matched * cfg_.block_size;
  seq->num_hashed_blocks = matched;
  return matched;
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  TokenBudget budget(cfg_.max_num_batched_tokens);

  // 1. Running sequences, oldest first. A sequence that cannot get a block
  // preempts the youngest running one (possibly itself).
  for (size_t i = 0; i < running_.size() && budget.left() > 0;) {
    Sequence* seq = running_[i];
    const int32_t n = std::min(seq->num_uncomputed(), budget.left());
    bool scheduled = true;
    while (!grow(seq, n)) {
      Sequence* victim = preemption_.pick(running_);
      preempt(victim, plan);
      if (victim == seq) {
        scheduled = false;
        break;
      }
    }
    if (!scheduled) break;  // seq was the youngest: nothing after it is left
    plan.seqs.push_back({seq, seq->num_computed, n, seq->num_computed + n == seq->num_tokens()});
    budget.take(n);
    ++i;
  }

  // 2. Admission, only when nobody was preempted (memory is tight otherwise).
  while (plan.preempted.empty() && !waiting_.empty() && budget.left() > 0 &&
         static_cast<int32_t>(running_.size()) < cfg_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    const int32_t queried =
        alloc_.prefix_caching_enabled() ? (seq->num_tokens() - 1) / cfg_.block_size : 0;
    const int32_t matched = match_prefix(seq);
    int32_t n = seq->num_uncomputed();
    if (n > budget.left()) {
      // Without chunked prefill a prompt runs whole; one larger than the
      // budget may still run alone in an otherwise empty step.
      if (cfg_.enable_chunked_prefill) {
        n = budget.left();
      } else if (!plan.seqs.empty()) {
        seq->release_blocks();
        seq->num_computed = 0;
        break;
      }
    }
    if (!grow(seq, n)) {
      seq->release_blocks();
      seq->num_computed = 0;
      break;
    }
    alloc_.prefix_cache().record(queried, matched);
    RequestState* rq = seq->request;
    if (seq->index == 0 && !rq->admitted_once) {
      rq->admitted_once = true;
      rq->cached_prompt_tokens =
          std::min<int64_t>(int64_t{matched} * cfg_.block_size, seq->num_prompt_tokens);
    }
    waiting_.pop_front();
    insert_running(seq);
    plan.seqs.push_back({seq, seq->num_computed, n, seq->num_computed + n == seq->num_tokens()});
    budget.take(n);
  }
  for (const auto& s : plan.seqs) plan.num_tokens += s.num_new;
  return plan;
}

void Scheduler::on_step_done(const StepPlan& plan) {
  for (const auto& s : plan.seqs) {
    Sequence* seq = s.seq;
    seq->num_computed = s.start + s.num_new;
    if (!alloc_.prefix_caching_enabled()) continue;
    const int32_t full = seq->num_computed / cfg_.block_size;
    for (int32_t b = seq->num_hashed_blocks; b < full; ++b) {
      alloc_.cache_block(
          seq->blocks[static_cast<size_t>(b)].id(),
          seq->block_hash(static_cast<size_t>(b), cfg_.block_size, seq->request->req.cache_salt));
    }
    seq->num_hashed_blocks = std::max(seq->num_hashed_blocks, full);
  }
}

}  // namespace r1::engine
