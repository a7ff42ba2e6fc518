// Sequence: the lazy block-hash chain and block release order.
#include "engine/sequence.h"

#include <span>

#include "core/check.h"

namespace r1::engine {

const BlockHash& Sequence::block_hash(size_t i, int32_t block_size, const std::string& salt) {
  R1_CHECK(static_cast<int64_t>(i + 1) * block_size <= num_tokens(),
           "hash of block {} past {} tokens", i, num_tokens());
  while (hashes.size() <= i) {
    const size_t b = hashes.size();
    const BlockHash parent = b == 0 ? prefix_root_hash(salt) : hashes[b - 1];
    hashes.push_back(chain_block_hash(
        parent,
        std::span<const int32_t>(tokens.data() + b * block_size, static_cast<size_t>(block_size))));
  }
  return hashes[i];
}

void Sequence::release_blocks() {
  while (!blocks.empty()) blocks.pop_back();
  num_hashed_blocks = 0;
}

}  // namespace r1::engine
