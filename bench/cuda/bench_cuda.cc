// GPU benchmark: measures the ceilings in the same run (device-to-device copy
// bandwidth counting read + write; cuBLAS BF16 GEMM 8192^3 on random data),
// then drives Model::forward on the CUDA backend with fast dummy weights
// (random BF16 values drawn from one shared pool): decode at batch 1/32/128,
// prefill 16 x 512, for the configs in bench/configs. Prints a table and one
// JSON line per result. Usage: bench_cuda [config_dir ...]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_backend.h"
#include "model/model.h"
#include "model/weight_source.h"

namespace {

using namespace r1;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

#define CK(x)                                                                     \
  do {                                                                            \
    auto e_ = (x);                                                                \
    if (e_ != 0) {                                                                \
      std::fprintf(stderr, "%s failed (%d) at line %d\n", #x, int(e_), __LINE__); \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)

// Fills n BF16 values uniform in [-a, a) with several threads.
void fill_bf16(uint16_t* p, size_t n, float a, uint64_t seed) {
  const unsigned nt = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> th;
  for (unsigned i = 0; i < nt; ++i)
    th.emplace_back([=] {
      uint64_t s = seed * 0x9E3779B97F4A7C15ull + i + 1;
      const size_t b = n * i / nt, e = n * (i + 1) / nt;
      for (size_t k = b; k < e; ++k) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const float u = static_cast<float>(s >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
        p[k] = f32_to_bf16(u * a);
      }
    });
  for (auto& t : th) t.join();
}

double hbm_copy_tbps() {
  const size_t bytes = size_t{2} << 30;
  void *a = nullptr, *b = nullptr;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  CK(cudaMemset(a, 1, bytes));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> t;
  for (int i = 0; i < 12; ++i) {
    cudaEventRecord(e0);
    CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i >= 2) t.push_back(ms);
  }
  cudaFree(a);
  cudaFree(b);
  return 2.0 * static_cast<double>(bytes) / (median(t) * 1e-3) / 1e12;
}

double gemm_tflops() {
  const int n = 8192;
  const size_t elems = size_t{n} * n;
  std::vector<uint16_t> h(elems);
  fill_bf16(h.data(), elems, 1.0f, 7);
  void *a, *b, *c;
  CK(cudaMalloc(&a, elems * 2));
  CK(cudaMalloc(&b, elems * 2));
  CK(cudaMalloc(&c, elems * 2));
  CK(cudaMemcpy(a, h.data(), elems * 2, cudaMemcpyHostToDevice));
  fill_bf16(h.data(), elems, 1.0f, 8);
  CK(cudaMemcpy(b, h.data(), elems * 2, cudaMemcpyHostToDevice));
  cublasHandle_t handle;
  CK(cublasCreate(&handle));
  const float alpha = 1.0f, beta = 0.0f;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> t;
  for (int i = 0; i < 15; ++i) {
    cudaEventRecord(e0);
    CK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, a, CUDA_R_16BF, n, b,
                    CUDA_R_16BF, n, &beta, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                    CUBLAS_GEMM_DEFAULT));
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i >= 3) t.push_back(ms);
  }
  cublasDestroy(handle);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  return 2.0 * n * double(n) * n / (median(t) * 1e-3) / 1e12;
}

// Dummy weights from one random pool: each tensor is a window of it.
class PoolWeights final : public model::WeightSource {
 public:
  explicit PoolWeights(const io::ModelConfig& cfg) {
    size_t max_numel = 0;
    for (const auto& s : model::tensor_inventory(cfg)) {
      int64_t n = 1;
      for (int64_t d : s.shape) n *= d;
      max_numel = std::max(max_numel, static_cast<size_t>(n));
      roles_[s.name] = s.role;
    }
    pool_size_ = max_numel + 4096;
    bf_.resize(pool_size_);
    fill_bf16(bf_.data(), pool_size_,
              std::sqrt(3.0f) / std::sqrt(static_cast<float>(cfg.hidden_size)), 1);
    f32_norm_.resize(1 << 20);
    f32_small_.resize(1 << 20);
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto& v : f32_norm_) v = 1.0f + 0.1f * u(rng);
    for (auto& v : f32_small_) v = 0.05f * u(rng);
  }
  std::optional<DType> stored_dtype(const std::string& name) const override {
    auto it = roles_.find(name);
    if (it == roles_.end()) return std::nullopt;
    return it->second == model::TensorRole::kBias || it->second == model::TensorRole::kRouterBias
               ? DType::kF32
               : DType::kBF16;
  }
  Result<Tensor> load(const std::string& name, const Shape& shape, DType want) const override {
    auto it = roles_.find(name);
    if (it == roles_.end()) return make_error(ErrorCode::kNotFound, "no tensor {}", name);
    const size_t n = static_cast<size_t>(shape.numel());
    if (want == DType::kF32) {
      if (n > f32_norm_.size()) {  // a matrix read as F32 (kv_b_proj): widen a window of the pool
        Tensor t = Tensor::empty(shape, DType::kF32);
        const size_t off = (std::hash<std::string>{}(name) % (pool_size_ - n + 1));
        for (size_t i = 0; i < n; ++i) t.data<float>()[i] = bf16_to_f32(bf_[off + i]);
        return t;
      }
      const auto& src = it->second == model::TensorRole::kNorm ? f32_norm_ : f32_small_;
      return Tensor::wrap(const_cast<float*>(src.data()), shape, DType::kF32, nullptr);
    }
    if (want != DType::kBF16) return make_error(ErrorCode::kUnsupported, "dtype for {}", name);
    const size_t off = (std::hash<std::string>{}(name) % (pool_size_ - n + 1)) / 8 * 8;
    return Tensor::wrap(const_cast<uint16_t*>(bf_.data() + off), shape, DType::kBF16, nullptr);
  }

 private:
  std::unordered_map<std::string, model::TensorRole> roles_;
  std::vector<uint16_t> bf_;
  size_t pool_size_ = 0;
  std::vector<float> f32_norm_, f32_small_;
};

struct Result1 {
  std::string model, what;
  double value;
  std::string unit;
  double ratio;
  std::string ratio_of;
};
std::vector<Result1> g_results;

void report(const Result1& r) {
  g_results.push_back(r);
  std::printf(
      "RESULT "
      "{\"model\":\"%s\",\"what\":\"%s\",\"value\":%.4g,\"unit\":\"%s\",\"ratio\":%.4f,\"of\":\"%"
      "s\"}\n",
      r.model.c_str(), r.what.c_str(), r.value, r.unit.c_str(), r.ratio, r.ratio_of.c_str());
  std::fflush(stdout);
}

// Batch of B sequences, each `len` new tokens after `ctx` cached ones.
backend::BatchInfo make_batch(int B, int ctx, int len, int block_size, int max_blocks,
                              bool all_logits) {
  backend::BatchInfo b;
  b.max_blocks_per_seq = max_blocks;
  b.query_start = {0};
  for (int s = 0; s < B; ++s) {
    for (int i = 0; i < len; ++i) {
      const int pos = ctx + i;
      b.token_ids.push_back((s * 7919 + pos * 31) % 1000);
      b.positions.push_back(pos);
      b.slot_mapping.push_back((s * max_blocks + pos / block_size) * block_size + pos % block_size);
      if (all_logits || i == len - 1)
        b.logits_indices.push_back(static_cast<int32_t>(b.positions.size() - 1));
    }
    b.query_start.push_back(static_cast<int32_t>(b.positions.size()));
    b.context_lens.push_back(ctx + len);
    for (int k = 0; k < max_blocks; ++k) b.block_tables.push_back(s * max_blocks + k);
  }
  return b;
}

void bench_model(const std::string& dir, double bw_tbps, double gemm_tf, bool full) {
  auto cfg_r = io::load_model_config(dir);
  if (!cfg_r.is_ok()) {
    std::fprintf(stderr, "%s\n", cfg_r.status().to_string().c_str());
    return;
  }
  const io::ModelConfig cfg = *cfg_r;
  const std::string name = dir.substr(dir.find_last_of('/') + 1);
  auto t0 = Clock::now();
  auto be = backend::make_cuda_backend(0, 0.92);
  std::unique_ptr<model::Model> m;
  {
    PoolWeights w(cfg);
    auto r = model::load_model(cfg, w, *be, model::LoadOptions{});
    if (!r.is_ok()) {
      std::fprintf(stderr, "load %s: %s\n", name.c_str(), r.status().to_string().c_str());
      return;
    }
    m = std::move(r).value();
  }
  be->synchronize();
  std::printf("# %s loaded in %.1f s on %s\n", name.c_str(), ms_since(t0) / 1000,
              be->name().c_str());
  const double wbytes = static_cast<double>(m->decode_weight_bytes());
  auto spec = m->kv_cache_spec();
  spec.dtype = DType::kBF16;
  const double kv_tok = static_cast<double>(spec.bytes_per_token());
  // Bytes a decode step must read at batch B: dense weights, lm_head, the
  // experts touched (expected distinct experts under uniform routing), the KV cache.
  auto step_bytes = [&](int B, int ctx) {
    double bytes = wbytes;
    if (cfg.n_routed_experts > 0) {
      const double E = static_cast<double>(cfg.n_routed_experts),
                   k = static_cast<double>(cfg.num_experts_per_tok);
      const double touched = E * (1.0 - std::pow(1.0 - k / E, B));
      const double per_expert = 3.0 * cfg.moe_intermediate_size * cfg.hidden_size * 2.0;
      int64_t moe_layers = 0;
      for (int64_t l = 0; l < cfg.num_layers; ++l) moe_layers += cfg.is_moe_layer(l);
      bytes += (touched - k) * per_expert * static_cast<double>(moe_layers);
    }
    return bytes + kv_tok * B * (ctx + 1);
  };
  const int bs = 16, ctx = 512;
  // R1_BENCH_QUICK=1: three eager batch-1 steps only (for a kernel profiler such as ncu).
  const bool quick = std::getenv("R1_BENCH_QUICK") != nullptr;
  if (quick) full = false;
  std::vector<int> batches = full ? std::vector<int>{1, 32, 128} : std::vector<int>{1};
  // R1_BENCH_BATCHES="2,8": these decode batch sizes instead (side-by-side runs).
  if (const char* e = std::getenv("R1_BENCH_BATCHES")) {
    batches.clear();
    for (const char* p = e; *p != '\0';) {
      char* end = nullptr;
      const long b = std::strtol(p, &end, 10);
      if (end == p) break;
      if (b > 0) batches.push_back(static_cast<int>(b));
      p = *end == ',' ? end + 1 : end;
    }
  }
  for (int B : batches) {
    const int steps = quick ? 3 : 24, max_blocks = (ctx + 24 + 8 + bs) / bs + 1;
    backend::KvCache cache = be->alloc_kv_cache(spec, static_cast<int64_t>(B) * max_blocks, bs);
    std::vector<float> logits;
    std::vector<int32_t> ids;
    // Decode as the engine runs greedy steps (tokens picked on the device); batch 1
    // also with recorded steps (CUDA graphs) off, and every batch once more with the
    // full logits downloaded (what a sampled step costs).
    // Batch 1 once more with programmatic dependent launch off (kernels then
    // start only after the one before them has finished).
    struct Mode {
      bool graphs, logits, pdl = true;
    };
    std::vector<Mode> modes = {{true, false}, {true, true}};
    if (B == 1) {
      modes.insert(modes.begin(), Mode{false, false});
      modes.push_back(Mode{true, false, false});
    }
    if (quick) modes = {{false, true}};
    for (const Mode& mode : modes) {
      const bool graphs = mode.graphs;
      backend::cuda_set_pdl(*be, mode.pdl);
      backend::cuda_set_graphs(*be, graphs);
      std::vector<double> t;
      for (int s = 0; s < steps; ++s) {
        auto b = make_batch(B, ctx + s, 1, bs, max_blocks, true);
        auto t1 = Clock::now();
        if (mode.logits)
          m->forward(b, cache, logits);
        else
          m->forward_argmax(b, cache, ids);
        if (s >= 4) t.push_back(ms_since(t1));
      }
      if (quick) return;
      if (B == 1 && graphs && mode.pdl && !mode.logits)
        std::printf("%s", backend::cuda_attention_stamps().c_str());
      const double ms = median(t);
      const double tps = B * 1000.0 / ms;
      const double roof = bw_tbps * 1e12 / step_bytes(B, ctx) * B;
      const auto g = backend::cuda_graph_counts(*be);
      std::printf(
          "# %s decode batch %d (graphs %s, pdl %s, %s; %lld replays so far): %.3f ms/step, %.1f "
          "tok/s, "
          "roofline %.1f tok/s (%.1f MB/step)\n",
          name.c_str(), B, graphs ? "on" : "off", mode.pdl ? "on" : "off",
          mode.logits ? "logits to the host" : "tokens on the device",
          static_cast<long long>(g.replays), ms, tps, roof, step_bytes(B, ctx) / 1e6);
      report({name,
              "decode_b" + std::to_string(B) + (graphs ? "" : "_eager") +
                  (mode.logits ? "_logits" : "") + (mode.pdl ? "" : "_nopdl"),
              tps, "tok/s", tps / roof, "HBM roofline"});
    }
    backend::cuda_set_pdl(*be, true);
    if (!quick) {  // one more step with per-op GPU timing
      backend::cuda_set_profiling(*be, true);
      auto b = make_batch(B, ctx + steps, 1, bs, max_blocks, true);
      m->forward(b, cache, logits);
      backend::cuda_set_profiling(*be, false);
      std::printf("# %s decode batch %d %s", name.c_str(), B,
                  backend::cuda_profile_report(*be).c_str());
    }
  }
  if (full) {
    const int B = 16, len = 512, max_blocks = len / bs + 1;
    backend::KvCache cache = be->alloc_kv_cache(spec, static_cast<int64_t>(B) * max_blocks, bs);
    std::vector<float> logits;
    std::vector<double> t;
    for (int s = 0; s < 4; ++s) {
      auto b = make_batch(B, 0, len, bs, max_blocks, false);
      auto t1 = Clock::now();
      m->forward(b, cache, logits);
      if (s >= 1) t.push_back(ms_since(t1));
    }
    {
      backend::cuda_set_profiling(*be, true);
      auto b = make_batch(B, 0, len, bs, max_blocks, false);
      m->forward(b, cache, logits);
      backend::cuda_set_profiling(*be, false);
      std::printf("# %s prefill %s", name.c_str(), backend::cuda_profile_report(*be).c_str());
    }
    const double ms = median(t);
    const double tokens = B * len;
    // Model FLOPs: 2 x (active parameters without the lm_head) per token, lm_head for 16 rows.
    const double head = static_cast<double>(cfg.vocab_size) * cfg.hidden_size;
    const double active = wbytes / 2.0 - head;
    const double flops = 2.0 * active * tokens + 2.0 * head * B;
    const double tf = flops / (ms * 1e-3) / 1e12;
    std::printf("# %s prefill 16x512: %.2f ms, %.0f tok/s, %.1f TFLOP/s model FLOPs\n",
                name.c_str(), ms, tokens * 1000.0 / ms, tf);
    report({name, "prefill_16x512_tok_s", tokens * 1000.0 / ms, "tok/s", 0.0, ""});
    report({name, "prefill_16x512_tflops", tf, "TFLOP/s", tf / gemm_tf, "cuBLAS GEMM ceiling"});
  }
}

// R1_BENCH_GEMV=1: every dense GEMV shape of the two benchmark models at batch 1
// under every launch plan (split warps per row x rows per warp x unroll), GPU
// time per launch from the backend's event timing, weights rotated through
// enough copies (>= 256 MB) that each launch reads from HBM, not L2.
void gemv_sweep(double bw_tbps) {
  struct Shape {
    const char* name;
    int64_t N, K;
    bool swiglu;
  };
  const std::vector<Shape> shapes = {
      {"9b q_a", 768, 2048, false},          {"9b q_b", 3072, 768, false},
      {"9b kv_a", 576, 2048, false},         {"9b o_proj", 2048, 2048, false},
      {"9b router", 64, 2048, false},        {"9b shared gate_up", 1408, 2048, true},
      {"9b shared down", 2048, 1408, false}, {"9b dense gate_up", 10944, 2048, true},
      {"9b dense down", 2048, 10944, false}, {"9b lm_head", 129280, 2048, false},
      {"7b qkv", 4608, 3584, false},         {"7b o_proj", 3584, 3584, false},
      {"7b gate_up", 18944, 3584, true},     {"7b down", 3584, 18944, false},
      {"7b lm_head", 152064, 3584, false}};
  auto be = backend::make_cuda_backend(0, 0.8);
  std::printf("# dense GEMV plans at batch 1 (us per launch, cold L2; copy ceiling %.2f TB/s)\n",
              bw_tbps);
  std::printf("%-20s %8s %8s %-12s %9s %8s %-12s %9s %8s\n", "shape", "N", "K", "built-in", "us",
              "TB/s", "best", "us", "TB/s");
  for (const Shape& sh : shapes) {
    const int64_t rows = sh.swiglu ? 2 * sh.N : sh.N;
    const double bytes = static_cast<double>(rows) * static_cast<double>(sh.K) * 2.0;
    const int copies = static_cast<int>(std::clamp(256e6 / bytes + 1.0, 2.0, 64.0));
    std::vector<backend::Linear> ws(static_cast<size_t>(copies));
    for (int c = 0; c < copies; ++c) {
      ws[static_cast<size_t>(c)].weight = be->alloc({rows, sh.K}, DType::kBF16);
      be->fill_random(ws[static_cast<size_t>(c)].weight,
                      RandomFill{static_cast<uint64_t>(c + 1), 0.02f, 0.0f});
    }
    Tensor x = be->alloc({1, sh.K}, DType::kBF16);
    be->fill_random(x, RandomFill{99, 1.0f, 0.0f});
    Tensor out = be->alloc({1, sh.N}, DType::kBF16), gu = be->alloc({1, 2 * sh.N}, DType::kBF16);
    auto time_plan = [&](int split, int r, int unroll) {
      backend::cuda_set_gemv_plan(split, r, unroll);
      const int reps = std::max(copies, 60);
      for (int i = 0; i < 4; ++i) {  // warm-up
        if (sh.swiglu)
          be->linear_swiglu(x, ws[static_cast<size_t>(i % copies)], gu, out);
        else
          be->linear(x, ws[static_cast<size_t>(i % copies)], out);
      }
      be->synchronize();
      backend::cuda_profile_report(*be);  // drop earlier timings
      backend::cuda_set_profiling(*be, true);
      for (int i = 0; i < reps; ++i) {
        if (sh.swiglu)
          be->linear_swiglu(x, ws[static_cast<size_t>(i % copies)], gu, out);
        else
          be->linear(x, ws[static_cast<size_t>(i % copies)], out);
      }
      backend::cuda_set_profiling(*be, false);
      const std::string rep = backend::cuda_profile_report(*be);
      const char* key = sh.swiglu ? "linear_swiglu" : "linear ";
      const size_t at = rep.find(std::string("\n  ") + key);
      double ms = 0;
      int calls = 0;
      if (at != std::string::npos)
        std::sscanf(rep.c_str() + at + 3 + std::strlen(key), "%*[^0-9]%lf ms %d", &ms, &calls);
      return calls > 0 ? ms * 1000.0 / calls : -1.0;
    };
    const double builtin = time_plan(0, 1, 4);
    double best = 1e30;
    std::string best_name, all;
    for (int split : {1, 2, 4, 8})
      for (int r : {1, 2})
        for (int unroll : {4, 8}) {
          if (sh.swiglu && r != 2) continue;
          if (sh.K % (8 * split) != 0) continue;
          const double us = time_plan(split, r, unroll);
          if (us <= 0) continue;
          const std::string nm =
              "s" + std::to_string(split) + "r" + std::to_string(r) + "u" + std::to_string(unroll);
          all += " " + nm + "=" + std::to_string(us).substr(0, 6);
          if (us < best) {
            best = us;
            best_name = nm;
          }
        }
    backend::cuda_set_gemv_plan(0, 1, 4);
    std::printf("%-20s %8lld %8lld %-12s %9.2f %8.2f %-12s %9.2f %8.2f\n", sh.name,
                static_cast<long long>(sh.N), static_cast<long long>(sh.K), "", builtin,
                bytes / builtin / 1e6, best_name.c_str(), best, bytes / best / 1e6);
    std::printf("    %s\n", all.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (backend::cuda_device_count() == 0) {
    std::printf("no CUDA device: nothing to benchmark\n");
    return 0;
  }
  if (std::getenv("R1_BENCH_QUICK") != nullptr) {
    if (argc > 1) bench_model(argv[1], 1.0, 1.0, false);
    return 0;
  }
  const double bw = hbm_copy_tbps();
  report({"-", "hbm_copy", bw, "TB/s", bw / 3.03, "gpu-machine.md 3.03 TB/s"});
  if (std::getenv("R1_BENCH_GEMV") != nullptr) {
    gemv_sweep(bw);
    return 0;
  }
  const double tf = gemm_tflops();
  report({"-", "gemm_bf16_8192", tf, "TFLOP/s", tf / 829.0, "gpu-machine.md 829 TFLOP/s"});
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    const bool full = a.find("qwen") == std::string::npos;
    bench_model(a, bw, tf, full);
  }
  std::printf("\n%-22s %-24s %12s %-8s %8s  %s\n", "model", "measure", "value", "unit", "ratio",
              "of");
  for (const auto& r : g_results)
    std::printf("%-22s %-24s %12.2f %-8s %8.3f  %s\n", r.model.c_str(), r.what.c_str(), r.value,
                r.unit.c_str(), r.ratio, r.ratio_of.c_str());
  return 0;
}
