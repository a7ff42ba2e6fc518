// The fixture of the CUDA op tests (a GPU backend and a CPU one to compare with,
// shared by the test files of backend_test_cuda_ops) and the batches they build.
#pragma once

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda_test_util.h"

namespace r1::backend::testing {

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    R1_SKIP_WITHOUT_GPU();
    if (!gpu_) gpu_ = make_cuda_backend(0, 0.5);
    if (!cpu_) cpu_ = make_cpu_backend(2);
  }
  static void TearDownTestSuite() {
    gpu_.reset();
    cpu_.reset();
  }
  Backend& gpu() { return *gpu_; }
  Backend& cpu() { return *cpu_; }
  // Device BF16 activation from host F32 values.
  Tensor dev(const Tensor& host) { return gpu().upload(host, DType::kBF16).reshape(host.shape()); }
  // Device F32 tensor of any rank (vectors keep F32 on upload).
  Tensor dev_f32(const Tensor& host) {
    return gpu().upload(host.reshape({host.numel()}), DType::kF32).reshape(host.shape());
  }
  Tensor dev_i32(const Tensor& host) { return gpu().upload(host, DType::kI32); }
  Tensor galloc(const Shape& s, DType d = DType::kBF16) { return gpu().alloc(s, d); }
  Tensor calloc(const Shape& s, DType d = DType::kF32) { return Tensor::zeros(s, d); }
  std::mt19937 rng_{1234};
  inline static std::unique_ptr<Backend> gpu_, cpu_;
};
// One sequence of T new tokens over block table `table` (block size bs): token t
// at position t * pos_step + pos_offset, in slot t of the table's blocks.
inline BatchInfo one_sequence(int64_t T, int64_t bs, const std::vector<int32_t>& table,
                              int32_t pos_step, int32_t pos_offset) {
  BatchInfo b;
  for (int64_t t = 0; t < T; ++t) {
    b.token_ids.push_back(0);
    b.positions.push_back(static_cast<int32_t>(t) * pos_step + pos_offset);
    b.slot_mapping.push_back(table[static_cast<size_t>(t / bs)] * static_cast<int32_t>(bs) +
                             static_cast<int32_t>(t % bs));
  }
  b.query_start = {0, static_cast<int32_t>(T)};
  b.context_lens = {static_cast<int32_t>(T)};
  b.block_tables = table;
  b.max_blocks_per_seq = static_cast<int32_t>(table.size());
  return b;
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
