// The CPU forward pass against transformers (float32, eager) on the tiny
// checkpoints of tests/data/models: logits at every position, greedy
// continuations, rope frequencies; and prefill == token-by-token decode ==
// chunked decode over a shuffled block table.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/npy.h"
#include "logit_stats.h"
#include "model/model.h"
#include "model/rope.h"
#include "model/single_sequence.h"

namespace r1::model {
namespace {

const std::string kModels = std::string(R1_TEST_DATA_DIR) + "/models/";

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return nlohmann::json::parse(f);
}

struct Loaded {
  std::unique_ptr<backend::Backend> be;
  std::unique_ptr<Model> model;
};

Loaded load(const std::string& name) {
  Loaded l;
  l.be = backend::make_cpu_backend(0);
  auto m = load_model_dir(kModels + name, *l.be, LoadOptions{});
  EXPECT_TRUE(m.is_ok()) << m.status().to_string();
  if (m.is_ok()) l.model = std::move(m).value();
  return l;
}

using teststats::stddev;

// Compares logits [n, V] against the reference with the tolerances:
// max |ours - ref| <= 1e-4 * std(ref), and the same argmax wherever the
// reference's top-2 margin exceeds 1e-3.
void expect_logits_match(const std::vector<float>& ours, const float* ref, int64_t n, int64_t V,
                         const std::string& what, double rel_tol = 1e-4) {
  ASSERT_EQ(ours.size(), static_cast<size_t>(n * V)) << what;
  const double sd = stddev(ref, static_cast<size_t>(n * V));
  double max_err = 0;
  int argmax_checked = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* r = ref + t * V;
    const float* o = ours.data() + t * V;
    for (int64_t v = 0; v < V; ++v) max_err = std::max(max_err, std::fabs(double(o[v]) - r[v]));
    std::vector<float> sorted(r, r + V);
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    if (sorted[0] - sorted[1] > 1e-3) {
      EXPECT_EQ(std::max_element(o, o + V) - o, std::max_element(r, r + V) - r)
          << what << " argmax at position " << t;
      ++argmax_checked;
    }
  }
  std::printf("  %-45s max|err|/std = %.2e (limit %.0e), argmax checked at %d/%lld\n", what.c_str(),
              max_err / sd, rel_tol, argmax_checked, static_cast<long long>(n));
  EXPECT_LE(max_err, rel_tol * sd) << what << ": max error " << max_err << ", std " << sd;
  EXPECT_GT(argmax_checked, n / 2) << what;
}

class ReferenceModel : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceModel, LogitsMatchTransformers) {
  const std::string name = GetParam();
  auto ref = read_json(kModels + name + "/reference.json");
  Loaded l = load(name);
  ASSERT_TRUE(l.model);
  const int64_t V = l.model->config().vocab_size;
  const auto& seqs = ref["sequences"];
  ASSERT_GE(seqs.size(), 3u);
  for (size_t k = 0; k < seqs.size(); ++k) {
    std::vector<int32_t> tokens = seqs[k].get<std::vector<int32_t>>();
    auto npy = read_npy(kModels + name + "/logits_" + std::to_string(k) + ".npy");
    ASSERT_TRUE(npy.is_ok()) << npy.status().to_string();
    ASSERT_EQ(npy->shape, (std::vector<int64_t>{static_cast<int64_t>(tokens.size()), V}));
    SingleSequence seq(*l.model, static_cast<int64_t>(tokens.size()));
    auto logits = seq.append(tokens, true);
    expect_logits_match(logits, npy->as<float>(), static_cast<int64_t>(tokens.size()), V,
                        name + " sequence " + std::to_string(k));
  }
}

TEST_P(ReferenceModel, GreedyContinuationsMatchTransformers) {
  const std::string name = GetParam();
  auto ref = read_json(kModels + name + "/reference.json");
  Loaded l = load(name);
  ASSERT_TRUE(l.model);
  const int64_t V = l.model->config().vocab_size;
  for (const auto& g : ref["greedy"]) {
    std::vector<int32_t> prompt = g["prompt"].get<std::vector<int32_t>>();
    std::vector<int32_t> expected = g["output"].get<std::vector<int32_t>>();
    ASSERT_FALSE(expected.empty());
    SingleSequence seq(*l.model, static_cast<int64_t>(prompt.size() + expected.size()));
    auto logits = seq.append(prompt, false);
    std::vector<int32_t> got;
    for (size_t i = 0; i < expected.size(); ++i) {
      int32_t next = static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + V) -
                                          logits.begin());
      got.push_back(next);
      if (i + 1 < expected.size()) logits = seq.append({next}, false);
    }
    EXPECT_EQ(got, expected) << name;
  }
}

TEST_P(ReferenceModel, PrefillEqualsTokenByTokenAndChunkedDecode) {
  const std::string name = GetParam();
  auto ref = read_json(kModels + name + "/reference.json");
  Loaded l = load(name);
  ASSERT_TRUE(l.model);
  const int64_t V = l.model->config().vocab_size;
  std::vector<int32_t> tokens = ref["sequences"][1].get<std::vector<int32_t>>();
  const int64_t n = static_cast<int64_t>(tokens.size());
  SingleSequence prefill(*l.model, n);
  auto full = prefill.append(tokens, true);
  SingleSequence one(*l.model, n, 4, /*shuffle_blocks=*/true);
  SingleSequence chunked(*l.model, n, 8, /*shuffle_blocks=*/true);
  std::vector<float> by_token, by_chunk;
  for (int64_t i = 0; i < n; ++i) {
    auto lg = one.append({tokens[static_cast<size_t>(i)]}, true);
    by_token.insert(by_token.end(), lg.begin(), lg.end());
  }
  for (int64_t i = 0; i < n; i += 7) {
    std::vector<int32_t> part(tokens.begin() + i, tokens.begin() + std::min(n, i + 7));
    auto lg = chunked.append(part, true);
    by_chunk.insert(by_chunk.end(), lg.begin(), lg.end());
  }
  expect_logits_match(by_token, full.data(), n, V, name + " token-by-token vs prefill", 1e-5);
  expect_logits_match(by_chunk, full.data(), n, V, name + " chunked vs prefill", 1e-5);
}

TEST_P(ReferenceModel, RopeFrequenciesMatchTransformers) {
  const std::string name = GetParam();
  auto ref = read_json(kModels + name + "/reference.json");
  if (!ref.contains("rope") || !ref["rope"].contains("inv_freq"))
    GTEST_SKIP() << "no rope reference";
  auto cfg = io::load_model_config(kModels + name);
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  const int64_t rot = cfg->is_mla() ? cfg->qk_rope_head_dim : cfg->head_dim;
  auto p = make_rope_params(*cfg, rot);
  auto expected = ref["rope"]["inv_freq"].get<std::vector<double>>();
  ASSERT_EQ(p.inv_freq.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_NEAR(p.inv_freq[i], expected[i], 1e-6 * std::fabs(expected[i]) + 1e-12)
        << name << " i=" << i;
  if (ref["rope"].contains("attention_scaling")) {
    EXPECT_NEAR(p.attention_factor, ref["rope"]["attention_scaling"].get<double>(), 1e-6);
  }
  if (ref["rope"].contains("softmax_scale")) {
    EXPECT_NEAR(cfg->attention_scale(), ref["rope"]["softmax_scale"].get<double>(), 1e-6);
  }
}

// Weight-only int8 (CPU): an approximation, so only loose agreement.
TEST(Int8Weights, StayCloseToTransformers) {
  for (const std::string name : {"deepseek_v3_tiny", "qwen2_tiny", "llama_tiny"}) {
    auto ref = read_json(kModels + name + "/reference.json");
    auto be = backend::make_cpu_backend(0);
    LoadOptions opt;
    opt.weight_dtype = WeightDType::kInt8;
    auto m = load_model_dir(kModels + name, *be, opt);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    std::vector<int32_t> tokens = ref["sequences"][0].get<std::vector<int32_t>>();
    auto npy = read_npy(kModels + name + "/logits_0.npy");
    ASSERT_TRUE(npy.is_ok());
    const int64_t V = (*m)->config().vocab_size, n = static_cast<int64_t>(tokens.size());
    SingleSequence seq(**m, n);
    auto logits = seq.append(tokens, true);
    const float* r = npy->as<float>();
    const double sd = stddev(r, static_cast<size_t>(n * V));
    double max_err = 0, sum_err = 0;
    int same = 0, checked = 0;
    for (int64_t t = 0; t < n; ++t) {
      const float* rt = r + t * V;
      const float* ot = logits.data() + t * V;
      for (int64_t v = 0; v < V; ++v) {
        max_err = std::max(max_err, std::fabs(double(ot[v]) - rt[v]));
        sum_err += std::fabs(double(ot[v]) - rt[v]);
      }
      std::vector<float> sorted(rt, rt + V);
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      if (sorted[0] - sorted[1] > 0.1 * sd) {
        ++checked;
        same += (std::max_element(ot, ot + V) - ot) == (std::max_element(rt, rt + V) - rt);
      }
    }
    const double mean_err = sum_err / static_cast<double>(n * V);
    std::printf("  int8 %-20s mean|err|/std = %.3f, max|err|/std = %.3f, argmax agreement %d/%d\n",
                name.c_str(), mean_err / sd, max_err / sd, same, checked);
    // The int8 weights must change the logits (they are quantized) but stay
    // close on average. The max is not bounded: in the tiny random MoE, expert
    // choices have margins of 1e-4, so a perturbation can swap an expert.
    EXPECT_GT(max_err, 1e-4 * sd) << name;
    EXPECT_LT(mean_err, 0.08 * sd) << name;
    EXPECT_GE(same, checked * 90 / 100) << name;
    // And a decoded token reads about half the bytes of the BF16 model.
    auto bf = load_model_dir(kModels + name, *be, LoadOptions{});
    ASSERT_TRUE(bf.is_ok());
    EXPECT_LT((*m)->decode_weight_bytes(), (*bf)->decode_weight_bytes() * 6 / 10) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(AllModels, ReferenceModel,
                         ::testing::Values("deepseek_v3_tiny", "deepseek_v3_fp8_tiny",
                                           "deepseek_v2_lite_tiny", "qwen2_tiny", "llama_tiny"));

}  // namespace
}  // namespace r1::model
