// PrefixCache: SHA-256 block hashes and the hash -> block map with LRU order.
#include "engine/prefix_cache.h"

#include <openssl/evp.h>

#include "core/check.h"

namespace r1::engine {
namespace {

BlockHash sha256(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  BlockHash out{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  R1_CHECK(ctx != nullptr, "EVP_MD_CTX_new failed");
  unsigned int len = 0;
  const bool ok = EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1 &&
                  EVP_DigestUpdate(ctx, a.data(), a.size()) == 1 &&
                  EVP_DigestUpdate(ctx, b.data(), b.size()) == 1 &&
                  EVP_DigestFinal_ex(ctx, out.data(), &len) == 1;
  EVP_MD_CTX_free(ctx);
  R1_CHECK(ok && len == out.size(), "SHA-256 failed");
  return out;
}

}  // namespace

BlockHash prefix_root_hash(std::string_view salt) {
  static constexpr std::string_view kTag = "r1serve-prefix-v1";
  return sha256({reinterpret_cast<const uint8_t*>(kTag.data()), kTag.size()},
                {reinterpret_cast<const uint8_t*>(salt.data()), salt.size()});
}

BlockHash chain_block_hash(const BlockHash& parent, std::span<const int32_t> tokens) {
  std::vector<uint8_t> bytes(tokens.size() * 4);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint32_t t = static_cast<uint32_t>(tokens[i]);
    for (int k = 0; k < 4; ++k) bytes[i * 4 + k] = static_cast<uint8_t>(t >> (8 * k));
  }
  return sha256(parent, bytes);
}

PrefixCache::PrefixCache(int64_t num_blocks)
    : hash_of_(static_cast<size_t>(num_blocks)),
      has_hash_(static_cast<size_t>(num_blocks), 0),
      lru_pos_(static_cast<size_t>(num_blocks)),
      in_lru_(static_cast<size_t>(num_blocks), 0) {}

std::optional<int32_t> PrefixCache::lookup(const BlockHash& hash) const {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  return it->second;
}

bool PrefixCache::insert(const BlockHash& hash, int32_t block) {
  if (has_hash_[static_cast<size_t>(block)]) return false;
  if (!by_hash_.emplace(hash, block).second) return false;
  hash_of_[static_cast<size_t>(block)] = hash;
  has_hash_[static_cast<size_t>(block)] = 1;
  return true;
}

void PrefixCache::on_unreferenced(int32_t block) {
  R1_CHECK(holds(block) && !in_lru_[static_cast<size_t>(block)], "block {} not cacheable", block);
  lru_pos_[static_cast<size_t>(block)] = lru_.insert(lru_.end(), block);
  in_lru_[static_cast<size_t>(block)] = 1;
}

void PrefixCache::on_referenced(int32_t block) {
  if (!in_lru_[static_cast<size_t>(block)]) return;
  lru_.erase(lru_pos_[static_cast<size_t>(block)]);
  in_lru_[static_cast<size_t>(block)] = 0;
}

std::optional<int32_t> PrefixCache::evict() {
  if (lru_.empty()) return std::nullopt;
  const int32_t b = lru_.front();
  lru_.pop_front();
  in_lru_[static_cast<size_t>(b)] = 0;
  by_hash_.erase(hash_of_[static_cast<size_t>(b)]);
  has_hash_[static_cast<size_t>(b)] = 0;
  return b;
}

std::vector<int32_t> PrefixCache::clear() {
  std::vector<int32_t> freed(lru_.begin(), lru_.end());
  lru_.clear();
  std::fill(in_lru_.begin(), in_lru_.end(), 0);
  std::fill(has_hash_.begin(), has_hash_.end(), 0);
  by_hash_.clear();
  return freed;
}

}  // namespace r1::engine
