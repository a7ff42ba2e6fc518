// cpu_bench: the CPU backend against its ceilings, measured in the same run.
//   read bandwidth with the backend's own pool -> decode roofline (tokens/s =
//   bandwidth / weight bytes per token); FMA peak -> prefill efficiency.
// The machine is shared and noisy, so the batch-1 figure is taken in rounds,
// each one bracketed by a bandwidth measurement just before and just after
// it; the report gives the median fraction and its spread.
// Usage: cpu_bench CONFIG.json [--threads N] [--decode-tokens N] [--prompt N]
//        [--prefill N] [--batches 1,4,16] [--rounds N] [--dtype bf16|f32|int8]
//        [--profile B]   (per-op times of a decode step at batch B, and of the prefill)
// Model weights are random (RandomWeights), bf16 by default; int8 is the
// weight-only int8 of `--quantization int8` (quantized from the bf16 values).
#include <algorithm>
#include <chrono>
#include <cmath>
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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

// Read bandwidth: the pool streams a buffer in 1 MiB chunks handed out like
// the gemm's row blocks, so a descheduled thread slows this as it slows a
// decode step. Best of `reps`. Two sizes are used: 1 GiB (DRAM, far above the
// L3), and the bytes one decoded token reads (what a perfect decode step
// would see, L3 hits included: this machine's L3 is 300 MiB).
struct Bandwidth {
  std::vector<float> buf;
  explicit Bandwidth(double bytes)
      : buf(static_cast<size_t>(std::ceil(bytes / (1 << 20))) * (1 << 18), 1.0f) {}
  double measure(backend::cpu::CpuBackend& be, int reps) {
    const int64_t n = static_cast<int64_t>(buf.size()), chunk = (1 << 20) / 4;
    std::vector<float> sinks(static_cast<size_t>(n / chunk));
    double best = 0;
    for (int rep = 0; rep < reps; ++rep) {
      auto t0 = Clock::now();
      be.pool().parallel_for(n / chunk, 1, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c)
          sinks[static_cast<size_t>(c)] = be.kernels().stream_read(buf.data() + c * chunk, chunk);
      });
      best = std::max(best, static_cast<double>(n) * 4 / seconds_since(t0));
    }
    return best;
  }
};

struct Spread {
  std::vector<double> v;
  void add(double x) { v.push_back(x); }
  double med() const { return median(v); }
  double lo() const { return *std::min_element(v.begin(), v.end()); }
  double hi() const { return *std::max_element(v.begin(), v.end()); }
};

double measure_fma_peak(backend::cpu::CpuBackend& be) {
  const int threads = be.pool().num_threads();
  std::vector<double> flops(static_cast<size_t>(threads));
  std::vector<float> sinks(static_cast<size_t>(threads));
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = Clock::now();
    be.pool().run_on_all([&](int t) {
      flops[static_cast<size_t>(t)] =
          be.kernels().fma_peak(10'000'000, &sinks[static_cast<size_t>(t)]);
    });
    best = std::max(best, std::accumulate(flops.begin(), flops.end(), 0.0) / seconds_since(t0));
  }
  return best;
}

// Matrix parameters one token multiplies with (lm_head included), and the
// share of them in routed experts, from the config alone (so int8 and bf16
// runs count the same FLOPs).
struct ParamCount {
  double per_token = 0;   // active matrix parameters per token
  double lm_head = 0;     // of which the lm_head
  double per_expert = 0;  // one routed expert
  int64_t moe_layers = 0;
};

ParamCount count_params(const io::ModelConfig& c) {
  ParamCount p;
  const double H = static_cast<double>(c.hidden_size), V = static_cast<double>(c.vocab_size);
  p.lm_head = V * H;
  p.per_token = p.lm_head;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    double attn = 0;
    const double nh = static_cast<double>(c.num_heads);
    if (c.is_mla()) {
      const double r = static_cast<double>(c.kv_lora_rank),
                   qk = static_cast<double>(c.qk_head_dim());
      attn += c.q_lora_rank > 0 ? H * c.q_lora_rank + c.q_lora_rank * nh * qk : H * nh * qk;
      attn += H * (r + c.qk_rope_head_dim);
      attn += nh * c.qk_nope_head_dim * r + nh * r * c.v_head_dim;  // absorbed uk, uv
      attn += nh * c.v_head_dim * H;
    } else {
      const double d = static_cast<double>(c.head_dim);
      attn += H * d * (2 * nh + 2 * static_cast<double>(c.num_kv_heads));
    }
    double ffn = 0;
    if (c.is_moe_layer(l)) {
      const double mi = static_cast<double>(c.moe_intermediate_size);
      p.per_expert = 3 * H * mi;
      ffn = p.per_expert * static_cast<double>(c.num_experts_per_tok + c.n_shared_experts) +
            H * static_cast<double>(c.n_routed_experts);
      ++p.moe_layers;
    } else {
      ffn = 3 * H * static_cast<double>(c.intermediate_size);
    }
    p.per_token += attn + ffn;
  }
  return p;
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

// Prompt of `prompt` tokens per sequence, then `steps` greedy decode steps of
// the whole batch; returns decode tokens/s.
double run_decode(model::Model& m, int B, int prompt, int steps,
                  backend::cpu::CpuBackend* profile = nullptr) {
  const int64_t V = m.config().vocab_size;
  MultiSequence ms(m, B, prompt + steps + 1);
  std::vector<std::vector<int32_t>> toks(static_cast<size_t>(B));
  for (int s = 0; s < B; ++s)
    for (int i = 0; i < prompt; ++i)
      toks[static_cast<size_t>(s)].push_back(static_cast<int32_t>((s * 7919 + i * 104729) % V));
  auto logits = ms.step(toks);
  if (profile != nullptr) profile->set_profiling(true);  // decode steps only
  auto td = Clock::now();
  for (int step = 0; step < steps; ++step) {
    for (int s = 0; s < B; ++s) {
      const float* l = logits.data() + static_cast<int64_t>(s) * V;
      toks[static_cast<size_t>(s)] = {static_cast<int32_t>(std::max_element(l, l + V) - l)};
    }
    logits = ms.step(toks);
  }
  const double dt = seconds_since(td);
  if (profile != nullptr) profile->set_profiling(false);
  return static_cast<double>(B) * steps / dt;
}

void print_profile(backend::cpu::CpuBackend& be, int tokens) {
  auto prof = be.take_profile();
  std::vector<std::pair<std::string, backend::cpu::CpuBackend::OpStat>> rows(prof.begin(),
                                                                             prof.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  double total = 0;
  for (const auto& r : rows) total += r.second.seconds;
  std::printf("profile (per step, %d steps): %.2f ms in ops\n", tokens, total / tokens * 1e3);
  std::printf("  %-32s %8s %9s %6s %9s %8s\n", "op", "calls", "ms", "share", "MB", "GB/s");
  for (const auto& [name, st] : rows) {
    std::printf("  %-32s %8.1f %9.3f %5.1f%% %9.2f %8.1f\n", name.c_str(),
                static_cast<double>(st.calls) / tokens, st.seconds / tokens * 1e3,
                100.0 * st.seconds / total, st.bytes / tokens / 1e6,
                st.bytes > 0 ? st.bytes / st.seconds / 1e9 : 0.0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: cpu_bench CONFIG.json [--threads N] [--decode-tokens N] [--prompt N] "
                 "[--prefill N] [--batches 1,4,16] [--rounds N] [--dtype bf16|f32|int8] "
                 "[--profile B]\n");
    return 2;
  }
  std::string config = argv[1], batches_arg = "1,4,16", dtype = "bf16";
  int threads = 0, decode_tokens = 32, prompt = 16, prefill = 256, rounds = 5, profile = 0;
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
    else if (k == "--rounds")
      rounds = std::max(1, std::atoi(v.c_str()));
    else if (k == "--dtype")
      dtype = v;
    else if (k == "--profile")
      profile = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
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
  Bandwidth dram(1ull << 30);

  model::RandomWeights rw(*cfg, 1, dtype == "f32" ? DType::kF32 : DType::kBF16);
  model::LoadOptions opts;
  if (dtype == "int8") opts.weight_dtype = model::WeightDType::kInt8;
  auto t0 = Clock::now();
  auto loaded = model::load_model(*cfg, rw, be, opts);
  if (!loaded.is_ok()) {
    std::fprintf(stderr, "%s\n", loaded.status().to_string().c_str());
    return 1;
  }
  model::Model& m = **loaded;
  const double bytes = static_cast<double>(m.decode_weight_bytes());
  const ParamCount pc = count_params(*cfg);
  const double bytes_per_param = bytes / pc.per_token;
  std::printf(
      "model: %s (%s, %s weights), weights read per decoded token %.1f MB, "
      "%.1f M matrix params per token, load %.1f s\n",
      config.c_str(), io::arch_name(cfg->arch), dtype.c_str(), bytes / 1e6, pc.per_token / 1e6,
      seconds_since(t0));

  // Batch 1, in rounds bracketed by bandwidth measurements.
  Bandwidth footprint(bytes);
  run_decode(m, 1, prompt, 4);  // warm-up: page in the weights, size the scratch
  Spread bw_d, bw_f, tps1, frac_d, frac_f;
  for (int r = 0; r < rounds; ++r) {
    const double d0 = dram.measure(be, 2), f0 = footprint.measure(be, 2);
    const double tps = run_decode(m, 1, prompt, decode_tokens);
    const double d1 = dram.measure(be, 2), f1 = footprint.measure(be, 2);
    const double d = 0.5 * (d0 + d1), f = 0.5 * (f0 + f1);
    bw_d.add(d);
    bw_f.add(f);
    tps1.add(tps);
    frac_d.add(tps / (d / bytes));
    frac_f.add(tps / (f / bytes));
    std::printf(
        "round %d: read bandwidth 1 GiB %.1f / %.1f GB/s, %.0f MB %.1f / %.1f GB/s; decode "
        "batch 1 %.2f tokens/s -> %.0f%% / %.0f%% of the two rooflines\n",
        r, d0 / 1e9, d1 / 1e9, bytes / 1e6, f0 / 1e9, f1 / 1e9, tps, 100.0 * frac_d.v.back(),
        100.0 * frac_f.v.back());
    std::fflush(stdout);
  }
  std::printf(
      "decode batch 1 (median of %d rounds [min..max]): %.2f tokens/s [%.2f..%.2f]\n"
      "  DRAM read bandwidth (1 GiB) %.1f GB/s [%.1f..%.1f], roofline %.2f tokens/s, fraction "
      "%.2f [%.2f..%.2f]\n"
      "  footprint read bandwidth (%.0f MB) %.1f GB/s [%.1f..%.1f], roofline %.2f tokens/s, "
      "fraction %.2f [%.2f..%.2f]\n",
      rounds, tps1.med(), tps1.lo(), tps1.hi(), bw_d.med() / 1e9, bw_d.lo() / 1e9, bw_d.hi() / 1e9,
      bw_d.med() / bytes, frac_d.med(), frac_d.lo(), frac_d.hi(), bytes / 1e6, bw_f.med() / 1e9,
      bw_f.lo() / 1e9, bw_f.hi() / 1e9, bw_f.med() / bytes, frac_f.med(), frac_f.lo(), frac_f.hi());

  if (profile) {  // --profile B: per-op times of a decode at batch B
    const double tps = run_decode(m, profile, prompt, decode_tokens, &be);
    std::printf("profiled run at batch %d: %.2f tokens/s = %.2f ms per step\n", profile, tps,
                1e3 * profile / tps);
    print_profile(be, decode_tokens);
  }

  // Larger batches: roofline = min(bandwidth over the bytes the step reads,
  // FMA peak over the step's FLOPs). Routed experts touched under uniform
  // routing: E (1 - (1 - k/E)^B) per MoE layer.
  std::vector<int> batches;
  for (std::stringstream bs(batches_arg); bs.good();) {
    std::string item;
    std::getline(bs, item, ',');
    if (!item.empty() && std::atoi(item.c_str()) > 1) batches.push_back(std::atoi(item.c_str()));
  }
  // Each batch size in 3 rounds of up to 32 steps, each bracketed by the DRAM and FMA ceilings;
  // medians.
  for (int B : batches) {
    double step_bytes = bytes;
    if (pc.moe_layers > 0) {
      const double E = static_cast<double>(cfg->n_routed_experts);
      const double k = static_cast<double>(cfg->num_experts_per_tok);
      const double touched = E * (1 - std::pow(1 - k / E, B));
      step_bytes += (touched - k) * pc.per_expert * bytes_per_param * pc.moe_layers;
    }
    Spread tps, bwb, peak, frac;
    for (int r = 0; r < 3; ++r) {
      const double p0 = measure_fma_peak(be), d0 = dram.measure(be, 2);
      tps.add(run_decode(m, B, prompt, std::clamp(decode_tokens / 2, 4, 32)));
      peak.add(0.5 * (p0 + measure_fma_peak(be)));
      bwb.add(0.5 * (d0 + dram.measure(be, 2)));
      frac.add(tps.v.back() /
               std::min(B * bwb.v.back() / step_bytes, peak.v.back() / (2 * pc.per_token)));
    }
    const double mem_roof = B * bwb.med() / step_bytes, fma_roof = peak.med() / (2 * pc.per_token);
    std::printf(
        "decode batch %3d: %8.2f tokens/s [%.2f..%.2f]; roofline %.1f tokens/s (%s-bound: memory "
        "%.1f at %.1f GB/s for %.0f MB, FMA %.1f at %.1f GFLOP/s) -> fraction %.2f [%.2f..%.2f]\n",
        B, tps.med(), tps.lo(), tps.hi(), std::min(mem_roof, fma_roof),
        mem_roof < fma_roof ? "memory" : "FMA", mem_roof, bwb.med() / 1e9, step_bytes / 1e6,
        fma_roof, peak.med() / 1e9, frac.med(), frac.lo(), frac.hi());
    std::fflush(stdout);
  }
  if (prefill > 0) {
    model::SingleSequence seq(m, prefill + 1);
    std::vector<int32_t> toks(static_cast<size_t>(prefill));
    for (int i = 0; i < prefill; ++i)
      toks[static_cast<size_t>(i)] = static_cast<int32_t>((i * 104729) % cfg->vocab_size);
    const double peak0 = measure_fma_peak(be);
    be.set_profiling(profile != 0);
    auto tp = Clock::now();
    seq.append(toks, false);
    const double dt = seconds_since(tp);
    be.set_profiling(false);
    const double peak = 0.5 * (peak0 + measure_fma_peak(be));
    // Model FLOPs: 2 x matrix params per token (lm_head for the last row only);
    // attention scores are not counted.
    const double flops = 2.0 * (pc.per_token - pc.lm_head) * prefill + 2.0 * pc.lm_head;
    std::printf(
        "prefill %d tokens: %.2f s = %.0f tokens/s, %.1f GFLOP/s vs FMA peak %.1f "
        "GFLOP/s -> %.0f%%\n",
        prefill, dt, prefill / dt, flops / dt / 1e9, peak / 1e9, 100.0 * flops / dt / peak);
    if (profile) {
      std::printf("prefill ");
      print_profile(be, 1);
    }
  }
  return 0;
}
