// cpu_bench: the CPU backend against its ceilings, measured in the same run.
//   read bandwidth with the backend's threads -> decode roofline (tokens/s =
//   bandwidth / weight bytes per token); FMA peak -> prefill efficiency.
// Usage: cpu_bench CONFIG.json [--threads N] [--decode-tokens N] [--prompt N]
//        [--prefill N] [--batches 1,2,4,8] [--dtype bf16|f32]
// Model weights are random (RandomWeights), bf16 by default.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "io/model_config.h"
#include "model/model.h"
#include "model/single_sequence.h"

using namespace r1;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Read bandwidth: every thread streams its own slice of a 1 GiB buffer; best of 5.
double measure_read_bandwidth(backend::cpu::CpuBackend& be) {
  const int64_t n = (1ll << 30) / 4;
  std::vector<float> buf(static_cast<size_t>(n), 1.0f);
  const int threads = be.pool().num_threads();
  std::vector<float> sinks(static_cast<size_t>(threads));
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = Clock::now();
    be.pool().run_on_all([&](int t) {
      const int64_t per = n / threads;
      sinks[static_cast<size_t>(t)] = be.kernels().stream_read(buf.data() + t * per, per);
    });
    best = std::max(best, static_cast<double>(n) * 4 / seconds_since(t0));
  }
  return best;
}

double measure_fma_peak(backend::cpu::CpuBackend& be) {
  const int threads = be.pool().num_threads();
  std::vector<double> flops(static_cast<size_t>(threads));
  std::vector<float> sinks(static_cast<size_t>(threads));
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = Clock::now();
    be.pool().run_on_all([&](int t) {
      flops[static_cast<size_t>(t)] =
          be.kernels().fma_peak(20'000'000, &sinks[static_cast<size_t>(t)]);
    });
    best = std::max(best, std::accumulate(flops.begin(), flops.end(), 0.0) / seconds_since(t0));
  }
  return best;
}

// Batch of B sequences decoding together (one token each per step).
struct MultiSequence {
  model::Model& m;
  backend::KvCache cache;
  int64_t block_size = 16, blocks_per_seq;
  std::vector<int64_t> lens;
  MultiSequence(model::Model& model, int64_t batch, int64_t max_len) : m(model) {
    blocks_per_seq = (max_len + block_size - 1) / block_size;
    cache =
        model.backend().alloc_kv_cache(model.kv_cache_spec(), batch * blocks_per_seq, block_size);
    lens.assign(static_cast<size_t>(batch), 0);
  }
  std::vector<float> step(const std::vector<std::vector<int32_t>>& toks) {
    backend::BatchInfo b;
    b.max_blocks_per_seq = static_cast<int32_t>(blocks_per_seq);
    b.query_start.push_back(0);
    for (size_t s = 0; s < toks.size(); ++s) {
      for (size_t i = 0; i < toks[s].size(); ++i) {
        const int64_t pos = lens[s] + static_cast<int64_t>(i);
        b.token_ids.push_back(toks[s][i]);
        b.positions.push_back(static_cast<int32_t>(pos));
        b.slot_mapping.push_back(static_cast<int32_t>(
            (static_cast<int64_t>(s) * blocks_per_seq + pos / block_size) * block_size +
            pos % block_size));
      }
      lens[s] += static_cast<int64_t>(toks[s].size());
      b.query_start.push_back(static_cast<int32_t>(b.token_ids.size()));
      b.context_lens.push_back(static_cast<int32_t>(lens[s]));
      for (int64_t k = 0; k < blocks_per_seq; ++k)
        b.block_tables.push_back(static_cast<int32_t>(s * blocks_per_seq + k));
      b.logits_indices.push_back(b.query_start.back() - 1);
    }
    std::vector<float> logits;
    m.forward(b, cache, logits);
    return logits;
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: cpu_bench CONFIG.json [--threads N] [--decode-tokens N] [--prompt N] "
                 "[--prefill N] [--batches 1,2,4] [--dtype bf16|f32]\n");
    return 2;
  }
  std::string config = argv[1], batches_arg = "1,2,4,8", dtype = "bf16";
  int threads = 0, decode_tokens = 64, prompt = 16, prefill = 512;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--threads")
      threads = std::atoi(v.c_str());
    else if (k == "--decode-tokens")
      decode_tokens = std::atoi(v.c_str());
    else if (k == "--prompt")
      prompt = std::atoi(v.c_str());
    else if (k == "--prefill")
      prefill = std::atoi(v.c_str());
    else if (k == "--batches")
      batches_arg = v;
    else if (k == "--dtype")
      dtype = v;
  }
  std::ifstream in(config);
  std::stringstream ss;
  ss << in.rdbuf();
  auto cfg = io::parse_model_config(ss.str(), config);
  if (!cfg.is_ok()) {
    std::fprintf(stderr, "%s\n", cfg.status().to_string().c_str());
    return 1;
  }
  backend::cpu::CpuBackend be(threads);
  std::printf("machine: %s, %d threads\n", be.kernels().isa, be.pool().num_threads());
  const double bw = measure_read_bandwidth(be);
  const double peak = measure_fma_peak(be);
  std::printf("ceilings: read bandwidth %.1f GB/s, FMA peak %.1f GFLOP/s\n", bw / 1e9, peak / 1e9);

  model::RandomWeights rw(*cfg, 1, dtype == "f32" ? DType::kF32 : DType::kBF16);
  auto t0 = Clock::now();
  auto loaded = model::load_model(*cfg, rw, be, model::LoadOptions{});
  if (!loaded.is_ok()) {
    std::fprintf(stderr, "%s\n", loaded.status().to_string().c_str());
    return 1;
  }
  model::Model& m = **loaded;
  const double bytes = static_cast<double>(m.decode_weight_bytes());
  std::printf("model: %s (%s), weights read per decoded token %.1f MB, load %.1f s\n",
              config.c_str(), io::arch_name(cfg->arch), bytes / 1e6, seconds_since(t0));
  const double roofline = bw / bytes;

  std::vector<int> batches;
  for (std::stringstream bs(batches_arg); bs.good();) {
    std::string item;
    std::getline(bs, item, ',');
    if (!item.empty()) batches.push_back(std::atoi(item.c_str()));
  }
  const int64_t V = cfg->vocab_size;
  for (int B : batches) {
    MultiSequence ms(m, B, prompt + decode_tokens + 1);
    std::vector<std::vector<int32_t>> toks(static_cast<size_t>(B));
    for (int s = 0; s < B; ++s)
      for (int i = 0; i < prompt; ++i)
        toks[static_cast<size_t>(s)].push_back(static_cast<int32_t>((s * 7919 + i * 104729) % V));
    auto logits = ms.step(toks);
    auto td = Clock::now();
    for (int step = 0; step < decode_tokens; ++step) {
      for (int s = 0; s < B; ++s) {
        const float* l = logits.data() + static_cast<int64_t>(s) * V;
        toks[static_cast<size_t>(s)] = {static_cast<int32_t>(std::max_element(l, l + V) - l)};
      }
      logits = ms.step(toks);
    }
    const double dt = seconds_since(td);
    const double tps = static_cast<double>(B) * decode_tokens / dt;
    std::printf("decode batch %3d: %8.1f tokens/s (%.2f ms/step)", B, tps,
                dt / decode_tokens * 1e3);
    if (B == 1)
      std::printf("  roofline %.1f tokens/s -> %.0f%% of roofline", roofline,
                  100.0 * tps / roofline);
    std::printf("\n");
  }
  {
    model::SingleSequence seq(m, prefill + 1);
    std::vector<int32_t> toks(static_cast<size_t>(prefill));
    for (int i = 0; i < prefill; ++i)
      toks[static_cast<size_t>(i)] = static_cast<int32_t>((i * 104729) % V);
    auto tp = Clock::now();
    seq.append(toks, false);
    const double dt = seconds_since(tp);
    // Model FLOPs: 2 x active parameters per token (lm_head once), attention ignored.
    const double active = (bytes - static_cast<double>(V * cfg->hidden_size * 2)) / 2.0;
    const double flops = 2.0 * active * prefill + 2.0 * static_cast<double>(V * cfg->hidden_size);
    std::printf("prefill %d tokens: %.2f s = %.0f tokens/s, %.1f GFLOP/s = %.0f%% of FMA peak\n",
                prefill, dt, prefill / dt, flops / dt / 1e9, 100.0 * flops / dt / peak);
  }
  return 0;
}
