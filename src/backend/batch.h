// BatchInfo: the plain description of one forward step that the engine plans
// and every backend op reads (the host plans, kernels run). Tokens of all
// sequences are packed back to back; the KV cache is paged in fixed-size
// blocks and each sequence has a block table.
#pragma once

#include <cstdint>
#include <vector>

namespace r1::backend {

struct BatchInfo {
  // Per token, [num_tokens()].
  std::vector<int32_t> token_ids;
  std::vector<int32_t> positions;     // position of the token in its sequence
  std::vector<int32_t> slot_mapping;  // cache slot = block * block_size + offset
  // Per sequence, [num_seqs()].
  std::vector<int32_t> query_start;   // [num_seqs + 1]: the sequence's tokens are
                                      // [query_start[s], query_start[s+1])
  std::vector<int32_t> context_lens;  // tokens in the cache after this step (cached + new)
  std::vector<int32_t> block_tables;  // [num_seqs * max_blocks_per_seq], unused = -1
  int32_t max_blocks_per_seq = 0;
  // Rows (token indices) whose logits the step returns, in output order.
  std::vector<int32_t> logits_indices;

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t num_seqs() const { return static_cast<int32_t>(context_lens.size()); }
  int32_t query_len(int32_t s) const { return query_start[s + 1] - query_start[s]; }
  int32_t block_of(int32_t s, int32_t pos, int32_t block_size) const {
    return block_tables[static_cast<size_t>(s) * max_blocks_per_seq + pos / block_size];
  }
};

}  // namespace r1::backend
