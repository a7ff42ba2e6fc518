// Recorded decode steps (CUDA graphs). A decode step issues ~300 small kernels
// from the host; at batch 1 their launch cost, not the GPU, sets the step time.
// For a decode batch (one new token per sequence, every row sampled) the step's
// inputs are copied into fixed per-shape buffers; the first such step of a
// shape runs eagerly on them (a warm-up that also allocates every buffer the
// ops need), the second is captured and then replayed for every later step of
// that shape. Attention is planned for the block table's capacity (a power of
// two of blocks), so one recording serves every context length up to it.
// Steps that need a host sync (the grouped cuBLAS MoE GEMM of prefill-sized
// batches) are never recorded. At most 96 shapes are kept; a new one past that
// drops the least recently used.
#include <algorithm>
#include <cstring>

#include "backend/cuda/cuda_backend_impl.h"
#include "core/check.h"

namespace r1::backend::cuda {
namespace {

constexpr int32_t kMaxRecordedSeqs = 256;
constexpr int32_t kMinTableBlocks = 8;

int32_t table_capacity(int32_t blocks) {
  int32_t c = kMinTableBlocks;
  while (c < blocks) c *= 2;
  return c;
}

// Decode batches only: one new token per sequence and every row's logits in order.
bool recordable(const BatchInfo& b) {
  const int32_t B = b.num_seqs();
  if (B < 1 || B > kMaxRecordedSeqs || b.num_tokens() != B) return false;
  if (static_cast<int32_t>(b.logits_indices.size()) != B) return false;
  for (int32_t i = 0; i < B; ++i)
    if (b.logits_indices[static_cast<size_t>(i)] != i || b.query_start[static_cast<size_t>(i)] != i)
      return false;
  return b.query_start[static_cast<size_t>(B)] == B;
}

}  // namespace

void CudaBackend::fill_random(Tensor& dst, const RandomFill& fill) {
  R1_CHECK(dst.device() == Device::kCuda && (is_bf16(dst) || dst.dtype() == DType::kF32),
           "fill_random of {}", dst.describe());
  launch_fill_random(dst.raw(), is_bf16(dst), dst.numel(), fill.state, fill.scale, fill.offset,
                     stream_);
}

void CudaBackend::destroy_recordings() {
  for (auto& [key, r] : recordings_)
    if (r->exec) cudaGraphExecDestroy(r->exec);
  recordings_.clear();
}

bool CudaBackend::begin_step(const BatchInfo& b, const KvCache& cache, const Tensor& out) {
  // A capture an exception cut short leaves the stream capturing: end it.
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream_, &status) == cudaSuccess &&
      status != cudaStreamCaptureStatusNone) {
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(stream_, &g);
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
  }
  cur_ = nullptr;
  cur_src_ = nullptr;
  capturing_ = replayed_ = capture_broken_ = step_synced_ = false;
  recent_ = {};         // no early inputs across steps
  pending_route_ = {};  // a step cut short by an error: its buffers may be gone
  if (!graphs_ || profiling_ || !recordable(b)) return false;

  const int32_t B = b.num_seqs();
  const int32_t MB = table_capacity(b.max_blocks_per_seq);
  const void* cache_id = cache.spec.mla ? (cache.latent.empty() ? nullptr : cache.latent[0].raw())
                                        : (cache.k.empty() ? nullptr : cache.k[0].raw());
  // A cache freed and another made at the same address must not reuse a recording
  // planned for its shape: the key holds the cache's geometry too.
  const std::array<int64_t, 5> key{B, MB, reinterpret_cast<int64_t>(cache_id),
                                   cache.num_blocks * 65536 + cache.block_size,
                                   reinterpret_cast<int64_t>(out.raw())};
  auto it = recordings_.find(key);
  if (it == recordings_.end()) {
    // Full: drop the least recently used shape (a server whose batch sizes drift keeps
    // recording the current ones). Its graph and fixed buffers go once the stream is idle.
    if (recordings_.size() >= max_recordings_) {
      auto lru = std::min_element(
          recordings_.begin(), recordings_.end(),
          [](const auto& a, const auto& b) { return a.second->last_used < b.second->last_used; });
      synchronize();
      if (lru->second->exec) cudaGraphExecDestroy(lru->second->exec);
      recordings_.erase(lru);
      ++graph_stats_.evictions;
    }
    it = recordings_.emplace(key, std::make_unique<StepRecording>()).first;
  }
  StepRecording& r = *it->second;
  r.last_used = ++steps_begun_;
  if (r.failed) return false;
  if (r.exec) {
    // Replay skips the ops' own checks: repeat the ones that guard memory.
    for (int32_t id : b.token_ids)
      R1_CHECK(id >= 0 && id < r.vocab, "token id {} outside vocabulary {}", id, r.vocab);
    for (int32_t s : b.slot_mapping)
      R1_CHECK(s >= 0 && s < r.num_slots, "slot {} outside cache of {} slots", s, r.num_slots);
  }

  // Fixed device layout: slots [B] | positions [B] | query_start [B+1] | tables [B*MB] | ids [B] |
  // rows [B].
  const size_t n = static_cast<size_t>(B) * 5 + 1 + static_cast<size_t>(B) * MB;
  DevBatch& d = r.db;
  if (!d.storage.defined()) {
    d.storage = alloc({static_cast<int64_t>(n)}, DType::kI32);
    int32_t* base = d.storage.data<int32_t>();
    d.slot_mapping = base;
    d.positions = base + B;
    d.query_start = d.positions + B;
    d.block_tables = d.query_start + B + 1;
    r.token_ids = d.block_tables + static_cast<size_t>(B) * MB;
    r.logits_rows = r.token_ids + B;
    d.fixed = true;
  }
  if (pinned_bytes_ < n * 4) {
    if (pinned_) R1_CUDA_OK(cudaFreeHost(pinned_));
    pinned_bytes_ = std::max<size_t>(n * 4, 1 << 16);
    R1_CUDA_OK(cudaMallocHost(&pinned_, pinned_bytes_));
  }
  // The previous step ended with a download on this stream, so the staging buffer is free.
  int32_t* h = static_cast<int32_t*>(pinned_);
  std::memcpy(h, b.slot_mapping.data(), static_cast<size_t>(B) * 4);
  std::memcpy(h + B, b.positions.data(), static_cast<size_t>(B) * 4);
  std::memcpy(h + 2 * B, b.query_start.data(), static_cast<size_t>(B + 1) * 4);
  int32_t* tables = h + 3 * B + 1;
  const int32_t copy = std::min(MB, b.max_blocks_per_seq);
  for (int32_t s = 0; s < B; ++s) {
    int32_t* row = tables + static_cast<size_t>(s) * MB;
    std::memcpy(row, b.block_tables.data() + static_cast<size_t>(s) * b.max_blocks_per_seq,
                static_cast<size_t>(copy) * 4);
    std::fill(row + copy, row + MB, -1);
  }
  std::memcpy(tables + static_cast<size_t>(B) * MB, b.token_ids.data(), static_cast<size_t>(B) * 4);
  std::memcpy(tables + static_cast<size_t>(B) * MB + B, b.logits_indices.data(),
              static_cast<size_t>(B) * 4);
  R1_CUDA_OK(cudaMemcpyAsync(d.storage.raw(), h, n * 4, cudaMemcpyHostToDevice, stream_));
  // Host copies the ops read (tile planning, checks).
  d.host.slot_mapping = b.slot_mapping;
  d.host.positions = b.positions;
  d.host.query_start = b.query_start;
  d.host.context_lens = b.context_lens;
  d.host.max_blocks_per_seq = MB;
  d.max_position = *std::max_element(b.positions.begin(), b.positions.end());

  cur_ = &r;
  cur_src_ = &b;
  if (r.exec) {
    R1_CUDA_OK(cudaGraphLaunch(r.exec, stream_));
    replayed_ = true;
    ++graph_stats_.replays;
    return true;
  }
  if (r.warmups > 0) {
    R1_CUDA_OK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
    capturing_ = true;
  }
  return false;
}

bool CudaBackend::end_step() {
  flush_route();
  StepRecording* r = cur_;
  cur_ = nullptr;
  cur_src_ = nullptr;
  if (r == nullptr) return true;
  if (replayed_) {
    replayed_ = false;
    return true;
  }
  if (!capturing_) {
    // The warm-up ran eagerly on the fixed buffers.
    ++r->warmups;
    ++graph_stats_.warmups;
    if (step_synced_) r->failed = true;
    return true;
  }
  capturing_ = false;
  cudaGraph_t g = nullptr;
  cudaError_t err = cudaStreamEndCapture(stream_, &g);
  if (err == cudaSuccess && !capture_broken_ && g != nullptr)
    err = cudaGraphInstantiate(&r->exec, g, 0);
  if (g) cudaGraphDestroy(g);
  if (err != cudaSuccess || capture_broken_ || r->exec == nullptr) {
    cudaGetLastError();
    if (r->exec) cudaGraphExecDestroy(r->exec);
    r->exec = nullptr;
    r->failed = true;
    capture_broken_ = false;
    ++graph_stats_.failures;
    return false;  // nothing ran: the model issues the step again, eagerly
  }
  ++graph_stats_.captures;
  R1_CUDA_OK(cudaGraphLaunch(r->exec, stream_));
  return true;
}

}  // namespace r1::backend::cuda
