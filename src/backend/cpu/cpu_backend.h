// CpuBackend: the Backend on the host. Activations are F32; weights are F32 or
// BF16 (zero-copy from the mapped checkpoint when stored that way). Work is
// split over a ThreadPool; inner loops come from the ISA table chosen at run
// time. Op families live in their own files (cpu_backend.cc: elementwise and
// products; attention.cc; moe.cc; the kernels in kernels_impl.inc).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "core/thread_pool.h"

namespace r1::backend::cpu {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads);

  Device device() const override { return Device::kCpu; }
  std::string name() const override;
  ThreadPool& pool() { return pool_; }
  const Kernels& kernels() const { return k_; }

  Tensor alloc(const Shape& shape, DType dtype) override;
  Tensor upload(const Tensor& host, DType dtype) override;
  Tensor upload_stacked(const std::vector<Tensor>& parts, DType dtype) override;
  void to_host(const Tensor& src, void* dst) override;
  KvCache alloc_kv_cache(const KvCacheSpec& spec, int64_t num_blocks, int64_t block_size) override;

  void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) override;
  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override;
  void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                    Tensor& out) override;
  void gather_rows(const Tensor& src, const std::vector<int32_t>& rows, Tensor& out) override;
  void add(const Tensor& a, const Tensor& b, Tensor& out) override;
  void silu_mul(const Tensor& gate_up, Tensor& out) override;
  void linear(const Tensor& x, const Linear& w, Tensor& out) override;
  void head_linear(const Tensor& x, int64_t x_head_stride, const Tensor& w, Tensor& out,
                   int64_t out_head_stride) override;
  void copy_heads(const Tensor& src, int64_t src_stride, int64_t src_offset, Tensor& dst,
                  int64_t dst_stride, int64_t dst_offset, int64_t width,
                  int64_t num_heads) override;
  void rope(Tensor& x, const std::vector<int32_t>& positions, const RopeParams& rope,
            int64_t num_heads, int64_t head_stride, int64_t offset) override;
  void moe_route(const Tensor& router_logits, const Tensor& bias, const RouterParams& params,
                 Tensor& ids, Tensor& weights) override;
  void moe_experts(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                   const Tensor& weights, Tensor& out) override;
  void cache_write(const Tensor& src, const BatchInfo& batch, Tensor& cache) override;
  void paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       const BatchInfo& batch, int64_t num_heads, int64_t num_kv_heads,
                       int64_t head_dim, float scale, Tensor& out) override;
  void mla_attention(const Tensor& q, const Tensor& latent_cache, const BatchInfo& batch,
                     int64_t num_heads, int64_t kv_lora_rank, int64_t rope_dim, float scale,
                     Tensor& out) override;
  void mla_decompressed_attention(const Tensor& q, const Tensor& latent_cache, const Linear& kv_b,
                                  const BatchInfo& batch, const MlaDims& d, float scale,
                                  Tensor& out) override;

  // out [M, N] = x [M, K] . w[N, K]^T (+bias) with rows of x and out strided;
  // split over the pool along N. Used by linear, head_linear and the MoE.
  // `scale` holds one F32 per row of w when w is int8 (undefined otherwise).
  void gemm(const float* x, int64_t ldx, int64_t M, const Tensor& w, int64_t w_offset_rows,
            int64_t N, const float* bias, float* out, int64_t ldo, const Tensor& scale = Tensor());

  // Several independent gemms (the heads of head_linear, the experts of a MoE
  // layer) split into row blocks and run in one parallel_for: one fork-join
  // instead of one per gemm, which is what small decode steps pay for.
  struct GemmJob {
    const float* x;
    int64_t ldx, M;
    const Tensor* w;
    int64_t w_offset_rows, N;
    const float* bias;
    float* out;
    int64_t ldo;
    const Tensor* scale;  // int8 row scales, or null
  };
  void gemm_batch(const std::vector<GemmJob>& jobs);

  // Wall time per op (cpu_bench --profile). Off by default: one branch per op.
  // Only outermost ops are timed; `bytes` counts weight bytes the op read.
  struct OpStat {
    int64_t calls = 0;
    double seconds = 0;
    double bytes = 0;
  };
  void set_profiling(bool on) { profiling_ = on; }
  std::map<std::string, OpStat> take_profile();

 private:
  friend class OpTimer;
  // moe_experts' intermediates, kept between calls.
  std::mutex moe_mu_;
  std::vector<float> moe_buf_[5];
  bool profiling_ = false;
  int op_depth_ = 0;
  std::map<std::string, OpStat> profile_;
  ThreadPool pool_;
  const Kernels& k_;
};

WeightType weight_type(const Tensor& w);

// Times one op into CpuBackend::profile_ when profiling is on; the name is
// only built (by the caller's lambda) when it is.
class OpTimer {
 public:
  template <typename NameFn>
  OpTimer(CpuBackend& be, NameFn&& name, double bytes = 0) : be_(be) {
    if (!be_.profiling_) return;
    entered_ = true;
    if (be_.op_depth_++ > 0) return;
    active_ = true;
    name_ = name();
    bytes_ = bytes;
    t0_ = std::chrono::steady_clock::now();
  }
  ~OpTimer();
  void add_bytes(double b) { bytes_ += b; }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  CpuBackend& be_;
  bool entered_ = false, active_ = false;
  std::string name_;
  double bytes_ = 0;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace r1::backend::cpu
