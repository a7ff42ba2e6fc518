// Sampler: logits processing and sampling for one sequence.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace r1::engine {

void seed_rng(std::mt19937_64& rng, const std::optional<uint64_t>& seed, int32_t index) {
  if (seed) {
    std::seed_seq seq{static_cast<uint32_t>(*seed), static_cast<uint32_t>(*seed >> 32),
                      static_cast<uint32_t>(index)};
    rng.seed(seq);
  } else {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    rng.seed(seq);
  }
}

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Descending by value, ties to the lower id (deterministic).
struct ByValueDesc {
  const float* v;
  bool operator()(int32_t a, int32_t b) const { return v[a] > v[b] || (v[a] == v[b] && a < b); }
};

}  // namespace

SampleResult Sampler::sample(const float* logits, int32_t V, const SamplingParams& p,
                             const std::vector<int32_t>& tokens, int32_t num_prompt_tokens,
                             const std::vector<int32_t>& stop_ids, std::mt19937_64& rng) {
  const int32_t num_output = static_cast<int32_t>(tokens.size()) - num_prompt_tokens;
  if (plain_greedy(p, num_output, !stop_ids.empty())) {
    // Plain greedy: no processed copy of the logits is needed.
    SampleResult r;
    r.token = static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
    return r;
  }
  x_.assign(logits, logits + V);
  float* x = x_.data();
  for (const auto& [id, bias] : p.logit_bias)
    if (id >= 0 && id < V) x[id] += bias;

  const bool rep = p.repetition_penalty != 1.0f;
  const bool pres_freq = p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
  if (rep || pres_freq) {
    counts_.assign(static_cast<size_t>(V), 0);
    seen_.assign(static_cast<size_t>(V), 0);
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int32_t t = tokens[i];
      if (t < 0 || t >= V) continue;
      seen_[static_cast<size_t>(t)] = 1;
      if (static_cast<int32_t>(i) >= num_prompt_tokens) ++counts_[static_cast<size_t>(t)];
    }
    for (int32_t t = 0; t < V; ++t) {
      if (rep && seen_[static_cast<size_t>(t)])
        x[t] = x[t] > 0 ? x[t] / p.repetition_penalty : x[t] * p.repetition_penalty;
      const int32_t c = counts_[static_cast<size_t>(t)];
      if (pres_freq && c > 0)
        x[t] -= p.frequency_penalty * static_cast<float>(c) + p.presence_penalty;
    }
  }
  if (num_output < p.min_tokens)
    for (int32_t t : stop_ids)
      if (t >= 0 && t < V) x[t] = kNegInf;

  SampleResult r;
  if (p.temperature < 1e-5f) {
    r.token = static_cast<int32_t>(std::max_element(x, x + V) - x);
  } else {
    const float inv_t = 1.0f / p.temperature;
    for (int32_t t = 0; t < V; ++t) x[t] *= inv_t;
    const bool use_top_k = p.top_k > 0 && p.top_k < V;
    const bool need_sorted = use_top_k || p.top_p < 1.0f;
    idx_.resize(static_cast<size_t>(V));
    std::iota(idx_.begin(), idx_.end(), 0);
    size_t n = static_cast<size_t>(V);
    if (use_top_k) {
      n = static_cast<size_t>(p.top_k);
      std::partial_sort(idx_.begin(), idx_.begin() + static_cast<ptrdiff_t>(n), idx_.end(),
                        ByValueDesc{x});
    } else if (need_sorted) {
      std::sort(idx_.begin(), idx_.end(), ByValueDesc{x});
    }
    float mx = kNegInf;
    for (size_t i = 0; i < n; ++i) mx = std::max(mx, x[idx_[i]]);
    // Probabilities (unnormalized) of the candidates, in place of x.
    double total = 0;
    std::vector<double> prob(n);
    for (size_t i = 0; i < n; ++i) {
      prob[i] = std::exp(static_cast<double>(x[idx_[i]] - mx));
      total += prob[i];
    }
    if (p.min_p > 0.0f) {
      // The top probability is exp(0) / total.
      const double cut = static_cast<double>(p.min_p);
      for (size_t i = 0; i < n; ++i)
        if (prob[i] < cut) prob[i] = 0;  // prob[i]/total < min_p * (1/total)
      total = std::accumulate(prob.begin(), prob.end(), 0.0);
    }
    if (p.top_p < 1.0f) {
      // Sorted candidates: keep the smallest prefix whose mass reaches top_p.
      double cum = 0;
      size_t keep = 0;
      for (; keep < n; ++keep) {
        cum += prob[keep];
        if (cum >= static_cast<double>(p.top_p) * total) {
          ++keep;
          break;
        }
      }
      for (size_t i = keep; i < n; ++i) prob[i] = 0;
      total = std::accumulate(prob.begin(), prob.end(), 0.0);
    }
    const double u = uniform(rng) * total;
    double cum = 0;
    r.token = -1;
    for (size_t i = 0; i < n; ++i) {
      if (prob[i] <= 0) continue;
      cum += prob[i];
      r.token = idx_[i];
      if (u < cum) break;
    }
    if (r.token < 0) r.token = static_cast<int32_t>(std::max_element(x, x + V) - x);
  }

  if (p.logprobs >= 0) {
    // Log-softmax of the model's raw logits (before bias, penalties and
    // temperature), as OpenAI-compatible servers report them.
    float mx = *std::max_element(logits, logits + V);
    double sum = 0;
    for (int32_t t = 0; t < V; ++t) sum += std::exp(static_cast<double>(logits[t] - mx));
    const float lse = mx + static_cast<float>(std::log(sum));
    TokenLogprob lp{r.token, logits[r.token] - lse, {}};
    const int32_t k = std::min(p.logprobs, V);
    if (k > 0) {
      idx_.resize(static_cast<size_t>(V));
      std::iota(idx_.begin(), idx_.end(), 0);
      std::partial_sort(idx_.begin(), idx_.begin() + k, idx_.end(), ByValueDesc{logits});
      for (int32_t i = 0; i < k; ++i)
        lp.top.push_back(
            {idx_[static_cast<size_t>(i)], logits[idx_[static_cast<size_t>(i)]] - lse});
    }
    r.logprob = std::move(lp);
  }
  return r;
}

}  // namespace r1::engine
