// BlockAllocator: the pool of fixed-size KV-cache blocks, ref-counted, handed
// out as RAII BlockRef handles (a block returns to the pool when its last
// handle dies). Owns the PrefixCache: unreferenced blocks that hold a cached
// prefix stay reusable until allocation needs them (LRU eviction).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "engine/prefix_cache.h"

namespace r1::engine {

class BlockAllocator;

// One reference to one block. Move-only; share() makes another reference.
class BlockRef {
 public:
  BlockRef() = default;
  BlockRef(BlockRef&& o) noexcept : alloc_(o.alloc_), id_(o.id_) {
    o.alloc_ = nullptr;
    o.id_ = -1;
  }
  BlockRef& operator=(BlockRef&& o) noexcept;
  BlockRef(const BlockRef&) = delete;
  BlockRef& operator=(const BlockRef&) = delete;
  ~BlockRef() { reset(); }

  int32_t id() const { return id_; }
  bool valid() const { return alloc_ != nullptr; }
  BlockRef share() const;
  void reset();

 private:
  friend class BlockAllocator;
  BlockRef(BlockAllocator* a, int32_t id) : alloc_(a), id_(id) {}
  BlockAllocator* alloc_ = nullptr;
  int32_t id_ = -1;
};

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks, bool enable_prefix_caching = true);
  BlockAllocator(const BlockAllocator&) = delete;
  BlockAllocator& operator=(const BlockAllocator&) = delete;
  // Every BlockRef must be gone before the allocator.
  ~BlockAllocator();

  int64_t num_blocks() const { return static_cast<int64_t>(refs_.size()); }
  // Blocks allocate() can hand out: never used, plus cached but unreferenced.
  int64_t num_available() const {
    return static_cast<int64_t>(free_.size()) + cache_.num_evictable();
  }
  int64_t num_used() const { return num_used_; }  // ref count > 0
  int64_t num_cached_free() const { return cache_.num_evictable(); }
  int64_t num_shared() const;  // ref count > 1
  int32_t ref_count(int32_t id) const { return refs_[static_cast<size_t>(id)]; }

  // A fresh block (ref 1): a never-used one first, else the least recently
  // used cached block (its hash is forgotten). nullopt when none is left.
  std::optional<BlockRef> allocate();
  // `n` blocks or none.
  std::optional<std::vector<BlockRef>> allocate_n(int64_t n);
  // The cached block with this hash, with one more reference (it leaves the
  // LRU list if it was unreferenced). Not counted; see PrefixCache::record.
  std::optional<BlockRef> acquire_cached(const BlockHash& hash);
  // Records that `block` (full, computed) holds the prefix `hash`. False
  // when caching is off or the hash is already cached in another block.
  bool cache_block(int32_t block, const BlockHash& hash);
  // Forgets every cached hash (e.g. after a failed step left the cache
  // contents undefined); unreferenced cached blocks become free.
  void clear_cache();

  PrefixCache& prefix_cache() { return cache_; }
  const PrefixCache& prefix_cache() const { return cache_; }
  bool prefix_caching_enabled() const { return caching_; }

 private:
  friend class BlockRef;
  void add_ref(int32_t id);
  void release(int32_t id);

  std::vector<int32_t> refs_;
  std::vector<int32_t> free_;  // LIFO stack of never-cached free blocks
  int64_t num_used_ = 0;
  bool caching_;
  PrefixCache cache_;
};

}  // namespace r1::engine
