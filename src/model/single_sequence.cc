// SingleSequence: builds the BatchInfo of one sequence per step.
#include "model/single_sequence.h"

#include <algorithm>
#include <numeric>

#include "core/check.h"

namespace r1::model {

SingleSequence::SingleSequence(Model& model, int64_t max_tokens, int64_t block_size,
                               bool shuffle_blocks)
    : model_(model), block_size_(block_size) {
  const int64_t blocks = std::max<int64_t>(1, (max_tokens + block_size - 1) / block_size);
  cache_ = model.backend().alloc_kv_cache(model.kv_cache_spec(), blocks, block_size);
  block_table_.resize(static_cast<size_t>(blocks));
  std::iota(block_table_.begin(), block_table_.end(), 0);
  if (shuffle_blocks) {
    // A fixed permutation: reversed, then odd/even swapped.
    std::reverse(block_table_.begin(), block_table_.end());
    for (size_t i = 0; i + 1 < block_table_.size(); i += 2)
      std::swap(block_table_[i], block_table_[i + 1]);
  }
}

std::vector<float> SingleSequence::append(const std::vector<int32_t>& tokens, bool all_logits) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  R1_CHECK(n > 0, "append of no tokens");
  R1_CHECK(length_ + n <= static_cast<int64_t>(block_table_.size()) * block_size_,
           "sequence of {} tokens exceeds its cache", length_ + n);
  backend::BatchInfo b;
  b.token_ids = tokens;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t pos = length_ + i;
    b.positions.push_back(static_cast<int32_t>(pos));
    b.slot_mapping.push_back(static_cast<int32_t>(
        block_table_[static_cast<size_t>(pos / block_size_)] * block_size_ + pos % block_size_));
    if (all_logits || i == n - 1) b.logits_indices.push_back(static_cast<int32_t>(i));
  }
  b.query_start = {0, static_cast<int32_t>(n)};
  b.context_lens = {static_cast<int32_t>(length_ + n)};
  b.block_tables = block_table_;
  b.max_blocks_per_seq = static_cast<int32_t>(block_table_.size());
  std::vector<float> logits;
  model_.forward(b, cache_, logits);
  length_ += n;
  return logits;
}

}  // namespace r1::model
