// `r1serve bench --model DIR --num-prompts N --input-len L --output-len O`:
// N requests of random prompt ids through the engine, all submitted at once;
// prints throughput, time to first token and time per output token (median
// and p99), KV-cache usage and the prefix-cache hit rate.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>

#include "app/command_registry.h"
#include "app/model_args.h"
#include "engine/engine.h"

namespace r1::app {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchArgs {
  ModelArgs model;
  int num_prompts = 16;
  int input_len = 128;
  int output_len = 64;
  int max_num_seqs = 64;
  int max_num_batched_tokens = 2048;
  int block_size = 16;
  int64_t num_kv_blocks = 0;
  double kv_cache_gib = 0;
  double shared_prefix = 0;  // share of each prompt that is common to all
  bool no_prefix_caching = false;
  bool warmup = false;  // one untimed round of the same workload first
};

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i =
      std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

int run_bench(const BenchArgs& a) {
  if (a.num_prompts < 1 || a.input_len < 1 || a.output_len < 1) {
    std::fprintf(stderr,
                 "r1serve bench: --num-prompts, --input-len and --output-len must be positive\n");
    return 1;
  }
  auto loaded = load_model(a.model);
  if (!loaded.is_ok()) {
    std::fprintf(stderr, "r1serve bench: %s\n", loaded.status().message().c_str());
    return 1;
  }
  std::shared_ptr<backend::Backend> backend = std::move(loaded->backend);
  std::shared_ptr<model::Model> model(loaded->model.release(),
                                      [backend](model::Model* m) { delete m; });
  engine::EngineConfig cfg;
  cfg.block_size = a.block_size;
  cfg.max_num_seqs = a.max_num_seqs;
  cfg.max_num_batched_tokens = a.max_num_batched_tokens;
  cfg.enable_prefix_caching = !a.no_prefix_caching;
  cfg.max_waiting = std::max(cfg.max_waiting, a.num_prompts);
  if (a.num_kv_blocks > 0) {
    cfg.num_kv_blocks = a.num_kv_blocks;
  } else if (a.kv_cache_gib > 0) {
    cfg.kv_cache_bytes = static_cast<int64_t>(a.kv_cache_gib * (1ll << 30));
  } else {
    // Room for every request at once.
    cfg.num_kv_blocks =
        int64_t{a.num_prompts} * ((a.input_len + a.output_len + a.block_size - 1) / a.block_size);
  }
  auto eng = engine::make_engine(model, nullptr, cfg);
  if (!eng.is_ok()) {
    std::fprintf(stderr, "r1serve bench: %s\n", eng.status().message().c_str());
    return 1;
  }
  const int64_t V = model->config().vocab_size;
  std::mt19937_64 rng(a.model.seed);
  std::vector<int32_t> common(static_cast<size_t>(a.input_len * a.shared_prefix));
  for (auto& t : common) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(V));

  struct Track {
    Clock::time_point first, last;
    int64_t tokens = 0;
  };
  std::vector<Track> track(static_cast<size_t>(a.num_prompts));
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, errors = 0;
  double peak_usage = 0;
  engine::Engine* e = eng->get();
  if (a.warmup) {
    // The same shapes once, untimed: first-use costs (kernel loading, GEMM
    // heuristics, recorded decode steps) stay out of the figures.
    int wdone = 0;
    for (int i = 0; i < a.num_prompts; ++i) {
      engine::GenerationRequest r;
      r.request_id = "warmup-" + std::to_string(i);
      for (int k = 0; k < a.input_len; ++k)
        r.prompt.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(V)));
      r.params.temperature = 0;
      r.params.max_tokens = a.output_len;
      r.params.ignore_eos = true;
      Status st = e->submit(std::move(r), [&](const engine::EngineEvent& ev) {
        if (!ev.request_done) return;
        std::lock_guard<std::mutex> lock(mu);
        ++wdone;
        cv.notify_all();
      });
      if (!st.is_ok()) {
        std::fprintf(stderr, "r1serve bench: warm-up request %d: %s\n", i, st.message().c_str());
        return 1;
      }
    }
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return wdone == a.num_prompts; });
  }
  const engine::EngineStats s0 = e->stats();
  const Clock::time_point t0 = Clock::now();
  for (int i = 0; i < a.num_prompts; ++i) {
    engine::GenerationRequest r;
    r.request_id = std::to_string(i);
    r.prompt = common;
    while (static_cast<int>(r.prompt.size()) < a.input_len)
      r.prompt.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(V)));
    r.params.temperature = 0;
    r.params.max_tokens = a.output_len;
    r.params.ignore_eos = true;
    Status st = e->submit(std::move(r), [&, i](const engine::EngineEvent& ev) {
      const auto now = Clock::now();
      engine::EngineStats s = e->stats();
      std::lock_guard<std::mutex> lock(mu);
      Track& t = track[static_cast<size_t>(i)];
      if (t.tokens == 0 && !ev.token_ids.empty()) t.first = now;
      t.tokens += static_cast<int64_t>(ev.token_ids.size());
      t.last = now;
      peak_usage = std::max(peak_usage, static_cast<double>(s.kv_blocks_used) /
                                            static_cast<double>(s.kv_blocks_total));
      if (ev.request_done) {
        errors += ev.finish == engine::FinishReason::kError;
        ++done;
        cv.notify_all();
      }
    });
    if (!st.is_ok()) {
      std::fprintf(stderr, "r1serve bench: request %d: %s\n", i, st.message().c_str());
      return 1;
    }
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done == a.num_prompts; });
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  engine::EngineStats s = e->stats();
  e->shutdown();

  std::vector<double> ttft, tpot;
  int64_t out_tokens = 0;
  for (const Track& t : track) {
    out_tokens += t.tokens;
    if (t.tokens == 0) continue;  // failed before its first token: no latency to report
    ttft.push_back(std::chrono::duration<double>(t.first - t0).count());
    if (t.tokens > 1)
      tpot.push_back(std::chrono::duration<double>(t.last - t.first).count() /
                     static_cast<double>(t.tokens - 1));
  }
  const int64_t in_tokens = int64_t{a.num_prompts} * a.input_len;
  std::printf("requests:               %d (%d errors), input %d, output %d tokens each\n",
              a.num_prompts, errors, a.input_len, a.output_len);
  std::printf("elapsed:                %.3f s, %lld engine steps, %lld preemptions\n", elapsed,
              static_cast<long long>(s.steps - s0.steps),
              static_cast<long long>(s.preemptions - s0.preemptions));
  if (const int64_t n = s.steps - s0.steps; n > 0) {
    const auto per = [&](int64_t now, int64_t before) {
      return static_cast<double>(now - before) / static_cast<double>(n);
    };
    std::printf(
        "engine thread per step: schedule %.1f us, model %.1f us (batch, launch, device), "
        "postprocess %.1f us, other %.1f us\n",
        per(s.time_schedule_us, s0.time_schedule_us), per(s.time_model_us, s0.time_model_us),
        per(s.time_postprocess_us, s0.time_postprocess_us), per(s.time_other_us, s0.time_other_us));
  }
  std::printf(
      "throughput:             %.1f output tokens/s, %.1f total tokens/s, %.2f requests/s\n",
      static_cast<double>(out_tokens) / elapsed,
      static_cast<double>(out_tokens + in_tokens) / elapsed, a.num_prompts / elapsed);
  std::printf("time to first token:    median %.2f ms, p99 %.2f ms\n", 1e3 * percentile(ttft, 0.5),
              1e3 * percentile(ttft, 0.99));
  std::printf("time per output token:  median %.2f ms, p99 %.2f ms\n", 1e3 * percentile(tpot, 0.5),
              1e3 * percentile(tpot, 0.99));
  std::printf("KV cache:               %lld blocks of %lld tokens, peak usage %.1f%%\n",
              static_cast<long long>(s.kv_blocks_total), static_cast<long long>(s.block_size),
              100.0 * peak_usage);
  const int64_t hits = s.prefix_cache_hits - s0.prefix_cache_hits;
  const int64_t queries = s.prefix_cache_queries - s0.prefix_cache_queries;
  std::printf("prefix cache:           %lld / %lld blocks hit (%.1f%%)\n",
              static_cast<long long>(hits), static_cast<long long>(queries),
              queries ? 100.0 * static_cast<double>(hits) / static_cast<double>(queries) : 0.0);
  return errors == 0 ? 0 : 1;
}

void setup_bench(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<BenchArgs>();
  auto* cmd =
      app.add_subcommand("bench", "Offline benchmark: N random-prompt requests through the engine");
  args->model.add_to(cmd);
  cmd->add_option("--num-prompts", args->num_prompts, "Requests")->capture_default_str();
  cmd->add_option("--input-len", args->input_len, "Prompt tokens per request")
      ->capture_default_str();
  cmd->add_option("--output-len", args->output_len, "Generated tokens per request")
      ->capture_default_str();
  cmd->add_option("--max-num-seqs,--batch", args->max_num_seqs, "Sequences per step")
      ->capture_default_str();
  cmd->add_option("--max-num-batched-tokens", args->max_num_batched_tokens, "Tokens per step")
      ->capture_default_str();
  cmd->add_option("--block-size", args->block_size, "KV block size in tokens")
      ->capture_default_str();
  cmd->add_option("--num-kv-blocks", args->num_kv_blocks,
                  "KV pool blocks (default: room for every request)");
  cmd->add_option("--kv-cache-gib", args->kv_cache_gib,
                  "KV pool size in GiB (instead of --num-kv-blocks)");
  cmd->add_option("--shared-prefix", args->shared_prefix,
                  "Share (0..1) of each prompt common to all requests")
      ->capture_default_str();
  cmd->add_flag("--no-enable-prefix-caching", args->no_prefix_caching, "Turn prefix caching off");
  cmd->add_flag("--warmup", args->warmup,
                "Run the same workload once, untimed, before the measured round");
  cmd->callback([args, &exit_code] { exit_code = run_bench(*args); });
}

const CommandRegistrar kRegistrar("bench", setup_bench);

}  // namespace
}  // namespace r1::app
