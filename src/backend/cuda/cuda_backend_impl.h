// CudaBackend: the Backend interface on one CUDA device. Memory comes from a
// caching allocator under a byte limit; host-side vectors the ops receive
// (token ids, positions, the BatchInfo) are uploaded once per distinct content
// and reused by every layer of a step. Internal header (includes CUDA's C API).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend/backend.h"
#include "backend/cuda/kernels.h"

namespace r1::backend::cuda {

// cuBLAS status names (gemm.cc) and the check that fails loudly on one.
const char* cublas_error(cublasStatus_t s);
#define R1_CUBLAS_OK(expr)                                                             \
  do {                                                                                 \
    cublasStatus_t st_ = (expr);                                                       \
    R1_CHECK(st_ == CUBLAS_STATUS_SUCCESS, "{} failed: {}", #expr, cublas_error(st_)); \
  } while (0)
// Whether rms_norm(x, norm_w) -> normed followed by a GEMV over K = x's rows can
// be one GEMV with the norm in it (gemm.cc; R1SERVE_CUDA_NORM_IN_GEMV=0: never).
bool norm_in_gemv();

class DeviceAllocator {
 public:
  DeviceAllocator(int device, size_t limit) : device_(device), limit_(limit) {}
  ~DeviceAllocator();
  void* get(size_t bytes);
  void put(void* p, size_t bytes);
  size_t limit() const { return limit_; }
  size_t reserved() const { return reserved_; }

 private:
  void release_cached();
  // A BF16 copy of x (in workspace `slot`) when x is F32.
  Tensor as_bf16(const Tensor& x, int slot);
  int device_;
  bool f32_act_ = false;
  size_t limit_;
  size_t reserved_ = 0;  // bytes held from cudaMalloc (in use + cached)
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
};

// MLA prefill over decompressed keys (mla_decompressed_attention): each
// sequence's context rows back to back, their cache slots, and the query tiles.
struct MlaContextPlan {
  int64_t block_size = 0;  // of the cache planned for; 0: not planned
  int64_t keys = 0;        // context rows of all sequences
  int32_t num_tiles = 0;
  Tensor storage;  // slots [keys] | ctx_start [num_seqs] | tiles
  const int32_t* slots = nullptr;
  const int32_t* ctx_start = nullptr;
  const MlaPrefillTile* tiles = nullptr;
};

// Device copies of one BatchInfo, plus the attention tiles planned for it.
struct DevBatch {
  BatchInfo host;
  int32_t* slot_mapping = nullptr;
  int32_t* positions = nullptr;
  int32_t* query_start = nullptr;
  int32_t* block_tables = nullptr;
  int32_t max_position = 0;
  // A recorded step's copy: fixed addresses, attention planned for the block
  // table's capacity (max_blocks_per_seq x block size) rather than max_position.
  bool fixed = false;
  Tensor storage;
  // attention tile plans keyed by (G, nkv)
  std::unordered_map<int64_t, std::pair<Tensor, int32_t>> tiles;
  MlaContextPlan mla_ctx;
};

// One recorded decode step (a CUDA graph) and the fixed device buffers its
// inputs are copied into before each replay.
struct StepRecording {
  DevBatch db;                         // slot_mapping, positions, query_start, block_tables
  int32_t* token_ids = nullptr;        // [B]
  int32_t* logits_rows = nullptr;      // [B]
  int64_t vocab = -1, num_slots = -1;  // seen by embedding / cache_write, checked at replay
  int warmups = 0;                     // eager runs on the fixed buffers so far
  uint64_t last_used = 0;              // the backend's step count when last used (for eviction)
  bool failed = false;                 // not capturable (a host sync, or capture failed)
  cudaGraphExec_t exec = nullptr;
};

class CudaBackend;

// Records GPU events around one op when R1SERVE_CUDA_PROFILE is set.
class OpTimer {
 public:
  OpTimer(CudaBackend& be, const char* name);
  ~OpTimer();

 private:
  CudaBackend* be_;
  const char* name_;
  cudaEvent_t e0_ = nullptr, e1_ = nullptr;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, double memory_fraction, bool f32_activations);
  ~CudaBackend() override;

  Device device() const override { return Device::kCuda; }
  std::string name() const override;
  DType activation_dtype() const override { return f32_act_ ? DType::kF32 : DType::kBF16; }

  Tensor alloc(const Shape& shape, DType dtype) override;
  Tensor upload(const Tensor& host, DType dtype) override;
  Tensor upload_stacked(const std::vector<Tensor>& parts, DType dtype) override;
  void to_host(const Tensor& src, void* dst) override;
  KvCache alloc_kv_cache(const KvCacheSpec& spec, int64_t num_blocks, int64_t block_size) override;
  void synchronize() override;

  void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) override;
  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override;
  void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                    Tensor& out) override;
  void gather_rows(const Tensor& src, const std::vector<int32_t>& rows, Tensor& out) override;
  void add(const Tensor& a, const Tensor& b, Tensor& out) override;
  void silu_mul(const Tensor& gate_up, Tensor& out) override;
  void linear(const Tensor& x, const Linear& w, Tensor& out) override;
  void linear_pair(const Tensor& x, const Linear& w1, Tensor& out1, const Linear& w2,
                   Tensor& out2) override;
  void linear_swiglu(const Tensor& x, const Linear& gate_up, Tensor& gu, Tensor& out) override;
  void linear_add(const Tensor& x, const Linear& w, Tensor& residual, Tensor& tmp) override;
  void rms_norm_linear(const Tensor& x, const Tensor& norm_w, float eps, Tensor& normed,
                       const Linear& w, Tensor& out) override;
  void rms_norm_linear_swiglu(const Tensor& x, const Tensor& norm_w, float eps, Tensor& normed,
                              const Linear& gate_up, Tensor& gu, Tensor& out) override;
  void rms_norm_linear_pair(const Tensor& x, const Tensor& norm_w, float eps, Tensor& normed,
                            const Linear& w1, Tensor& out1, const Linear& w2,
                            Tensor& out2) override;
  bool folds_norms(int64_t num_tokens) const override;
  void rms_norm_linear_head(const Tensor& x, const Tensor& norm_w, float eps, Tensor& normed,
                            const Linear& w, Tensor& out, int64_t head_stride, const Tensor& w_head,
                            Tensor& out2, int64_t out2_head_stride) override;
  void head_linear(const Tensor& x, int64_t x_head_stride, const Tensor& w, Tensor& out,
                   int64_t out_head_stride) override;
  void copy_heads(const Tensor& src, int64_t src_stride, int64_t src_offset, Tensor& dst,
                  int64_t dst_stride, int64_t dst_offset, int64_t width,
                  int64_t num_heads) override;
  void rope(Tensor& x, const std::vector<int32_t>& positions, const RopeParams& rope,
            int64_t num_heads, int64_t head_stride, int64_t offset) override;
  void rope_copy(const Tensor& src, int64_t src_stride, int64_t src_offset, Tensor& dst,
                 int64_t dst_stride, int64_t dst_offset, int64_t num_heads,
                 const std::vector<int32_t>& positions, const RopeParams& rope) override;
  void mla_latent_write(const Tensor& kv, const Tensor& w, float eps, const RopeParams& rope,
                        const BatchInfo& batch, Tensor& latent, Tensor& cache) override;
  void rms_norm_qkv_rope_cache_write(const Tensor& x, const Tensor& norm_w, float eps,
                                     Tensor& normed, const Linear& w_qkv, Tensor& qkv, int64_t nh,
                                     int64_t nkv, int64_t d, const RopeParams& rope,
                                     const BatchInfo& batch, Tensor& q, Tensor& k, Tensor& v,
                                     Tensor& k_cache, Tensor& v_cache) override;
  void qkv_rope_cache_write(const Tensor& qkv, int64_t nh, int64_t nkv, int64_t d,
                            const RopeParams& rope, const BatchInfo& batch, Tensor& q, Tensor& k,
                            Tensor& v, Tensor& k_cache, Tensor& v_cache) override;
  void argmax_rows(const Tensor& x, Tensor& ids) override;
  void moe_route(const Tensor& router_logits, const Tensor& bias, const RouterParams& params,
                 Tensor& ids, Tensor& weights) override;
  void moe_experts(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                   const Tensor& weights, Tensor& out) override;
  void moe_experts_plus(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                        const Tensor& weights, const Tensor& shared, Tensor& out) override;
  void moe_experts_add(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                       const Tensor& weights, const Tensor& shared, Tensor& residual,
                       Tensor& tmp) override;
  void rms_norm_moe_experts_add(const Tensor& x, const Tensor& norm_w, float eps, Tensor& normed,
                                const ExpertWeights& w, const Tensor& ids, const Tensor& weights,
                                const Tensor& shared, Tensor& residual, Tensor& tmp) override;
  void rms_norm_moe_shared_experts_add(const Tensor& x, const Tensor& norm_w, float eps,
                                       Tensor& normed, const ExpertWeights& w, const Tensor& ids,
                                       const Tensor& weights, const Linear& shared_gate_up,
                                       const Linear& shared_down, Tensor& gu, Tensor& act,
                                       Tensor& shared, Tensor& residual, Tensor& tmp) override;
  void cache_write(const Tensor& src, const BatchInfo& batch, Tensor& cache) override;
  void paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       const BatchInfo& batch, int64_t num_heads, int64_t num_kv_heads,
                       int64_t head_dim, float scale, Tensor& out) override;
  void mla_attention(const Tensor& q, const Tensor& latent_cache, const BatchInfo& batch,
                     int64_t num_heads, int64_t kv_lora_rank, int64_t rope_dim, float scale,
                     Tensor& out) override;
  void mla_absorbed_attention(const Tensor& kv, const Tensor& kv_norm, float eps,
                              const RopeParams& rope, const BatchInfo& batch, Tensor& latent,
                              Tensor& cache, const Tensor& q, int64_t q_stride, int64_t q_offset,
                              Tensor& qa, int64_t num_heads, int64_t kv_lora_rank, int64_t rope_dim,
                              float scale, Tensor& out) override;
  void mla_absorbed_attention_uv(const Tensor& kv, const Tensor& kv_norm, float eps,
                                 const RopeParams& rope, const BatchInfo& batch, Tensor& latent,
                                 Tensor& cache, const Tensor& q, int64_t q_stride, int64_t q_offset,
                                 Tensor& qa, int64_t num_heads, int64_t kv_lora_rank,
                                 int64_t rope_dim, float scale, Tensor& latent_out,
                                 const Tensor& w_uv, Tensor& out, int64_t out_head_stride) override;
  void mla_decompressed_attention(const Tensor& q, const Tensor& latent_cache, const Linear& kv_b,
                                  const BatchInfo& batch, const MlaDims& d, float scale,
                                  Tensor& out) override;
  bool mla_decompressed_available(const MlaDims& d) const override;
  bool prefers_decompressed_mla(const BatchInfo& batch, const MlaDims& d) const override;

  void fill_random(Tensor& dst, const RandomFill& fill) override;
  bool begin_step(const BatchInfo& batch, const KvCache& cache, const Tensor& out) override;
  bool end_step() override;

  int64_t free_bytes() const;
  void set_graphs(bool on) { graphs_ = on; }
  // Waits for the stream, then forgets every recorded step (the next steps record anew).
  void drop_recordings() {
    synchronize();
    destroy_recordings();
  }
  // Recorded steps replayed, captured and run eagerly (warm-ups) so far.
  struct GraphStats {
    int64_t replays = 0, captures = 0, warmups = 0, failures = 0, evictions = 0;
  };
  GraphStats graph_stats() const { return graph_stats_; }
  // At most this many recorded shapes (default 96); past it the least recently used is dropped.
  void set_max_recordings(size_t n) {
    drop_recordings();
    max_recordings_ = std::max<size_t>(n, 1);
  }
  // Per-op GPU time since the last report (R1SERVE_CUDA_PROFILE set), then clears.
  std::string profile_report();
  // Turning profiling on holds the stream for 50 ms, so the next step is queued
  // whole before it runs and its op times are GPU times, not host gaps.
  void set_profiling(bool on);
  cudaStream_t stream() const { return stream_; }

 private:
  // A device buffer of at least `bytes` for temporary use by one op (slot names the use).
  void* workspace(int slot, size_t bytes);
  // At least n int32 counters, zero between kernel launches (kernels reset what they use).
  int32_t* zeroed_counters(size_t n);
  Tensor counters_;
  // The streamed experts' "routing written" word (launch_moe_gate_up_stream's ready).
  int32_t* route_ready_word();
  Tensor route_ready_;
  // argmax_rows' chunk partials and per-row counters (zeroed when made; the
  // kernel resets them), sized for the most rows seen.
  Tensor argmax_ws_;
  int64_t argmax_rows_cap_ = 0;
  // Device copy of a small host vector; cached by content (a few entries).
  const int32_t* dev_ints(const std::vector<int32_t>& v);
  const float* dev_floats(const std::vector<float>& v);
  DevBatch& dev_batch(const BatchInfo& b);
  std::pair<const AttnTile*, int32_t> attn_tiles(DevBatch& db, int64_t G, int64_t nkv);
  void attention(const Tensor& q, int64_t q_head_stride, const Tensor& k, const Tensor& v,
                 int64_t k_head_off, const BatchInfo& batch, int64_t num_heads, int64_t nkv,
                 int64_t dk, int64_t dv, float scale, Tensor& out, int64_t out_head_stride);
  // Tensor-core attention (mla_attention.cu) for MLA and GQA: arguments and split plan.
  MlaArgs mma_args(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                   const BatchInfo& batch, int64_t num_heads, int32_t group_rows, int64_t kv_off,
                   float scale, Tensor& out);
  void plan_splits(MlaArgs& a, DevBatch& d, int64_t groups, int64_t dv, bool spare = false);
  bool absorbed_attention_fused(const Tensor& kv, const Tensor& kv_norm, float eps,
                                const RopeParams& rope, const BatchInfo& batch, Tensor& cache,
                                const Tensor& q, int64_t q_stride, int64_t q_offset, Tensor& qa,
                                int64_t num_heads, int64_t kv_lora_rank, int64_t rope_dim,
                                float scale, Tensor& out, bool defer, MlaArgs& a);
  const MlaContextPlan& mla_context(DevBatch& d, int64_t block_size);
  void gemm(const Tensor& x, int64_t ldx, const void* w, int64_t N, int64_t K, Tensor& out,
            int64_t ldo);
  // The split-K tensor-core kernel for decode batches (skinny_gemm.cu) where it
  // applies; false: the caller uses cuBLAS.
  bool skinny_gemm(const Tensor& x, int64_t ldx, int64_t x_hs, const void* w, int64_t w_hs,
                   int64_t heads, int64_t N, int64_t K, Tensor& out, int64_t ldo, int64_t o_hs);

  // A BF16 copy of x (in workspace `slot`) when x is F32.
  Tensor as_bf16(const Tensor& x, int slot);
  int device_;
  bool f32_act_ = false;
  int sm_count_ = 0;
  std::shared_ptr<DeviceAllocator> alloc_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  std::array<Tensor, 16> ws_;
  struct IntEntry {
    std::vector<int32_t> host;
    Tensor dev;
  };
  std::vector<IntEntry> ints_;  // most recent last
  size_t ints_next_ = 0;
  struct FloatEntry {
    std::vector<float> host;
    Tensor dev;
  };
  std::vector<FloatEntry> floats_;
  std::vector<std::unique_ptr<DevBatch>> batches_;
  size_t batches_next_ = 0;
  bool grouped_ok_ = true;  // cublasGemmGroupedBatchedEx works here
  friend class OpTimer;
  bool profiling_ = false;
  struct Timing {
    const char* name;
    cudaEvent_t e0, e1;
  };
  std::vector<Timing> timings_;

  // ---- step recording (step_graphs.cc) ----
  bool graphs_ = true;
  // Keyed by (sequences, table capacity, cache address, cache blocks x block size, output address).
  std::map<std::array<int64_t, 5>, std::unique_ptr<StepRecording>> recordings_;
  StepRecording* cur_ = nullptr;  // the recording this step uses, if any
  uint64_t steps_begun_ = 0;      // begin_step calls that found a recordable batch
  size_t max_recordings_ = 96;
  const BatchInfo* cur_src_ = nullptr;  // the batch it was given
  bool capturing_ = false, replayed_ = false, capture_broken_ = false, step_synced_ = false;
  // The last routing's ids buffer and the stream's launch count just after it
  // (the streamed experts may read ids before pdl_wait when a kernel came between).
  const void* route_ids_ = nullptr;
  uint64_t route_launch_ = 0;
  // A one-token routing held back for the streamed experts, which route the
  // token themselves from the logits (one kernel fewer a MoE layer;
  // R1SERVE_CUDA_MOE_INLINE_ROUTE=0 always runs the route kernel).
  // flush_route() launches the route kernel for it when anything else may
  // read its outputs: other expert paths, to_host, synchronize, end_step.
  struct PendingRoute {
    RouteArgs args;
    Tensor logits;
    int32_t* ids = nullptr;
    float* weights = nullptr;
    bool on = false;
  };
  PendingRoute pending_route_;
  void flush_route();
  // The last outputs of rms_norm and the GEMV-path products (linear,
  // linear_swiglu, head_linear, and the residuals of linear_add and the
  // streamed experts) with the stream's launch count just after each
  // was written; cleared at every step's start. A GEMV whose input is one of
  // them with a kernel in between reads it before pdl_wait (GemvFusion::x_early).
  struct RecentWrite {
    const void* p = nullptr;
    uint64_t after = 0;
  };
  std::array<RecentWrite, 4> recent_{};
  int recent_next_ = 0;
  void note_write(const Tensor& out);
  bool early_input(const Tensor& x) const;
  // A kernel that reads its input before pdl_wait also lets the next kernel
  // launch before that wait (pdl_trigger comes first), so the kernel after it
  // may start before the one before it is done: data two launches back is
  // complete only if some launch in between triggered after its wait. The
  // backend notes such early launches (note_early after each launch that may
  // be one) and settled_since(after) tells whether a launch after count
  // `after` is one that triggered after its wait.
  void note_early(bool early);
  bool settled_since(uint64_t after) const;
  uint64_t early_end_ = 0;       // the launch count after the last early launch
  uint64_t early_run_ = 0;       // consecutive early launches ending there
  std::vector<Tensor> retired_;  // outgrown workspaces a recording may still use
  void* pinned_ = nullptr;       // host staging for a recording's inputs
  size_t pinned_bytes_ = 0;
  void* download_ = nullptr;  // pinned staging for large to_host copies
  size_t download_bytes_ = 0;
  GraphStats graph_stats_;
  void* cublas_ws_ = nullptr;
  void destroy_recordings();
  // moe_experts with the combine adding `addend` (may be null) to the routed sum.
  // With `residual`, the one-token streamed form adds that into it (out is then
  // scratch it does not write) and returns true; otherwise it returns false
  // having done nothing. norm_w set (with residual): the experts read
  // RMSNorm(x) with norm_w and eps, folded into the streamed gate/up products.
  // shared_mlp (gate_up, down): the shared experts' MLP in the streamed
  // kernels (its output takes addend's place); false, doing nothing, where
  // those kernels do not run.
  bool moe_experts_into(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                        const Tensor& weights, const Tensor* addend, Tensor& out,
                        Tensor* residual = nullptr, const float* norm_w = nullptr, float eps = 0.0f,
                        const Linear* shared_mlp = nullptr);
  // Side streams (each with its own cuBLAS handle and workspace) for the
  // per-expert GEMMs of large steps, so several experts' tiles share the SMs.
  static constexpr int kSideStreams = 4;
  struct Side {
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    void* ws = nullptr;
    cudaEvent_t done = nullptr;
  };
  std::array<Side, kSideStreams> sides_{};
  cudaEvent_t fork_ = nullptr;
  // Makes the side streams wait for the main stream's work so far.
  void fork_sides();
  // Makes the main stream wait for the side streams' work so far.
  void join_sides();
};

bool is_bf16(const Tensor& t);

}  // namespace r1::backend::cuda
