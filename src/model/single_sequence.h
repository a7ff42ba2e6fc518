// SingleSequence: one sequence with its own paged KV cache, fed in chunks of
// any size. Used by `r1serve logits`, by tests (prefill vs token-by-token),
// and as the simplest client of Model; the engine batches many of these.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model.h"

namespace r1::model {

class SingleSequence {
 public:
  // Room for `max_tokens` tokens in blocks of `block_size`. With
  // `shuffle_blocks`, the block table is a permutation rather than 0, 1, ...
  // (tests use it to prove attention follows the table).
  SingleSequence(Model& model, int64_t max_tokens, int64_t block_size = 16,
                 bool shuffle_blocks = false);

  // Runs `tokens` as one step after what came before. Returns the logits of
  // every new token ([n, vocab]) if `all_logits`, else of the last one.
  std::vector<float> append(const std::vector<int32_t>& tokens, bool all_logits);
  int64_t length() const { return length_; }

 private:
  Model& model_;
  backend::KvCache cache_;
  std::vector<int32_t> block_table_;
  int64_t block_size_;
  int64_t length_ = 0;
};

}  // namespace r1::model
