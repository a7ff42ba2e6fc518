// Host-side helpers of the backend tests (no device code): random F32 tensors,
// batches of sequences over a shuffled paged cache, and the MLA cache spec.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "backend/backend.h"

namespace r1::backend::testing {

// F32 tensor of N(0, scale^2) values.
inline Tensor random_f32(const Shape& shape, std::mt19937& rng, float scale) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  std::normal_distribution<float> d(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

// One layer of MLA latent cache: kv_lora_rank r, rope width p.
inline KvCacheSpec mla_spec(int64_t r, int64_t p) {
  KvCacheSpec spec;
  spec.mla = true;
  spec.num_layers = 1;
  spec.kv_lora_rank = r;
  spec.rope_dim = p;
  return spec;
}

// A batch of sequences, each with `cached` tokens already in the cache and
// `fresh` new ones; block tables are shuffled permutations of the blocks.
struct Plan {
  BatchInfo history;  // writes the cached tokens
  BatchInfo step;
  int64_t blocks = 0;
};

inline Plan make_plan(const std::vector<std::pair<int, int>>& seqs, int block_size,
                      std::mt19937& rng) {
  Plan p;
  int max_blocks = 0;
  for (auto [c, f] : seqs) max_blocks = std::max(max_blocks, (c + f + block_size - 1) / block_size);
  p.blocks = static_cast<int64_t>(max_blocks) * static_cast<int64_t>(seqs.size());
  std::vector<int32_t> perm(static_cast<size_t>(p.blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (BatchInfo* b : {&p.history, &p.step}) {
    b->max_blocks_per_seq = max_blocks;
    b->query_start = {0};
  }
  for (size_t s = 0; s < seqs.size(); ++s) {
    auto [c, f] = seqs[s];
    std::vector<int32_t> table(perm.begin() + static_cast<int64_t>(s) * max_blocks,
                               perm.begin() + static_cast<int64_t>(s + 1) * max_blocks);
    auto add = [&](BatchInfo& b, int from, int to) {
      for (int pos = from; pos < to; ++pos) {
        b.token_ids.push_back(0);
        b.positions.push_back(pos);
        b.slot_mapping.push_back(table[static_cast<size_t>(pos / block_size)] * block_size +
                                 pos % block_size);
      }
      b.query_start.push_back(static_cast<int32_t>(b.positions.size()));
      b.context_lens.push_back(to);
      b.block_tables.insert(b.block_tables.end(), table.begin(), table.end());
    };
    add(p.history, 0, c);
    add(p.step, c, c + f);
  }
  return p;
}

}  // namespace r1::backend::testing
