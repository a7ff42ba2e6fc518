// BlockAllocator: ref counts, the free stack, and the hand-off of
// unreferenced cached blocks to the prefix cache's LRU list.
#include "engine/block_allocator.h"

#include "core/check.h"

namespace r1::engine {

BlockRef& BlockRef::operator=(BlockRef&& o) noexcept {
  if (this != &o) {
    reset();
    alloc_ = o.alloc_;
    id_ = o.id_;
    o.alloc_ = nullptr;
    o.id_ = -1;
  }
  return *this;
}

BlockRef BlockRef::share() const {
  R1_CHECK(alloc_ != nullptr, "share of an empty BlockRef");
  alloc_->add_ref(id_);
  return BlockRef(alloc_, id_);
}

void BlockRef::reset() {
  if (alloc_ != nullptr) alloc_->release(id_);
  alloc_ = nullptr;
  id_ = -1;
}

BlockAllocator::BlockAllocator(int64_t num_blocks, bool enable_prefix_caching)
    : refs_(static_cast<size_t>(num_blocks), 0),
      caching_(enable_prefix_caching),
      cache_(num_blocks) {
  R1_CHECK(num_blocks > 0, "a KV pool of {} blocks", num_blocks);
  // Stack: block 0 on top, so blocks are handed out 0, 1, 2, ... when fresh.
  free_.reserve(static_cast<size_t>(num_blocks));
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

BlockAllocator::~BlockAllocator() {
  if (num_used_ != 0)
    std::fprintf(stderr, "BlockAllocator destroyed with %lld blocks in use\n",
                 static_cast<long long>(num_used_));
}

int64_t BlockAllocator::num_shared() const {
  int64_t n = 0;
  for (int32_t r : refs_) n += r > 1;
  return n;
}

std::optional<BlockRef> BlockAllocator::allocate() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (auto ev = cache_.evict()) {
    b = *ev;
  } else {
    return std::nullopt;
  }
  R1_CHECK(refs_[static_cast<size_t>(b)] == 0, "allocated block {} has ref count {}", b,
           refs_[static_cast<size_t>(b)]);
  refs_[static_cast<size_t>(b)] = 1;
  ++num_used_;
  return BlockRef(this, b);
}

std::optional<std::vector<BlockRef>> BlockAllocator::allocate_n(int64_t n) {
  if (n > num_available()) return std::nullopt;
  std::vector<BlockRef> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(*allocate());
  return out;
}

std::optional<BlockRef> BlockAllocator::acquire_cached(const BlockHash& hash) {
  if (!caching_) return std::nullopt;
  auto b = cache_.lookup(hash);
  if (!b) return std::nullopt;
  add_ref(*b);
  return BlockRef(this, *b);
}

bool BlockAllocator::cache_block(int32_t block, const BlockHash& hash) {
  if (!caching_) return false;
  R1_CHECK(refs_[static_cast<size_t>(block)] > 0, "caching unreferenced block {}", block);
  return cache_.insert(hash, block);
}

void BlockAllocator::clear_cache() {
  for (int32_t b : cache_.clear()) free_.push_back(b);
}

void BlockAllocator::add_ref(int32_t id) {
  int32_t& r = refs_[static_cast<size_t>(id)];
  if (r == 0) {
    cache_.on_referenced(id);
    ++num_used_;
  }
  ++r;
}

void BlockAllocator::release(int32_t id) {
  int32_t& r = refs_[static_cast<size_t>(id)];
  R1_CHECK(r > 0, "release of free block {}", id);
  if (--r > 0) return;
  --num_used_;
  if (cache_.holds(id)) {
    cache_.on_unreferenced(id);
  } else {
    free_.push_back(id);
  }
}

}  // namespace r1::engine
