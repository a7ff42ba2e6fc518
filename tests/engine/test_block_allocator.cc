// BlockAllocator and PrefixCache: ref counts and RAII release, chained
// SHA-256 block hashes, salt isolation, LRU eviction order.
#include <gtest/gtest.h>

#include "engine/block_allocator.h"

namespace r1::engine {
namespace {

TEST(BlockAllocator, RefCountsAndRaii) {
  BlockAllocator a(4);
  EXPECT_EQ(a.num_available(), 4);
  {
    auto b0 = a.allocate();
    ASSERT_TRUE(b0);
    EXPECT_EQ(b0->id(), 0);
    EXPECT_EQ(a.ref_count(0), 1);
    BlockRef s = b0->share();
    EXPECT_EQ(a.ref_count(0), 2);
    EXPECT_EQ(a.num_used(), 1);
    EXPECT_EQ(a.num_shared(), 1);
    b0->reset();
    EXPECT_EQ(a.ref_count(0), 1);
    BlockRef moved = std::move(s);
    EXPECT_FALSE(s.valid());
    EXPECT_EQ(a.ref_count(0), 1);
  }
  EXPECT_EQ(a.num_used(), 0);
  EXPECT_EQ(a.num_available(), 4);
  auto all = a.allocate_n(4);
  ASSERT_TRUE(all);
  EXPECT_FALSE(a.allocate());
  EXPECT_FALSE(a.allocate_n(1));
  all.reset();
  EXPECT_EQ(a.num_available(), 4);
  EXPECT_FALSE(a.allocate_n(5));
  EXPECT_EQ(a.num_used(), 0);  // a failed allocate_n takes nothing
}

TEST(PrefixHash, ChainedAndSalted) {
  const std::vector<int32_t> t1 = {1, 2, 3, 4}, t2 = {5, 6, 7, 8};
  const BlockHash r = prefix_root_hash("");
  const BlockHash h1 = chain_block_hash(r, t1);
  const BlockHash h2 = chain_block_hash(h1, t2);
  EXPECT_EQ(h1, chain_block_hash(prefix_root_hash(""), t1));  // deterministic
  EXPECT_NE(h1, h2);
  // The same block after a different prefix hashes differently.
  EXPECT_NE(chain_block_hash(chain_block_hash(r, t2), t2), h2);
  // Salts: every block differs, from the first on.
  EXPECT_NE(prefix_root_hash("tenant-a"), prefix_root_hash("tenant-b"));
  EXPECT_NE(chain_block_hash(prefix_root_hash("tenant-a"), t1),
            chain_block_hash(prefix_root_hash("tenant-b"), t1));
  EXPECT_NE(chain_block_hash(prefix_root_hash("tenant-a"), t1), h1);
  // Token values are hashed as int32, not bytes: 256 != 1,0.
  EXPECT_NE(chain_block_hash(r, std::vector<int32_t>{256}),
            chain_block_hash(r, std::vector<int32_t>{1, 0}));
}

TEST(PrefixCache, SharedAndKeptAfterRelease) {
  BlockAllocator a(4);
  const BlockHash h = chain_block_hash(prefix_root_hash(""), std::vector<int32_t>{1, 2});
  int32_t id;
  {
    auto b = a.allocate();
    id = b->id();
    EXPECT_TRUE(a.cache_block(id, h));
    EXPECT_FALSE(a.cache_block(id, h));  // already cached
    auto again = a.acquire_cached(h);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->id(), id);
    EXPECT_EQ(a.ref_count(id), 2);
  }
  // Unreferenced but cached: still available, still found.
  EXPECT_EQ(a.num_used(), 0);
  EXPECT_EQ(a.num_cached_free(), 1);
  EXPECT_EQ(a.num_available(), 4);
  auto hit = a.acquire_cached(h);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->id(), id);
  EXPECT_EQ(a.num_cached_free(), 0);
  hit.reset();
  // A salted lookup of the same tokens misses.
  EXPECT_FALSE(
      a.acquire_cached(chain_block_hash(prefix_root_hash("x"), std::vector<int32_t>{1, 2})));
}

TEST(PrefixCache, EvictsLeastRecentlyUsedOnlyWhenNeeded) {
  BlockAllocator a(3);
  std::vector<BlockHash> h;
  for (int32_t i = 0; i < 3; ++i)
    h.push_back(chain_block_hash(prefix_root_hash(""), std::vector<int32_t>{i}));
  {
    auto b0 = a.allocate(), b1 = a.allocate(), b2 = a.allocate();
    a.cache_block(b0->id(), h[0]);
    a.cache_block(b1->id(), h[1]);
    a.cache_block(b2->id(), h[2]);
    // Released in the order 1, 0, 2: LRU order is 1, 0, 2.
    b1->reset();
    b0->reset();
    b2->reset();
  }
  EXPECT_EQ(a.num_cached_free(), 3);
  // Touch block 1 (hit, then release): it becomes most recent: order 0, 2, 1.
  a.acquire_cached(h[1]).reset();
  auto x = a.allocate();  // evicts block 0's hash
  ASSERT_TRUE(x);
  EXPECT_EQ(x->id(), 0);
  EXPECT_FALSE(a.acquire_cached(h[0]));
  auto y = a.allocate();
  EXPECT_EQ(y->id(), 2);
  EXPECT_TRUE(a.acquire_cached(h[1]).has_value());
  EXPECT_EQ(a.prefix_cache().num_cached(), 1);
}

TEST(PrefixCache, NeverCachedBlocksAreUsedBeforeEvicting) {
  BlockAllocator a(2);
  const BlockHash h = chain_block_hash(prefix_root_hash(""), std::vector<int32_t>{9});
  EXPECT_TRUE(a.cache_block(a.allocate()->id(), h));  // the handle dies: block 0 cached, free
  EXPECT_EQ(a.num_cached_free(), 1);
  auto b = a.allocate();
  EXPECT_EQ(b->id(), 1);             // the never-cached block first
  EXPECT_TRUE(a.acquire_cached(h));  // the cached one survived
}

TEST(PrefixCache, DisabledCachesNothing) {
  BlockAllocator a(2, /*enable_prefix_caching=*/false);
  auto b = a.allocate();
  EXPECT_FALSE(a.cache_block(b->id(), prefix_root_hash("")));
  EXPECT_FALSE(a.acquire_cached(prefix_root_hash("")));
}

}  // namespace
}  // namespace r1::engine
