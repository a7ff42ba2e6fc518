// Greedy continuations through the engine equal the transformers references
// of tests/data/models, token for token: alone, at batch 8 and 32 (same and
// mixed prompts), with chunked prefill on and off, with prefix-cache hits on
// and off, and with a KV pool so small that sequences are preempted.
#include <gtest/gtest.h>

#include "engine/engine.h"
#include "engine_test_util.h"

namespace r1::engine {
namespace {

using namespace r1::engine::testing;

struct Greedy {
  std::vector<int32_t> prompt, output;
};

std::vector<Greedy> references(const std::string& name) {
  std::vector<Greedy> out;
  const nlohmann::json ref = read_json(kModels + name + "/reference.json");
  for (const auto& g : ref["greedy"])
    out.push_back(
        {g["prompt"].get<std::vector<int32_t>>(), g["output"].get<std::vector<int32_t>>()});
  return out;
}

// Runs `count` requests (prompt i % refs) and checks every output.
EngineStats run_and_check(Engine& engine, const std::vector<Greedy>& refs, int count,
                          const std::string& what, const std::string& tag = "") {
  Collector c;
  for (int i = 0; i < count; ++i) {
    const Greedy& g = refs[static_cast<size_t>(i) % refs.size()];
    Status st = engine.submit(
        greedy_request(tag + std::to_string(i), g.prompt, static_cast<int32_t>(g.output.size())),
        c.callback());
    EXPECT_TRUE(st.is_ok()) << st.to_string();
  }
  c.wait(count);
  auto res = c.results();
  for (int i = 0; i < count; ++i) {
    const Greedy& g = refs[static_cast<size_t>(i) % refs.size()];
    const RequestOut& r = res[tag + std::to_string(i)];
    EXPECT_EQ(r.samples.at(0).tokens, g.output) << what << " request " << i;
    EXPECT_EQ(r.samples.at(0).finish, FinishReason::kLength) << what;
    EXPECT_EQ(r.done_events, 1);
    EXPECT_EQ(r.events_after_done, 0);
    EXPECT_TRUE(r.usage.has_value());
    if (r.usage) {
      EXPECT_EQ(r.usage->prompt_tokens, static_cast<int64_t>(g.prompt.size()));
      EXPECT_EQ(r.usage->completion_tokens, static_cast<int64_t>(g.output.size()));
    }
  }
  EngineStats s = engine.stats();
  EXPECT_EQ(s.kv_blocks_used, 0) << what << ": blocks still held after the workload drained";
  EXPECT_EQ(s.running, 0);
  EXPECT_EQ(s.waiting, 0);
  return s;
}

class EngineReference : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineReference, BatchSizesChunkingAndPrefixCache) {
  const auto refs = references(GetParam());
  TinyModel tm = load_tiny(GetParam());
  ASSERT_TRUE(tm.model);
  struct Case {
    const char* what;
    EngineConfig cfg;
    int count;
  };
  std::vector<Case> cases;
  EngineConfig base;
  base.num_kv_blocks = 512;
  cases.push_back({"batch 1 (one at a time)", base, 1});
  cases.push_back({"batch 8 mixed", base, 8});
  cases.push_back({"batch 32 mixed", base, 32});
  EngineConfig small_chunks = base;
  small_chunks.max_num_batched_tokens = 7;  // prefill in chunks of <= 7 tokens
  cases.push_back({"chunked prefill, budget 7", small_chunks, 8});
  EngineConfig no_chunk = base;
  no_chunk.enable_chunked_prefill = false;
  no_chunk.max_num_batched_tokens = 64;
  cases.push_back({"chunked prefill off", no_chunk, 8});
  EngineConfig no_cache = base;
  no_cache.enable_prefix_caching = false;
  cases.push_back({"prefix caching off", no_cache, 8});
  for (const Case& k : cases) {
    auto e = make_engine(tm.model, nullptr, k.cfg);
    ASSERT_TRUE(e.is_ok()) << e.status().to_string();
    if (k.count == 1) {
      // Each prompt alone.
      for (size_t i = 0; i < refs.size(); ++i)
        run_and_check(**e, std::vector<Greedy>(1, refs[i]), 1, k.what,
                      "solo" + std::to_string(i) + "-");
    } else {
      run_and_check(**e, refs, k.count, k.what);
    }
  }
}

TEST_P(EngineReference, PrefixCacheHitsKeepOutputs) {
  const auto refs = references(GetParam());
  TinyModel tm = load_tiny(GetParam());
  ASSERT_TRUE(tm.model);
  EngineConfig cfg;
  cfg.num_kv_blocks = 256;
  auto e = make_engine(tm.model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  EngineStats first = run_and_check(**e, refs, 2, "cold cache", "a");
  EngineStats second = run_and_check(**e, refs, 2, "warm cache", "b");
  EXPECT_GT(second.prefix_cache_hits, first.prefix_cache_hits);
  EXPECT_GT(second.kv_blocks_cached, 0);
}

TEST_P(EngineReference, PreemptionKeepsGreedyOutputs) {
  const auto refs = references(GetParam());
  TinyModel tm = load_tiny(GetParam());
  ASSERT_TRUE(tm.model);
  for (bool caching : {true, false}) {
    EngineConfig cfg;
    cfg.block_size = 16;
    cfg.num_kv_blocks = 12;  // 192 tokens; one 82-token sequence needs 6 blocks
    cfg.enable_prefix_caching = caching;
    auto e = make_engine(tm.model, nullptr, cfg);
    ASSERT_TRUE(e.is_ok());
    EngineStats s =
        run_and_check(**e, refs, 8, caching ? "tiny pool, caching" : "tiny pool, no caching");
    EXPECT_GT(s.preemptions, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(AllModels, EngineReference,
                         ::testing::Values("deepseek_v3_tiny", "deepseek_v3_fp8_tiny",
                                           "deepseek_v2_lite_tiny", "qwen2_tiny", "llama_tiny"));

}  // namespace
}  // namespace r1::engine
