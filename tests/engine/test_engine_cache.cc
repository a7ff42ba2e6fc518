// Engine-level KV-pool, prefix-cache and cancellation guarantees: the pool
// holds only the MLA latent + rope key (K and V for dense models) and is sized
// from the memory budget; a per-tenant salt keeps tenants from sharing blocks
// (and the lookup/hit counters say so); a cancel frees the sequence's blocks
// within one engine step.
#include <gtest/gtest.h>

#include <fstream>
#include <numeric>
#include <sstream>

#include "engine/engine.h"
#include "engine_test_util.h"
#include "io/model_config.h"

namespace r1::engine {
namespace {

using namespace r1::engine::testing;

TEST(EngineKvPool, HoldsOnlyTheLatentAndIsSizedFromTheBudget) {
  // DeepSeek-R1's own config: 512 latent + 64 rope values per token per layer.
  std::ifstream f(std::string(R1_TEST_DATA_DIR) + "/configs/deepseek-r1-671b.json");
  std::stringstream text;
  text << f.rdbuf();
  auto r1 = io::parse_model_config(text.str(), "deepseek-r1-671b.json");
  ASSERT_TRUE(r1.is_ok()) << r1.status().to_string();
  EXPECT_EQ(r1->kv_lora_rank + r1->qk_rope_head_dim, 576);

  struct Case {
    const char* model;
    bool mla;
    int64_t per_token_per_layer;  // values
  };
  for (const Case& k :
       {Case{"deepseek_v3_tiny", true, 128 + 32}, Case{"deepseek_v2_lite_tiny", true, 64 + 16},
        Case{"qwen2_tiny", false, 2 * 2 * 32}}) {  // K and V, 2 KV heads of 32
    SCOPED_TRACE(k.model);
    TinyModel tm = load_tiny(k.model, 1);
    ASSERT_TRUE(tm.model);
    const backend::KvCacheSpec spec = tm.model->kv_cache_spec();
    EXPECT_EQ(spec.mla, k.mla);
    const int64_t layers = tm.model->config().num_layers;
    EXPECT_EQ(spec.bytes_per_token(),
              k.per_token_per_layer * layers * static_cast<int64_t>(dtype_size(spec.dtype)));
    backend::KvCache cache = tm.model->backend().alloc_kv_cache(spec, 3, 16);
    int64_t values = 0;
    for (const auto* ts : {&cache.latent, &cache.k, &cache.v})
      for (const Tensor& t : *ts) values += t.numel();
    EXPECT_EQ(values, 3 * 16 * k.per_token_per_layer * layers);
    EXPECT_EQ(cache.latent.empty(), !k.mla);
    // The engine's pool: as many blocks as the byte budget holds.
    EngineConfig cfg;
    cfg.kv_cache_bytes = 1 << 20;
    auto e = make_engine(tm.model, nullptr, cfg);
    ASSERT_TRUE(e.is_ok()) << e.status().to_string();
    EXPECT_EQ((*e)->stats().kv_blocks_total, (int64_t{1} << 20) / (spec.bytes_per_token() * 16));
    cfg.kv_cache_bytes = spec.bytes_per_token() * 16 - 1;  // not one block
    EXPECT_FALSE(make_engine(tm.model, nullptr, cfg).is_ok());
  }
}

TEST(EnginePrefixCache, SaltSeparatesTenants) {
  auto model = std::make_shared<FakeModel>(
      64, [](int32_t tok, int32_t pos) { return (tok * 13 + pos) % 60 + 2; });
  EngineConfig cfg;
  cfg.block_size = 4;
  cfg.num_kv_blocks = 64;
  auto e = make_engine(model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  std::vector<int32_t> prompt(12);  // 3 full blocks; the last token always runs: 2 reusable
  std::iota(prompt.begin(), prompt.end(), 20);
  auto run = [&](const std::string& id, const std::string& salt) {
    Collector c;
    GenerationRequest r = greedy_request(id, prompt, 4);
    r.cache_salt = salt;
    EXPECT_TRUE((*e)->submit(r, c.callback()).is_ok());
    c.wait(1);
    RequestOut out = c.results()[id];
    EXPECT_TRUE(out.usage.has_value());
    return std::make_pair(out.usage ? out.usage->cached_prompt_tokens : -1, out.samples[0].tokens);
  };
  auto [a1_cached, a1_tokens] = run("a1", "tenant-a");
  EXPECT_EQ(a1_cached, 0);
  const EngineStats s1 = (*e)->stats();
  EXPECT_EQ(s1.prefix_cache_queries, 2);
  EXPECT_EQ(s1.prefix_cache_hits, 0);
  // Another tenant with the same prompt: no hit.
  auto [b_cached, b_tokens] = run("b", "tenant-b");
  EXPECT_EQ(b_cached, 0);
  // No salt: a third namespace, also no hit.
  auto [n_cached, n_tokens] = run("n", "");
  EXPECT_EQ(n_cached, 0);
  const EngineStats s2 = (*e)->stats();
  EXPECT_EQ(s2.prefix_cache_queries, 6);
  EXPECT_EQ(s2.prefix_cache_hits, 0);
  // The first tenant again: both reusable blocks hit.
  auto [a2_cached, a2_tokens] = run("a2", "tenant-a");
  EXPECT_EQ(a2_cached, 8);
  const EngineStats s3 = (*e)->stats();
  EXPECT_EQ(s3.prefix_cache_queries, 8);
  EXPECT_EQ(s3.prefix_cache_hits, 2);
  // The outputs do not depend on where the KV came from.
  EXPECT_EQ(a1_tokens, b_tokens);
  EXPECT_EQ(a1_tokens, n_tokens);
  EXPECT_EQ(a1_tokens, a2_tokens);
  EXPECT_EQ(s3.kv_blocks_used, 0);
  EXPECT_GT(s3.kv_blocks_cached, 0);
}

TEST(EngineLifecycle, CancelFreesBlocksWithinOneStep) {
  auto model = std::make_shared<FakeModel>(
      64, [](int32_t tok, int32_t pos) { return (tok * 31 + pos) % 60 + 2; });
  EngineConfig cfg;
  cfg.block_size = 4;
  cfg.num_kv_blocks = 256;
  cfg.enable_prefix_caching = false;  // freed blocks go straight back to the pool
  auto e = make_engine(model, nullptr, cfg);
  ASSERT_TRUE(e.is_ok());
  Engine* engine = e->get();
  std::mutex mu;
  int64_t steps_at_cancel = -1, steps_at_final = -1, used_at_cancel = -1, used_at_final = -1;
  bool cancelled = false;
  Collector c;
  c.on_event = [&](const EngineEvent& ev) {
    std::lock_guard<std::mutex> lock(mu);
    if (ev.request_id != "victim") return;
    const EngineStats s = engine->stats();
    if (!cancelled && s.steps >= 5) {  // well into decoding
      cancelled = true;
      steps_at_cancel = s.steps;
      used_at_cancel = s.kv_blocks_used;
      engine->cancel("victim");
    }
    if (ev.request_done) {
      steps_at_final = s.steps;
      used_at_final = s.kv_blocks_used;
    }
  };
  // A bystander keeps the engine stepping while the victim is cancelled.
  ASSERT_TRUE(engine->submit(greedy_request("bystander", {3, 4, 5}, 400), c.callback()).is_ok());
  std::vector<int32_t> long_prompt(40, 7);
  ASSERT_TRUE(engine->submit(greedy_request("victim", long_prompt, 400), c.callback()).is_ok());
  c.wait(2);
  auto res = c.results();
  EXPECT_EQ(res["victim"].samples[0].finish, FinishReason::kCancelled);
  EXPECT_LT(res["victim"].samples[0].tokens.size(), 400u);
  EXPECT_EQ(res["bystander"].samples[0].finish, FinishReason::kLength);
  ASSERT_GE(steps_at_cancel, 0);
  // The victim's final event comes at most one step after the cancel, and by
  // then its blocks (10+ of them) are back: only the bystander's remain.
  EXPECT_LE(steps_at_final - steps_at_cancel, 1);
  EXPECT_GE(used_at_cancel - used_at_final, 10);
  EXPECT_EQ(engine->stats().kv_blocks_used, 0);
}

}  // namespace
}  // namespace r1::engine
