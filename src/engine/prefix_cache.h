// PrefixCache: maps SHA-256 block hashes (chained over all earlier tokens and
// a per-tenant salt) to the KV blocks holding them, and keeps unreferenced
// cached blocks in LRU order for eviction. Bookkeeping only; BlockAllocator
// owns the blocks and drives it.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <list>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace r1::engine {

using BlockHash = std::array<uint8_t, 32>;

struct BlockHashHasher {
  size_t operator()(const BlockHash& h) const {
    size_t v;
    std::memcpy(&v, h.data(), sizeof v);
    return v;
  }
};

// The hash "before the first block": SHA-256("r1serve-prefix-v1" || salt), so
// two salts never produce a common block hash.
BlockHash prefix_root_hash(std::string_view salt);
// SHA-256(parent || tokens as little-endian int32).
BlockHash chain_block_hash(const BlockHash& parent, std::span<const int32_t> tokens);

class PrefixCache {
 public:
  explicit PrefixCache(int64_t num_blocks);

  // The block cached under `hash`, if any. Counting is separate (record())
  // so that a lookup undone for lack of memory is not counted twice.
  std::optional<int32_t> lookup(const BlockHash& hash) const;
  void record(int64_t queries, int64_t hits) {
    queries_ += queries;
    hits_ += hits;
  }
  // Registers `block` under `hash`; false if the hash or the block is taken.
  bool insert(const BlockHash& hash, int32_t block);
  bool holds(int32_t block) const { return has_hash_[static_cast<size_t>(block)] != 0; }

  // LRU list of cached blocks nobody references.
  void on_unreferenced(int32_t block);  // appended as most recently used
  void on_referenced(int32_t block);    // leaves the list
  // Takes the least recently used unreferenced block and forgets its hash.
  std::optional<int32_t> evict();
  int64_t num_evictable() const { return static_cast<int64_t>(lru_.size()); }
  int64_t num_cached() const { return static_cast<int64_t>(by_hash_.size()); }
  // Forgets everything; returns the unreferenced blocks that were cached.
  std::vector<int32_t> clear();

  int64_t queries() const { return queries_; }
  int64_t hits() const { return hits_; }

 private:
  std::unordered_map<BlockHash, int32_t, BlockHashHasher> by_hash_;
  std::vector<BlockHash> hash_of_;
  std::vector<uint8_t> has_hash_;
  std::list<int32_t> lru_;
  std::vector<std::list<int32_t>::iterator> lru_pos_;
  std::vector<uint8_t> in_lru_;
  int64_t queries_ = 0, hits_ = 0;
};

}  // namespace r1::engine
