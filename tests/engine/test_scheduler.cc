// Scheduler with the model left out (the test plays the model: it appends
// a token to each sampled sequence): chunked prefill under the token budget
// mixed with decodes, max_num_seqs, prefix reuse on admission, preemption of
// the youngest when blocks run out, and recompute after preemption.
#include <gtest/gtest.h>

#include <memory>
#include <numeric>

#include "engine/scheduler.h"

namespace r1::engine {
namespace {

struct Harness {
  explicit Harness(int64_t blocks, SchedulerConfig cfg, bool caching = true)
      : alloc(blocks, caching), sched(cfg, alloc) {}
  Sequence* add(int32_t prompt_len, int32_t first_token = 100) {
    auto rq = std::make_unique<RequestState>();
    std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
    std::iota(prompt.begin(), prompt.end(), first_token);
    rq->req.prompt = prompt;
    rq->samples.push_back(std::make_unique<Sequence>(next_id++, rq.get(), 0, prompt));
    Sequence* s = rq->samples.back().get();
    requests.push_back(std::move(rq));
    sched.add_waiting(s);
    return s;
  }
  // One step: schedule, "run", append token 7 to every sampled sequence.
  StepPlan step() {
    StepPlan p = sched.schedule();
    sched.on_step_done(p);
    for (auto& s : p.seqs)
      if (s.sample) s.seq->tokens.push_back(7);
    return p;
  }
  void finish(Sequence* s) { sched.remove(s); }

  BlockAllocator alloc;
  Scheduler sched;
  std::vector<std::unique_ptr<RequestState>> requests;
  int64_t next_id = 0;
};

SchedulerConfig config(int32_t budget, int32_t max_seqs = 64, bool chunked = true) {
  SchedulerConfig c;
  c.block_size = 4;
  c.max_num_batched_tokens = budget;
  c.max_num_seqs = max_seqs;
  c.enable_chunked_prefill = chunked;
  return c;
}

TEST(Scheduler, ChunkedPrefillRespectsBudgetAndMixesDecodes) {
  Harness h(64, config(8));
  Sequence* a = h.add(3);
  Sequence* b = h.add(13);
  StepPlan p1 = h.step();
  // a's whole prompt (3) + the first 5 tokens of b.
  ASSERT_EQ(p1.seqs.size(), 2u);
  EXPECT_EQ(p1.seqs[0].seq, a);
  EXPECT_EQ(p1.seqs[0].num_new, 3);
  EXPECT_TRUE(p1.seqs[0].sample);
  EXPECT_EQ(p1.seqs[1].num_new, 5);
  EXPECT_FALSE(p1.seqs[1].sample);
  EXPECT_EQ(p1.num_tokens, 8);
  StepPlan p2 = h.step();  // a decodes 1, b gets 7 more
  ASSERT_EQ(p2.seqs.size(), 2u);
  EXPECT_EQ(p2.seqs[0].num_new, 1);
  EXPECT_EQ(p2.seqs[1].num_new, 7);
  EXPECT_FALSE(p2.seqs[1].sample);
  StepPlan p3 = h.step();  // b's last prompt token: sampled
  EXPECT_EQ(p3.seqs[1].num_new, 1);
  EXPECT_TRUE(p3.seqs[1].sample);
  EXPECT_EQ(b->num_computed, 13);
  EXPECT_EQ(b->num_tokens(), 14);
  for (const StepPlan* p : {&p1, &p2, &p3}) EXPECT_LE(p->num_tokens, 8);
}

TEST(Scheduler, WithoutChunkingPromptsRunWhole) {
  Harness h(64, config(8, 64, /*chunked=*/false));
  h.add(3);
  Sequence* b = h.add(6);
  StepPlan p1 = h.step();
  ASSERT_EQ(p1.seqs.size(), 1u);  // b (6) does not fit beside a (3)
  StepPlan p2 = h.step();
  ASSERT_EQ(p2.seqs.size(), 2u);
  EXPECT_EQ(p2.seqs[1].seq, b);
  EXPECT_EQ(p2.seqs[1].num_new, 6);
  // A prompt over the budget still runs, alone.
  Harness big(64, config(8, 64, false));
  big.add(20);
  StepPlan q = big.step();
  ASSERT_EQ(q.seqs.size(), 1u);
  EXPECT_EQ(q.seqs[0].num_new, 20);
}

TEST(Scheduler, MaxNumSeqs) {
  Harness h(64, config(100, 2));
  h.add(2);
  h.add(2);
  h.add(2);
  EXPECT_EQ(h.step().seqs.size(), 2u);
  EXPECT_EQ(h.sched.waiting().size(), 1u);
  h.finish(h.sched.running().front());
  EXPECT_EQ(h.step().seqs.size(), 2u);
}

TEST(Scheduler, PreemptsTheYoungestAndRecomputes) {
  // 6 blocks of 4 tokens. Three sequences of 7-token prompts take 2 blocks
  // each; the first decode that crosses into a third block must preempt.
  Harness h(6, config(100), /*caching=*/false);
  Sequence* a = h.add(7, 10);
  Sequence* b = h.add(7, 20);
  Sequence* c = h.add(7, 30);
  StepPlan p1 = h.step();
  ASSERT_EQ(p1.seqs.size(), 3u);
  EXPECT_EQ(h.alloc.num_available(), 0);
  EXPECT_TRUE(h.step().preempted.empty());  // position 7 still fits in block 1
  // Next step: a needs a third block for position 8: the youngest (c) goes.
  StepPlan p2 = h.step();
  ASSERT_EQ(p2.preempted.size(), 1u);
  EXPECT_EQ(p2.preempted[0], c);
  EXPECT_EQ(c->status, SeqStatus::kWaiting);
  EXPECT_EQ(c->num_computed, 0);
  EXPECT_TRUE(c->blocks.empty());
  EXPECT_EQ(h.sched.num_preemptions(), 1);
  ASSERT_EQ(p2.seqs.size(), 2u);
  EXPECT_EQ(p2.seqs[0].seq, a);
  EXPECT_EQ(p2.seqs[1].seq, b);
  // c keeps its sampled tokens and recomputes all 9 once room is made.
  EXPECT_EQ(c->num_tokens(), 9);
  h.finish(a);
  StepPlan p3 = h.step();
  bool c_ran = false;
  for (auto& s : p3.seqs)
    if (s.seq == c) {
      c_ran = true;
      EXPECT_EQ(s.start, 0);
      EXPECT_EQ(s.num_new, 9);
      EXPECT_TRUE(s.sample);
    }
  EXPECT_TRUE(c_ran);
}

TEST(Scheduler, PreemptsItselfWhenYoungest) {
  Harness h(4, config(100), false);
  Sequence* a = h.add(7);
  Sequence* b = h.add(8);  // exactly 2 blocks; its sample needs a third
  h.step();
  StepPlan p = h.step();  // a fits (position 7 is in block 1); b needs a block: b is youngest
  ASSERT_EQ(p.preempted.size(), 1u);
  EXPECT_EQ(p.preempted[0], b);
  ASSERT_EQ(p.seqs.size(), 1u);
  EXPECT_EQ(p.seqs[0].seq, a);
}

TEST(Scheduler, AdmissionWaitsForBlocks) {
  Harness h(4, config(100), false);
  h.add(12);               // 3 blocks
  Sequence* b = h.add(6);  // 2 blocks: waits
  StepPlan p = h.step();
  ASSERT_EQ(p.seqs.size(), 1u);
  EXPECT_EQ(b->status, SeqStatus::kWaiting);
  EXPECT_TRUE(b->blocks.empty());
}

TEST(Scheduler, ReusesCachedPrefixBlocks) {
  Harness h(16, config(100));
  Sequence* a = h.add(10, 50);
  h.step();                     // blocks 0 and 1 of a become full and cached
  Sequence* b = h.add(10, 50);  // same prompt
  StepPlan p = h.step();
  ASSERT_EQ(p.seqs.size(), 2u);
  EXPECT_EQ(p.seqs[1].seq, b);
  EXPECT_EQ(p.seqs[1].start, 8);  // 2 blocks reused
  EXPECT_EQ(p.seqs[1].num_new, 2);
  EXPECT_EQ(b->blocks[0].id(), a->blocks[0].id());
  EXPECT_EQ(b->blocks[1].id(), a->blocks[1].id());
  EXPECT_EQ(h.alloc.ref_count(a->blocks[0].id()), 2);
  EXPECT_EQ(h.alloc.prefix_cache().hits(), 2);
  // A prompt of exactly two blocks reuses only one: its last token must run.
  Sequence* c = h.add(8, 50);
  StepPlan q = h.step();
  for (auto& s : q.seqs)
    if (s.seq == c) {
      EXPECT_EQ(s.start, 4);
      EXPECT_EQ(s.num_new, 4);
    }
}

}  // namespace
}  // namespace r1::engine
