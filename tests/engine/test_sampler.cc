// Sampler unit tests: every logits processor (logit_bias, repetition /
// presence / frequency penalties, min_tokens masking) and every sampling
// filter (temperature, top_k, top_p, min_p) checked against distributions
// computed by hand, plus seeding and logprobs. Deterministic: fixed seeds.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine_test_util.h"

namespace r1::engine {
namespace {

using namespace r1::engine::testing;

SamplingParams greedy() {
  SamplingParams p;
  p.temperature = 0;
  return p;
}

int32_t sample_once(const std::vector<float>& logits, const SamplingParams& p,
                    const std::vector<int32_t>& tokens = {}, int32_t num_prompt = 0,
                    const std::vector<int32_t>& stop_ids = {}) {
  Sampler s;
  std::mt19937_64 rng(1);
  return s
      .sample(logits.data(), static_cast<int32_t>(logits.size()), p, tokens, num_prompt, stop_ids,
              rng)
      .token;
}

// Empirical distribution of `draws` samples.
std::map<int32_t, double> histogram(const std::vector<float>& logits, const SamplingParams& p,
                                    int draws = 40000) {
  Sampler s;
  std::mt19937_64 rng(12345);
  std::map<int32_t, double> h;
  for (int i = 0; i < draws; ++i)
    h[s.sample(logits.data(), static_cast<int32_t>(logits.size()), p, {}, 0, {}, rng).token] +=
        1.0 / draws;
  return h;
}

// log of the given probabilities: softmax gives them back.
std::vector<float> log_probs(const std::vector<double>& p) {
  std::vector<float> l;
  for (double x : p) l.push_back(static_cast<float>(std::log(x)));
  return l;
}

// Checks the histogram against expected probabilities (absent = 0) to within
// 4 standard errors of a binomial proportion.
void expect_distribution(const std::map<int32_t, double>& got,
                         const std::map<int32_t, double>& want, int draws = 40000) {
  for (const auto& [tok, p] : got) EXPECT_TRUE(want.count(tok)) << "token " << tok << " sampled";
  for (const auto& [tok, p] : want) {
    const double se = std::sqrt(p * (1 - p) / draws) + 1e-9;
    const double g = got.count(tok) ? got.at(tok) : 0.0;
    EXPECT_NEAR(g, p, 4 * se + 1e-3) << "token " << tok;
  }
}

TEST(Sampler, GreedyIsArgmaxWithTiesToTheLowerId) {
  EXPECT_EQ(sample_once({0.1f, 3.0f, -2.0f, 2.9f}, greedy()), 1);
  EXPECT_EQ(sample_once({1.0f, 5.0f, 5.0f, 0.0f}, greedy()), 1);
}

TEST(Sampler, LogitBiasIsAddedBeforeSampling) {
  SamplingParams p = greedy();
  p.logit_bias = {{2, 5.0f}};
  EXPECT_EQ(sample_once({0.0f, 3.0f, -1.0f}, p), 2);  // -1 + 5 > 3
  p.logit_bias = {{1, -100.0f}};
  EXPECT_EQ(sample_once({0.0f, 3.0f, -1.0f}, p), 0);  // a ban
  p.logit_bias = {{7, 100.0f}};                       // out of range: ignored
  EXPECT_EQ(sample_once({0.0f, 3.0f, -1.0f}, p), 1);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  SamplingParams p = greedy();
  p.repetition_penalty = 1.2f;
  // Token 0 seen (in the prompt): 2.0 / 1.2 = 1.67 < 1.9.
  EXPECT_EQ(sample_once({2.0f, 1.9f, -1.0f}, p, {0}, 1), 1);
  EXPECT_EQ(sample_once({2.0f, 1.9f, -1.0f}, p, {2}, 1), 0);  // token 0 unseen
  // Negative logits grow more negative: -1.0 * 1.2 = -1.2 < -1.1.
  EXPECT_EQ(sample_once({-1.0f, -1.1f, -5.0f}, p, {0}, 0), 1);
  // A penalty below 1 rewards repetition.
  p.repetition_penalty = 0.5f;
  EXPECT_EQ(sample_once({1.0f, 1.9f, -1.0f}, p, {0}, 1), 0);  // 1.0 / 0.5 = 2.0
}

TEST(Sampler, PresenceAndFrequencyPenaltiesCountOnlyOutputTokens) {
  SamplingParams p = greedy();
  p.presence_penalty = 1.0f;
  // Token 0 only in the prompt (2 prompt tokens): no penalty.
  EXPECT_EQ(sample_once({3.0f, 2.5f}, p, {0, 0}, 2), 0);
  // Token 0 generated once: 3.0 - 1.0 < 2.5.
  EXPECT_EQ(sample_once({3.0f, 2.5f}, p, {1, 0}, 1), 1);
  // Presence counts once however often the token appears.
  p.presence_penalty = 0.4f;
  EXPECT_EQ(sample_once({3.0f, 2.5f}, p, {1, 0, 0, 0}, 1), 0);  // 3.0 - 0.4 > 2.5
  // Frequency scales with the count: 3.0 - 0.3 * 1 > 2.5, 3.0 - 0.3 * 2 < 2.5.
  p.presence_penalty = 0;
  p.frequency_penalty = 0.3f;
  EXPECT_EQ(sample_once({3.0f, 2.5f}, p, {1, 0}, 1), 0);
  EXPECT_EQ(sample_once({3.0f, 2.5f}, p, {1, 0, 0}, 1), 1);
  EXPECT_EQ(sample_once({3.0f, 2.5f}, p, {0, 0, 0}, 3), 0);  // all in the prompt
  // Negative penalties encourage repetition.
  p.frequency_penalty = -1.0f;
  EXPECT_EQ(sample_once({2.0f, 2.5f}, p, {1, 0}, 1), 0);
}

TEST(Sampler, MinTokensMasksStopIdsUntilReached) {
  SamplingParams p = greedy();
  p.min_tokens = 2;
  const std::vector<float> logits = {0.0f, 9.0f, 1.0f, 0.5f};  // EOS (1) is the argmax
  // One prompt token, zero or one output tokens so far: EOS and stop id 2 masked.
  EXPECT_EQ(sample_once(logits, p, {3}, 1, {1, 2}), 3);
  EXPECT_EQ(sample_once(logits, p, {3, 3}, 1, {1, 2}), 3);
  // Two output tokens: no longer masked.
  EXPECT_EQ(sample_once(logits, p, {3, 3, 3}, 1, {1, 2}), 1);
  // Sampling respects the mask too.
  p.temperature = 1.0f;
  Sampler s;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 500; ++i) {
    int32_t t = s.sample(logits.data(), 4, p, {3}, 1, {1, 2}, rng).token;
    EXPECT_TRUE(t == 0 || t == 3) << t;
  }
}

TEST(Sampler, TemperatureScalesTheDistribution) {
  SamplingParams p;
  p.temperature = 1.0f;
  expect_distribution(histogram(log_probs({0.5, 0.3, 0.2}), p), {{0, 0.5}, {1, 0.3}, {2, 0.2}});
  // T = 2 over logits {0, ln 4}: probabilities proportional to {1, 2}.
  p.temperature = 2.0f;
  expect_distribution(histogram({0.0f, static_cast<float>(std::log(4.0))}, p),
                      {{0, 1.0 / 3}, {1, 2.0 / 3}});
  // A tiny temperature is greedy.
  p.temperature = 1e-6f;
  expect_distribution(histogram(log_probs({0.4, 0.6}), p, 200), {{1, 1.0}}, 200);
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  expect_distribution(histogram(log_probs({0.1, 0.4, 0.2, 0.3}), p),
                      {{1, 0.4 / 0.7}, {3, 0.3 / 0.7}});
  p.top_k = 1;
  expect_distribution(histogram(log_probs({0.1, 0.4, 0.2, 0.3}), p, 500), {{1, 1.0}}, 500);
  p.top_k = 10;  // more than the vocabulary: off
  expect_distribution(histogram(log_probs({0.25, 0.75}), p), {{0, 0.25}, {1, 0.75}});
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.75f;  // 0.5 < 0.75 <= 0.5 + 0.3
  expect_distribution(histogram(log_probs({0.05, 0.5, 0.15, 0.3}), p),
                      {{1, 0.5 / 0.8}, {3, 0.3 / 0.8}});
  p.top_p = 0.4f;  // the top token alone reaches it
  expect_distribution(histogram(log_probs({0.05, 0.5, 0.15, 0.3}), p, 500), {{1, 1.0}}, 500);
  // With top_k: top_p applies to the top-k renormalized mass.
  p.top_k = 3;
  p.top_p = 0.9f;  // top-3 = {0.5, 0.3, 0.15} / 0.95; 0.842 < 0.9: all three stay
  expect_distribution(histogram(log_probs({0.05, 0.5, 0.15, 0.3}), p),
                      {{1, 0.5 / 0.95}, {3, 0.3 / 0.95}, {2, 0.15 / 0.95}});
}

TEST(Sampler, MinPDropsTokensBelowAShareOfTheTop) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0.2f;  // threshold 0.2 * 0.5 = 0.1: drops 0.05 and 0.08
  expect_distribution(histogram(log_probs({0.05, 0.5, 0.15, 0.3, 0.08, 0.0001}), p),
                      {{1, 0.5 / 0.95}, {3, 0.3 / 0.95}, {2, 0.15 / 0.95}});
  // min_p applies after temperature: at T = 0.5 probabilities square.
  p.temperature = 0.5f;
  p.min_p = 0.3f;  // {0.5, 0.3, 0.2}^2 = {0.25, 0.09, 0.04}: 0.09 / 0.25 = 0.36 stays
  expect_distribution(histogram(log_probs({0.5, 0.3, 0.2}), p),
                      {{0, 0.25 / 0.34}, {1, 0.09 / 0.34}});
}

TEST(Sampler, SeededRngsRepeatAndDifferPerSample) {
  const std::vector<float> logits = log_probs({0.2, 0.2, 0.2, 0.2, 0.2});
  SamplingParams p;
  auto draw = [&](std::optional<uint64_t> seed, int32_t index) {
    std::mt19937_64 rng;
    seed_rng(rng, seed, index);
    Sampler s;
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(logits.data(), 5, p, {}, 0, {}, rng).token);
    return out;
  };
  EXPECT_EQ(draw(7, 0), draw(7, 0));
  EXPECT_NE(draw(7, 0), draw(7, 1));
  EXPECT_NE(draw(7, 0), draw(8, 0));
  EXPECT_NE(draw(std::nullopt, 0), draw(std::nullopt, 0));  // 5^-64: never equal by chance
}

TEST(Sampler, LogprobsAreOfTheRawLogits) {
  const std::vector<float> logits = log_probs({0.1, 0.6, 0.3});
  SamplingParams p = greedy();
  p.logit_bias = {{0, 10.0f}};  // changes the choice, not the reported distribution
  p.logprobs = 2;
  Sampler s;
  std::mt19937_64 rng(1);
  SampleResult r = s.sample(logits.data(), 3, p, {}, 0, {}, rng);
  EXPECT_EQ(r.token, 0);
  ASSERT_TRUE(r.logprob);
  EXPECT_EQ(r.logprob->token_id, 0);
  EXPECT_NEAR(r.logprob->logprob, std::log(0.1), 1e-5);
  ASSERT_EQ(r.logprob->top.size(), 2u);
  EXPECT_EQ(r.logprob->top[0].token_id, 1);
  EXPECT_NEAR(r.logprob->top[0].logprob, std::log(0.6), 1e-5);
  EXPECT_EQ(r.logprob->top[1].token_id, 2);
  EXPECT_NEAR(r.logprob->top[1].logprob, std::log(0.3), 1e-5);
  p.logprobs = 0;  // the sampled token only
  r = s.sample(logits.data(), 3, p, {}, 0, {}, rng);
  ASSERT_TRUE(r.logprob);
  EXPECT_TRUE(r.logprob->top.empty());
  p.logprobs = -1;  // none
  EXPECT_FALSE(s.sample(logits.data(), 3, p, {}, 0, {}, rng).logprob);
}

// Through the engine: the sampler sees the sequence's own prompt/output split
// (the fake model always predicts token 5 after the prompt).
TEST(EnginePenalties, PresencePenaltyAndLogitBiasSeeTheRightTokens) {
  auto model = std::make_shared<FakeModel>(16, [](int32_t, int32_t) { return 5; });
  EngineConfig cfg;
  cfg.num_kv_blocks = 16;
  auto e = make_engine(model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  auto run = [&](const std::string& id, std::vector<int32_t> prompt, auto tweak) {
    Collector c;
    GenerationRequest r = greedy_request(id, std::move(prompt), 3);
    tweak(r.params);
    EXPECT_TRUE((*e)->submit(r, c.callback()).is_ok());
    c.wait(1);
    return c.results()[id].samples[0].tokens;
  };
  EXPECT_EQ(run("plain", {5, 5}, [](SamplingParams&) {}), (std::vector<int32_t>{5, 5, 5}));
  // Token 5 in the prompt is not penalized; once generated it is (10 - 20 < 1).
  auto pen = run("pres", {5, 5}, [](SamplingParams& p) { p.presence_penalty = 20; });
  ASSERT_EQ(pen.size(), 3u);
  EXPECT_EQ(pen[0], 5);
  EXPECT_NE(pen[1], 5);
  EXPECT_NE(pen[2], 5);
  // The repetition penalty does count the prompt: 10 / 20 = 0.5 < the other logits' max.
  auto rep = run("rep", {5}, [](SamplingParams& p) { p.repetition_penalty = 20; });
  EXPECT_NE(rep[0], 5);
  auto bias = run("bias", {2}, [](SamplingParams& p) { p.logit_bias = {{9, 50.0f}}; });
  EXPECT_EQ(bias, (std::vector<int32_t>{9, 9, 9}));
  EXPECT_EQ((*e)->stats().kv_blocks_used, 0);
}

}  // namespace
}  // namespace r1::engine
