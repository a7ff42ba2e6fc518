// Sampler: turns one row of logits into the next token of one sequence:
// logit_bias, repetition/presence/frequency penalties, min_tokens masking,
// then greedy or temperature + top_k + top_p + min_p sampling with the
// sequence's own RNG (so a seeded output never depends on the batch), and
// the logprobs of the raw distribution.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "engine/engine.h"

namespace r1::engine {

struct SampleResult {
  int32_t token = -1;
  std::optional<TokenLogprob> logprob;  // when params.logprobs >= 0
};

class Sampler {
 public:
  // `stop_ids`: tokens masked while min_tokens is not reached (EOS unless
  // ignore_eos, plus the request's stop_token_ids).
  SampleResult sample(const float* logits, int32_t vocab_size, const SamplingParams& params,
                      const std::vector<int32_t>& tokens, int32_t num_prompt_tokens,
                      const std::vector<int32_t>& stop_ids, std::mt19937_64& rng);

  // True when sample() would return the argmax of the raw logits and nothing
  // else (temperature 0, no bias, penalties, min_tokens masking or logprobs):
  // then the model may pick the token on its device.
  static bool plain_greedy(const SamplingParams& p, int32_t num_output, bool has_stop_ids) {
    return p.temperature < 1e-5f && p.logit_bias.empty() && p.repetition_penalty == 1.0f &&
           p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f && p.logprobs < 0 &&
           (num_output >= p.min_tokens || !has_stop_ids);
  }

  // A uniform double in [0, 1) from 53 bits of `rng` (portable, unlike
  // std::uniform_real_distribution).
  static double uniform(std::mt19937_64& rng) {
    return static_cast<double>(rng() >> 11) * 0x1.0p-53;
  }

 private:
  std::vector<float> x_;  // scratch
  std::vector<int32_t> idx_;
  std::vector<int32_t> counts_;
  std::vector<uint8_t> seen_;
};

// Seeds a sample's RNG: from the request seed and the sample index, or from
// std::random_device when there is no seed.
void seed_rng(std::mt19937_64& rng, const std::optional<uint64_t>& seed, int32_t index);

}  // namespace r1::engine
