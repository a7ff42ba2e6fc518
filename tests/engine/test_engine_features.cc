// Engine behaviour beyond greedy equality: seeded sampling independent of
// the batch, cancellation storms leaking no block, stop strings with
// hold-back, stop tokens and EOS, n > 1 sharing prompt blocks, logprobs,
// deadlines, rejection at submit, a forward pass that throws, and greedy
// steps that pick their tokens in the model.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <random>

#include "engine/engine.h"
#include "engine_test_util.h"
#include "tokenizer/tokenizer.h"

namespace r1::engine {
namespace {

using namespace r1::engine::testing;

std::vector<int32_t> random_prompt(std::mt19937& rng, int len, int vocab) {
  std::vector<int32_t> p(static_cast<size_t>(len));
  for (auto& t : p) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab - 2)) + 2;
  return p;
}

TEST(EngineSampling, SeededOutputIndependentOfBatch) {
  TinyModel tm = load_tiny("deepseek_v3_tiny");
  ASSERT_TRUE(tm.model);
  EngineConfig cfg;
  cfg.num_kv_blocks = 256;
  std::mt19937 rng(5);
  const auto prompt = random_prompt(rng, 20, 512);
  auto make = [&](const std::string& id, uint64_t seed) {
    GenerationRequest r;
    r.request_id = id;
    r.prompt = prompt;
    r.params.temperature = 0.8f;
    r.params.top_p = 0.95f;
    r.params.top_k = 50;
    r.params.seed = seed;
    r.params.max_tokens = 24;
    r.params.ignore_eos = true;
    return r;
  };
  std::vector<int32_t> alone;
  {
    auto e = make_engine(tm.model, nullptr, cfg);
    ASSERT_TRUE(e.is_ok());
    Collector c;
    ASSERT_TRUE((*e)->submit(make("x", 1234), c.callback()).is_ok());
    c.wait(1);
    alone = c.results()["x"].samples[0].tokens;
    ASSERT_EQ(alone.size(), 24u);
  }
  auto e = make_engine(tm.model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  Collector c;
  for (int i = 0; i < 12; ++i) {
    GenerationRequest bg = make("bg" + std::to_string(i), 100 + i);
    bg.prompt = random_prompt(rng, 5 + i * 3, 512);
    ASSERT_TRUE((*e)->submit(std::move(bg), c.callback()).is_ok());
    if (i == 5) {
      ASSERT_TRUE((*e)->submit(make("x", 1234), c.callback()).is_ok());
    }
  }
  ASSERT_TRUE((*e)->submit(make("y", 1234), c.callback()).is_ok());  // same seed, same prompt
  ASSERT_TRUE((*e)->submit(make("z", 999), c.callback()).is_ok());
  c.wait(15);
  auto res = c.results();
  EXPECT_EQ(res["x"].samples[0].tokens, alone);
  EXPECT_EQ(res["y"].samples[0].tokens, alone);
  EXPECT_NE(res["z"].samples[0].tokens, alone);
}

// Forwards to a real model, counting which of its two step calls the engine used.
class CountingModel : public model::Model {
 public:
  explicit CountingModel(std::shared_ptr<model::Model> m) : m_(std::move(m)) {}
  const io::ModelConfig& config() const override { return m_->config(); }
  backend::Backend& backend() override { return m_->backend(); }
  backend::KvCacheSpec kv_cache_spec() const override { return m_->kv_cache_spec(); }
  int64_t decode_weight_bytes() const override { return m_->decode_weight_bytes(); }
  void forward(const backend::BatchInfo& b, backend::KvCache& c, std::vector<float>& l) override {
    ++logits_steps;
    m_->forward(b, c, l);
  }
  void forward_argmax(const backend::BatchInfo& b, backend::KvCache& c,
                      std::vector<int32_t>& ids) override {
    ++argmax_steps;
    m_->forward_argmax(b, c, ids);
  }
  std::atomic<int> logits_steps{0}, argmax_steps{0};

 private:
  std::shared_ptr<model::Model> m_;
};

// Plain greedy steps pick their tokens in the model (forward_argmax); a request
// that asks for logprobs makes its steps download the logits. Both give the
// same tokens, alone and mixed in one batch.
TEST(EngineSampling, GreedyInTheModelEqualsGreedyFromLogits) {
  for (const char* name : {"deepseek_v3_tiny", "llama_tiny"}) {
    TinyModel tm = load_tiny(name);
    ASSERT_TRUE(tm.model);
    std::mt19937 rng(9);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 4; ++i) prompts.push_back(random_prompt(rng, 7 + 5 * i, 256));
    auto run = [&](bool logprobs_on_first, int* logits_steps, int* argmax_steps) {
      auto counting = std::make_shared<CountingModel>(tm.model);
      EngineConfig cfg;
      cfg.num_kv_blocks = 128;
      auto e = make_engine(counting, nullptr, cfg);
      EXPECT_TRUE(e.is_ok());
      Collector c;
      for (size_t i = 0; i < prompts.size(); ++i) {
        GenerationRequest r = greedy_request("r" + std::to_string(i), prompts[i], 10);
        if (logprobs_on_first && i == 0) r.params.logprobs = 0;
        EXPECT_TRUE((*e)->submit(std::move(r), c.callback()).is_ok());
      }
      c.wait(static_cast<int>(prompts.size()));
      (*e)->shutdown();
      *logits_steps = counting->logits_steps;
      *argmax_steps = counting->argmax_steps;
      std::vector<std::vector<int32_t>> out;
      for (size_t i = 0; i < prompts.size(); ++i)
        out.push_back(c.results()["r" + std::to_string(i)].samples[0].tokens);
      return out;
    };
    int l1 = 0, a1 = 0, l2 = 0, a2 = 0;
    const auto greedy = run(false, &l1, &a1);
    const auto mixed = run(true, &l2, &a2);
    EXPECT_EQ(l1, 0) << name;  // no step needed the logits
    EXPECT_GT(a1, 0) << name;
    EXPECT_GT(l2, 0) << name;  // the logprobs request's steps did
    EXPECT_EQ(greedy, mixed) << name;
    for (const auto& t : greedy) EXPECT_EQ(t.size(), 10u) << name;
  }
}

TEST(EngineSampling, LogprobsAreLogSoftmax) {
  TinyModel tm = load_tiny("qwen2_tiny");
  ASSERT_TRUE(tm.model);
  EngineConfig cfg;
  cfg.num_kv_blocks = 64;
  auto e = make_engine(tm.model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  Collector c;
  GenerationRequest r = greedy_request("lp", {3, 4, 5, 6, 7}, 6);
  r.params.logprobs = 512;  // the whole tiny vocabulary
  ASSERT_TRUE((*e)->submit(r, c.callback()).is_ok());
  c.wait(1);
  const SampleOut s = c.results()["lp"].samples[0];
  ASSERT_EQ(s.logprobs.size(), 6u);
  for (size_t i = 0; i < s.logprobs.size(); ++i) {
    const TokenLogprob& lp = s.logprobs[i];
    EXPECT_EQ(lp.token_id, s.tokens[i]);
    ASSERT_EQ(lp.top.size(), 512u);
    double sum = 0;
    for (const auto& t : lp.top) sum += std::exp(static_cast<double>(t.logprob));
    EXPECT_NEAR(sum, 1.0, 1e-4);
    EXPECT_EQ(lp.top[0].token_id, lp.token_id);  // greedy: the top token
    EXPECT_FLOAT_EQ(lp.top[0].logprob, lp.logprob);
    for (size_t k = 1; k < lp.top.size(); ++k) EXPECT_GE(lp.top[k - 1].logprob, lp.top[k].logprob);
    EXPECT_LE(lp.logprob, 0.0f);
  }
}

TEST(EngineSampling, NSamplesShareThePromptBlocks) {
  TinyModel tm = load_tiny("deepseek_v3_tiny");
  ASSERT_TRUE(tm.model);
  const nlohmann::json ref = read_json(kModels + "deepseek_v3_tiny/reference.json");
  const auto prompt =
      ref["greedy"][1]["prompt"].get<std::vector<int32_t>>();  // 50 tokens: 3 full blocks
  const auto expected = ref["greedy"][1]["output"].get<std::vector<int32_t>>();
  EngineConfig cfg;
  cfg.num_kv_blocks = 64;
  cfg.enable_prefix_caching = false;  // sharing must come from the fork itself
  auto e = make_engine(tm.model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  Engine* engine = e->get();
  Collector c;
  int64_t max_shared = 0;
  c.on_event = [&](const EngineEvent&) {
    max_shared = std::max(max_shared, engine->stats().kv_blocks_shared);
  };
  GenerationRequest r = greedy_request("n3", prompt, static_cast<int32_t>(expected.size()));
  r.params.n = 3;
  ASSERT_TRUE(engine->submit(r, c.callback()).is_ok());
  c.wait(1);
  RequestOut out = c.results()["n3"];
  ASSERT_EQ(out.samples.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(out.samples[i].tokens, expected)
        << "sample " << i;  // greedy: all equal the reference
    EXPECT_EQ(out.samples[i].finish, FinishReason::kLength);
  }
  EXPECT_GE(max_shared, 3);  // the 3 full prompt blocks, shared by all samples
  ASSERT_TRUE(out.usage);
  EXPECT_EQ(out.usage->completion_tokens, 3 * static_cast<int64_t>(expected.size()));
  EXPECT_EQ(out.usage->prompt_tokens, 50);
  EXPECT_EQ(engine->stats().kv_blocks_used, 0);

  // Seeded n > 1: samples differ from each other, and repeat exactly.
  auto seeded = [&](const std::string& id) {
    GenerationRequest s = greedy_request(id, prompt, 12);
    s.params.temperature = 1.0f;
    s.params.seed = 7;
    s.params.n = 4;
    return s;
  };
  ASSERT_TRUE(engine->submit(seeded("s1"), c.callback()).is_ok());
  ASSERT_TRUE(engine->submit(seeded("s2"), c.callback()).is_ok());
  c.wait(3);
  auto res = c.results();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(res["s1"].samples[i].tokens, res["s2"].samples[i].tokens);
  EXPECT_NE(res["s1"].samples[0].tokens, res["s1"].samples[1].tokens);
}

// A fake model that recites `script`: the token after position p is
// script[p + 1].
std::shared_ptr<FakeModel> reciting(const std::vector<int32_t>& script, int64_t vocab) {
  return std::make_shared<FakeModel>(vocab, [script](int32_t, int32_t pos) {
    return script[static_cast<size_t>(pos + 1) % script.size()];
  });
}

TEST(EngineText, StopStringsAcrossTokensWithHoldBack) {
  auto tok = tok::Tokenizer::load(std::string(R1_TEST_DATA_DIR) + "/tokenizer/flags");
  ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
  std::shared_ptr<const tok::Tokenizer> t = *tok;
  const std::string text = "Hello world, the answer is forty-two and nothing else matters.";
  std::vector<int32_t> script = t->encode(text);
  ASSERT_GT(script.size(), 10u);
  auto model = reciting(script, t->vocab_size());
  EngineConfig cfg;
  cfg.num_kv_blocks = 64;
  auto e = make_engine(model, t, cfg);
  ASSERT_TRUE(e.is_ok());
  const std::vector<int32_t> prompt(script.begin(), script.begin() + 2);
  const std::string prompt_text = t->decode(prompt);
  const std::string rest = text.substr(prompt_text.size());
  auto run = [&](const std::string& id, std::vector<std::string> stops,
                 std::vector<std::string>* pieces) {
    Collector c;
    c.on_event = [&](const EngineEvent& ev) {
      if (pieces && !ev.text.empty()) pieces->push_back(ev.text);
    };
    GenerationRequest r = greedy_request(id, prompt, static_cast<int32_t>(script.size()) - 2);
    r.params.stop = std::move(stops);
    EXPECT_TRUE((*e)->submit(r, c.callback()).is_ok());
    c.wait(1);
    return c.results()[id].samples[0];
  };
  // No stop: the whole text, exactly as decode gives it.
  SampleOut all = run("all", {}, nullptr);
  EXPECT_EQ(all.text, rest);
  EXPECT_EQ(all.finish, FinishReason::kLength);
  // A stop string spanning several tokens: cut before it, never streamed.
  std::vector<int32_t> ids = t->encode(" forty-two");
  ASSERT_GT(ids.size(), 1u) << "the stop string should span tokens";
  std::vector<std::string> pieces;
  SampleOut s = run("stop", {"nothing", "forty-two"}, &pieces);
  EXPECT_EQ(s.finish, FinishReason::kStop);
  EXPECT_EQ(s.stop_reason, "forty-two");
  EXPECT_EQ(s.text, rest.substr(0, rest.find("forty-two")));
  std::string streamed;
  for (const auto& p : pieces) {
    streamed += p;
    EXPECT_EQ(p.find("fort"), std::string::npos) << "held-back text leaked: " << p;
  }
  EXPECT_EQ(streamed, s.text);
  EXPECT_LT(s.tokens.size(), script.size() - 2);  // generation stopped early
  // A partial match that never completes is released intact.
  SampleOut partial = run("partial", {"forty-three"}, nullptr);
  EXPECT_EQ(partial.text, rest);
  EXPECT_EQ((*e)->stats().kv_blocks_used, 0);
}

TEST(EngineText, EosStopTokensAndMinTokens) {
  // Recites 10, 11, 1 (EOS), 12, 13, 14, 15 ...
  std::vector<int32_t> script = {5, 10, 11, 1, 12, 13, 14, 15, 16, 17, 18, 19};
  auto model = reciting(script, 64);
  EngineConfig cfg;
  cfg.num_kv_blocks = 16;
  auto e = make_engine(model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  auto run = [&](const std::string& id, auto tweak) {
    Collector c;
    GenerationRequest r = greedy_request(id, {5}, 8);
    r.params.ignore_eos = false;
    tweak(r.params);
    EXPECT_TRUE((*e)->submit(r, c.callback()).is_ok());
    c.wait(1);
    return c.results()[id].samples[0];
  };
  SampleOut eos = run("eos", [](SamplingParams&) {});
  EXPECT_EQ(eos.tokens, (std::vector<int32_t>{10, 11, 1}));
  EXPECT_EQ(eos.finish, FinishReason::kStop);
  EXPECT_EQ(eos.stop_reason, "");
  SampleOut ign = run("ign", [](SamplingParams& p) { p.ignore_eos = true; });
  EXPECT_EQ(ign.tokens.size(), 8u);
  EXPECT_EQ(ign.finish, FinishReason::kLength);
  SampleOut stop_id = run("sid", [](SamplingParams& p) { p.stop_token_ids = {11}; });
  EXPECT_EQ(stop_id.tokens, (std::vector<int32_t>{10, 11}));
  EXPECT_EQ(stop_id.stop_reason, "11");
  // min_tokens masks EOS: something else is sampled at that step.
  SampleOut min = run("min", [](SamplingParams& p) { p.min_tokens = 5; });
  EXPECT_EQ(min.tokens.size(), 8u);
  EXPECT_NE(min.tokens[2], 1);
}

TEST(EngineLifecycle, CancellationStormLeaksNoBlock) {
  auto model = std::make_shared<FakeModel>(
      64, [](int32_t tok, int32_t pos) { return (tok * 31 + pos) % 60 + 2; });
  EngineConfig cfg;
  cfg.block_size = 4;
  cfg.num_kv_blocks = 96;  // tight: preemption happens too
  cfg.max_num_seqs = 16;
  cfg.max_num_batched_tokens = 64;
  auto e = make_engine(model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  Engine* engine = e->get();
  std::mt19937 rng(11);
  Collector c;
  std::mutex mu;
  std::vector<std::string> cancel_from_callback;
  // Some requests cancel themselves from the event callback (engine thread).
  c.on_event = [&](const EngineEvent& ev) {
    if (ev.request_id.back() == '7' && !ev.request_done) engine->cancel(ev.request_id);
  };
  const int kRequests = 200;
  int cancelled_by_test = 0;
  for (int i = 0; i < kRequests; ++i) {
    GenerationRequest r = greedy_request("r" + std::to_string(i),
                                         random_prompt(rng, 3 + static_cast<int>(rng() % 30), 64),
                                         5 + static_cast<int32_t>(rng() % 60));
    r.params.n = 1 + static_cast<int32_t>(rng() % 3);
    r.cache_salt = (i % 3 == 0) ? "tenant" : "";
    ASSERT_TRUE(engine->submit(r, c.callback()).is_ok());
    if (rng() % 2 == 0) {
      engine->cancel("r" + std::to_string(rng() % static_cast<uint32_t>(i + 1)));
      ++cancelled_by_test;
    }
  }
  engine->cancel("no-such-request");
  c.wait(kRequests);
  auto res = c.results();
  int cancelled = 0;
  for (auto& [id, r] : res) {
    EXPECT_EQ(r.done_events, 1) << id;
    EXPECT_EQ(r.events_after_done, 0) << id;
    for (auto& [i, s] : r.samples) {
      EXPECT_NE(s.finish, FinishReason::kNone) << id;
      cancelled += s.finish == FinishReason::kCancelled;
    }
  }
  EXPECT_GT(cancelled, 0);
  EngineStats s = engine->stats();
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.running, 0);
  EXPECT_EQ(s.waiting, 0);
  EXPECT_LE(s.kv_blocks_cached, s.kv_blocks_total);
  EXPECT_GT(s.preemptions, 0);
}

// The engine thread's time per loop phase: every phase accounted, the model call
// non-zero once steps ran, and together no more than the wall time they ran in.
TEST(EngineLifecycle, StepPhaseTimes) {
  auto model = reciting({2, 3, 4, 5, 6, 7, 8, 9}, 16);
  EngineConfig cfg;
  cfg.block_size = 4;
  cfg.num_kv_blocks = 64;
  const auto t0 = std::chrono::steady_clock::now();
  auto e = make_engine(model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  Collector c;
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(
        (*e)->submit(greedy_request("p" + std::to_string(i), {2, 3}, 6), c.callback()).is_ok());
  c.wait(4);
  (*e)->shutdown();
  const int64_t wall_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  const EngineStats s = (*e)->stats();
  EXPECT_GT(s.steps, 0);
  EXPECT_GT(s.time_model_us + s.time_schedule_us + s.time_postprocess_us, 0);
  for (int64_t v : {s.time_schedule_us, s.time_model_us, s.time_postprocess_us, s.time_other_us})
    EXPECT_GE(v, 0);
  EXPECT_LE(s.time_schedule_us + s.time_model_us + s.time_postprocess_us + s.time_other_us,
            wall_us);
}

TEST(EngineLifecycle, RejectsAtSubmit) {
  auto model = reciting({2, 3, 4, 5}, 16);
  EngineConfig cfg;
  cfg.block_size = 4;
  cfg.num_kv_blocks = 4;  // 16 tokens
  cfg.max_waiting = 2;
  auto e = make_engine(model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  Collector c;
  Status big = (*e)->submit(greedy_request("big", std::vector<int32_t>(17, 2), 4), c.callback());
  EXPECT_EQ(big.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(big.message().find("never fit"), std::string::npos) << big.message();
  EXPECT_EQ((*e)->submit(greedy_request("oov", {2, 99}, 4), c.callback()).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ((*e)->submit(greedy_request("empty", {}, 4), c.callback()).code(),
            ErrorCode::kInvalidArgument);
  GenerationRequest bad = greedy_request("badp", {2}, 4);
  bad.params.top_p = 0;
  EXPECT_EQ((*e)->submit(bad, c.callback()).code(), ErrorCode::kInvalidArgument);
  GenerationRequest stops = greedy_request("stops", {2}, 4);
  stops.params.stop = {"x"};
  EXPECT_EQ((*e)->submit(stops, c.callback()).code(), ErrorCode::kInvalidArgument);  // no tokenizer
  // A sequence is capped at the pool: it ends with "length".
  ASSERT_TRUE((*e)->submit(greedy_request("long", {2, 3}, 100), c.callback()).is_ok());
  c.wait(1);
  auto r = c.results()["long"];
  EXPECT_EQ(r.samples[0].finish, FinishReason::kLength);
  EXPECT_EQ(r.samples[0].tokens.size(), 14u);
}

TEST(EngineLifecycle, DeadlinesAndDuplicateIds) {
  auto model = reciting({2, 3, 4, 5}, 16);
  EngineConfig cfg;
  cfg.num_kv_blocks = 64;
  auto e = make_engine(model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  Collector c;
  GenerationRequest r = greedy_request("late", {2, 3}, 100);
  r.deadline = std::chrono::steady_clock::now();
  ASSERT_TRUE((*e)->submit(r, c.callback()).is_ok());
  c.wait(1);
  EXPECT_EQ(c.results()["late"].samples[0].finish, FinishReason::kTimeout);
  EXPECT_EQ((*e)->stats().kv_blocks_used, 0);
  // While "a" is live its id is taken. Its first event holds the engine thread
  // until the second submit and the cancel have been made, so "a" can neither
  // finish before them nor run to its length (however the threads are scheduled).
  std::mutex mu;
  std::condition_variable cv;
  bool first = false, tried = false;
  c.on_event = [&](const EngineEvent& ev) {
    if (ev.request_id != "a") return;
    std::unique_lock<std::mutex> l(mu);
    first = true;
    cv.notify_all();
    cv.wait(l, [&] { return tried; });
  };
  ASSERT_TRUE((*e)->submit(greedy_request("a", {2}, 1000), c.callback()).is_ok());
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return first; });
  }
  EXPECT_EQ((*e)->submit(greedy_request("a", {2}, 4), c.callback()).code(),
            ErrorCode::kInvalidArgument);
  (*e)->cancel("a");  // taken at the engine's next iteration, long before 1000 tokens
  {
    std::lock_guard<std::mutex> l(mu);
    tried = true;
    cv.notify_all();
  }
  c.wait(2);
  EXPECT_EQ(c.results()["a"].samples[0].finish, FinishReason::kCancelled);
}

TEST(EngineLifecycle, ForwardFailureFailsInFlightAndEngineRecovers) {
  auto model = reciting({2, 3, 4, 5, 6, 7}, 16);
  model->throw_at_step(3);
  EngineConfig cfg;
  cfg.num_kv_blocks = 64;
  auto e = make_engine(model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  Collector c;
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(
        (*e)->submit(greedy_request("f" + std::to_string(i), {2, 3}, 50), c.callback()).is_ok());
  c.wait(4);
  auto res = c.results();
  int errors = 0;
  for (auto& [id, r] : res) {
    if (r.samples[0].finish == FinishReason::kError) {
      ++errors;
      EXPECT_FALSE(r.error.is_ok());
      EXPECT_NE(r.error.message().find("injected fault"), std::string::npos);
    }
  }
  EXPECT_GT(errors, 0);
  EngineStats s = (*e)->stats();
  EXPECT_EQ(s.step_errors, 1);
  EXPECT_TRUE(s.alive);
  EXPECT_EQ(s.kv_blocks_used, 0);
  ASSERT_TRUE((*e)->submit(greedy_request("after", {2, 3}, 3), c.callback()).is_ok());
  c.wait(5);
  EXPECT_EQ(c.results()["after"].samples[0].tokens, (std::vector<int32_t>{4, 5, 6}));
}

TEST(EngineLifecycle, ShutdownEndsEveryRequest) {
  auto model = reciting({2, 3, 4, 5}, 16);
  EngineConfig cfg;
  cfg.num_kv_blocks = 64;
  cfg.max_model_len = 4096;
  auto e = make_engine(model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  Collector c;
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(
        (*e)->submit(greedy_request("s" + std::to_string(i), {2}, 1000), c.callback()).is_ok());
  (*e)->shutdown();
  c.wait(3);  // every request got its final event
  for (auto& [id, r] : c.results()) EXPECT_NE(r.samples.at(0).finish, FinishReason::kNone);
  EXPECT_EQ((*e)->submit(greedy_request("late", {2}, 1), c.callback()).code(),
            ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace r1::engine
