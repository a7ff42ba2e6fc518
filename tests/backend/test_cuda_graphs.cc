// Recorded decode steps (CUDA graphs) and GPU-generated dummy weights:
// - fill_random on the GPU gives exactly core/random.h's host values;
// - a model loaded with --load-format dummy on the GPU (weights made there)
//   gives the CPU's logits for the same seed (F32 validation mode, strict);
// - batched decode with recorded steps gives the same logits as the same steps
//   issued op by op, across block boundaries and growing contexts, and the
//   recordings are really replayed. Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include <gtest/gtest.h>

#include "backend/cuda/cuda_backend.h"
#include "core/random.h"
#include "model/model.h"

namespace r1::model {
namespace {

const std::string kModels = std::string(R1_TEST_DATA_DIR) + "/models/";

class CudaGraphs : public ::testing::Test {
 protected:
  void SetUp() override {
    if (backend::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

double max_rel_err(const std::vector<float>& a, const std::vector<float>& ref) {
  double mean = 0, sq = 0, err = 0;
  for (float v : ref) mean += v;
  mean /= static_cast<double>(ref.size());
  for (float v : ref) sq += (v - mean) * (v - mean);
  const double sd = std::sqrt(sq / static_cast<double>(ref.size()));
  for (size_t i = 0; i < ref.size(); ++i) err = std::max(err, std::fabs(double(a[i]) - ref[i]));
  return err / sd;
}

TEST_F(CudaGraphs, FillRandomMatchesHost) {
  auto be = backend::make_cuda_backend(0, 0.1);
  const RandomFill fills[] = {{random_stream(7, "a.weight"), 0.0383f, 0.0f},
                              {random_stream(0, "norm"), 0.1f, 1.0f},
                              {0xffffffffffffffffull, 1.7320508f, 0.0f}};
  for (const RandomFill& f : fills) {
    for (DType dt : {DType::kBF16, DType::kF32}) {
      const int64_t n = 100003;
      Tensor d = be->alloc({n}, dt);
      be->fill_random(d, f);
      std::vector<uint8_t> got(static_cast<size_t>(n) * dtype_size(dt)), want(got.size());
      be->to_host(d, got.data());
      fill_random_host(want.data(), dt, n, f);
      EXPECT_EQ(got, want) << "fill " << f.state << " " << dtype_name(dt);
    }
  }
}

// Runs `steps` decode steps of B sequences after a prefill of each, returning
// every step's logits. Block size 4 so the steps cross blocks.
std::vector<std::vector<float>> decode_run(Model& m, int B, int steps, uint64_t seed) {
  const int64_t bs = 4, max_tokens = 96;
  const int64_t blocks_per_seq = max_tokens / bs;
  backend::KvCache cache = m.backend().alloc_kv_cache(m.kv_cache_spec(), B * blocks_per_seq, bs);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  const int32_t V = static_cast<int32_t>(m.config().vocab_size);
  std::vector<std::vector<int32_t>> toks(static_cast<size_t>(B));
  // Sequence s owns blocks s, s + B, s + 2B, ... (interleaved, so tables matter).
  auto table_row = [&](int s, int64_t n_blocks) {
    std::vector<int32_t> row;
    for (int64_t k = 0; k < n_blocks; ++k) row.push_back(static_cast<int32_t>(s + k * B));
    return row;
  };
  std::vector<std::vector<float>> out;
  std::vector<float> logits;
  for (int s = 0; s < B; ++s) {  // prefill, one sequence at a time (not recorded)
    const int len = 3 + 7 * s % 19;
    backend::BatchInfo b;
    for (int p = 0; p < len; ++p) {
      toks[static_cast<size_t>(s)].push_back(
          static_cast<int32_t>(rng() % static_cast<uint32_t>(V)));
      b.token_ids.push_back(toks[static_cast<size_t>(s)].back());
      b.positions.push_back(p);
      b.slot_mapping.push_back(static_cast<int32_t>((s + (p / bs) * B) * bs + p % bs));
    }
    const int64_t nb = (len + bs - 1) / bs;
    b.query_start = {0, len};
    b.context_lens = {len};
    b.block_tables = table_row(s, nb);
    b.max_blocks_per_seq = static_cast<int32_t>(nb);
    b.logits_indices = {len - 1};
    m.forward(b, cache, logits);
    toks[static_cast<size_t>(s)].push_back(
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
  }
  for (int step = 0; step < steps; ++step) {
    backend::BatchInfo b;
    int64_t mb = 1;
    for (int s = 0; s < B; ++s)
      mb = std::max<int64_t>(mb, (toks[static_cast<size_t>(s)].size() + bs - 1) / bs);
    b.max_blocks_per_seq = static_cast<int32_t>(mb);
    b.query_start.push_back(0);
    for (int s = 0; s < B; ++s) {
      const auto& t = toks[static_cast<size_t>(s)];
      const int32_t p = static_cast<int32_t>(t.size()) - 1;
      b.token_ids.push_back(t.back());
      b.positions.push_back(p);
      b.slot_mapping.push_back(static_cast<int32_t>((s + (p / bs) * B) * bs + p % bs));
      b.query_start.push_back(s + 1);
      b.context_lens.push_back(p + 1);
      std::vector<int32_t> row = table_row(s, (p + bs) / bs);
      row.resize(static_cast<size_t>(mb), -1);
      b.block_tables.insert(b.block_tables.end(), row.begin(), row.end());
      b.logits_indices.push_back(s);
    }
    m.forward(b, cache, logits);
    out.push_back(logits);
    for (int s = 0; s < B; ++s) {
      const float* row = logits.data() + static_cast<size_t>(s) * V;
      toks[static_cast<size_t>(s)].push_back(
          static_cast<int32_t>(std::max_element(row, row + V) - row));
    }
  }
  return out;
}

class CudaGraphModels : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (backend::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

// Reference: eager steps with programmatic dependent launch off (every kernel
// waits for the one before). Recorded steps and eager steps with it on must
// give the same logits (a kernel that read its inputs too early would not).
// The batch-1 paths (cuda_set_batch1_paths, on by default) run off at B = 1 and 3 too,
// and at B = 1 every one-token GEMV triggers the next kernel before its wait.
TEST_P(CudaGraphModels, RecordedDecodeEqualsEager) {
  // B = 24: the MoE models' routed pairs pass the expert GEMVs' limit (the tensor-core path).
  // Negative: the paths off; 1000 + B: every GEMV triggering first; then the defaults.
  for (int cfg : {-1, -3, 1001, 1, 3, 8, 24}) {
    const int B = cfg < 0 ? -cfg : cfg % 1000;
    const bool paths = cfg > 0, all_first = cfg > 1000;
    std::vector<std::vector<float>> eager, graphed, eager_pdl;
    for (int run = 0; run < 3; ++run) {
      const bool graphs = run == 1, pdl = run > 0;
      auto be = backend::make_cuda_backend(0, 0.3);
      backend::cuda_set_batch1_paths(*be, paths);
      if (all_first) backend::cuda_set_trigger_first(*be, 1, 15);
      backend::cuda_set_pdl(*be, pdl);
      backend::cuda_set_graphs(*be, graphs);
      LoadOptions opt;
      opt.weight_dtype = WeightDType::kBF16;
      auto m = load_model_dir(kModels + GetParam(), *be, opt);
      ASSERT_TRUE(m.is_ok()) << m.status().to_string();
      (run == 0   ? eager
       : run == 1 ? graphed
                  : eager_pdl) = decode_run(**m, B, 24, 11 + static_cast<uint64_t>(B));
      backend::cuda_set_pdl(*be, true);
      if (all_first) backend::cuda_set_batch1_paths(*be, true);  // the defaults again
      if (all_first) backend::cuda_set_trigger_first(*be, 1, 0);
      const auto c = backend::cuda_graph_counts(*be);
      if (graphs) {
        std::printf("  %s B=%d: %lld replays, %lld captures, %lld warm-ups, %lld failures\n",
                    GetParam().c_str(), B, static_cast<long long>(c.replays),
                    static_cast<long long>(c.captures), static_cast<long long>(c.warmups),
                    static_cast<long long>(c.failures));
        EXPECT_GE(c.captures, 1) << "B=" << B;
        EXPECT_GE(c.replays, 10) << "B=" << B;
        EXPECT_EQ(c.failures, 0) << "B=" << B;
      } else {
        EXPECT_EQ(c.replays + c.captures + c.warmups, 0);
      }
    }
    ASSERT_EQ(eager.size(), graphed.size());
    ASSERT_EQ(eager.size(), eager_pdl.size());
    double worst = 0, worst_pdl = 0;
    for (size_t i = 0; i < eager.size(); ++i) {
      worst = std::max(worst, max_rel_err(graphed[i], eager[i]));
      worst_pdl = std::max(worst_pdl, max_rel_err(eager_pdl[i], eager[i]));
    }
    std::printf(
        "  %s B=%d%s: recorded vs eager max|err|/std = %.2e, eager with PDL vs without %.2e over "
        "%zu steps\n",
        GetParam().c_str(), B,
        all_first ? " (every GEMV triggering first)"
        : paths   ? ""
                  : " (batch-1 paths off)",
        worst, worst_pdl, eager.size());
    EXPECT_LE(worst, 1e-3) << GetParam() << " cfg=" << cfg;
    EXPECT_LE(worst_pdl, 1e-3) << GetParam() << " cfg=" << cfg;
  }
}

// More step shapes than the backend keeps recordings for: the least recently
// used is dropped and the new shape recorded, with the eager steps' logits. Four
// batch sizes (four shapes) under a cap of 2 evict from the third run on.
TEST_F(CudaGraphs, RecordingsPastTheCapDropTheLeastRecentlyUsed) {
  const int Bs[] = {1, 3, 24, 2};
  std::vector<std::vector<std::vector<float>>> runs[2];
  for (int graphs = 0; graphs < 2; ++graphs) {
    auto be = backend::make_cuda_backend(0, 0.3);
    backend::cuda_set_graphs(*be, graphs == 1);
    backend::cuda_set_max_recordings(*be, 2);
    LoadOptions opt;
    opt.weight_dtype = WeightDType::kBF16;
    auto m = load_model_dir(kModels + "deepseek_v3_tiny", *be, opt);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    for (int B : Bs) runs[graphs].push_back(decode_run(**m, B, 8, 5 + static_cast<uint64_t>(B)));
    const auto c = backend::cuda_graph_counts(*be);
    if (graphs == 1) {
      std::printf("  cap 2: %lld replays, %lld captures, %lld evictions, %lld failures\n",
                  static_cast<long long>(c.replays), static_cast<long long>(c.captures),
                  static_cast<long long>(c.evictions), static_cast<long long>(c.failures));
      EXPECT_GE(c.evictions, 2);
      EXPECT_GE(c.captures, 4);
      EXPECT_GE(c.replays, 4 * 5);
      EXPECT_EQ(c.failures, 0);
    }
  }
  for (size_t r = 0; r < runs[0].size(); ++r) {
    ASSERT_EQ(runs[0][r].size(), runs[1][r].size());
    for (size_t i = 0; i < runs[0][r].size(); ++i)
      EXPECT_LE(max_rel_err(runs[1][r][i], runs[0][r][i]), 1e-3) << "run " << r << " step " << i;
  }
}

// Dummy weights made on the GPU equal the host's: the GPU's logits in its F32
// validation mode match the CPU's for the same seed.
TEST_P(CudaGraphModels, DummyWeightsOnGpuGiveCpuLogits) {
  std::vector<float> ref, got;
  for (int gpu : {0, 1}) {
    auto be = gpu ? backend::make_cuda_backend(0, 0.3, /*f32_activations=*/true)
                  : backend::make_cpu_backend(0);
    LoadOptions opt;
    opt.weight_dtype = WeightDType::kBF16;
    auto m = load_model_dir(kModels + GetParam(), *be, opt, /*dummy=*/true, /*seed=*/5);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    backend::KvCache cache = be->alloc_kv_cache((*m)->kv_cache_spec(), 8, 16);
    backend::BatchInfo b;
    for (int p = 0; p < 20; ++p) {
      b.token_ids.push_back((p * 37 + 11) % static_cast<int32_t>((*m)->config().vocab_size));
      b.positions.push_back(p);
      b.slot_mapping.push_back(p);
      b.logits_indices.push_back(p);
    }
    b.query_start = {0, 20};
    b.context_lens = {20};
    b.block_tables = {0, 1};
    b.max_blocks_per_seq = 2;
    (*m)->forward(b, cache, gpu ? got : ref);
  }
  const double err = max_rel_err(got, ref);
  std::printf("  %s dummy weights, GPU (F32 mode) vs CPU: max|err|/std = %.2e\n",
              GetParam().c_str(), err);
  EXPECT_LE(err, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, CudaGraphModels,
                         ::testing::Values("deepseek_v3_tiny", "deepseek_v2_lite_tiny",
                                           "qwen2_tiny", "llama_tiny"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace r1::model
