// Matrix products on cuBLAS (BF16 operands, F32 accumulation, BF16 or F32
// output): linear, per-head batched products, and the routed experts (GEMV
// kernels that read only the selected experts at small batches; one grouped
// cuBLAS GEMM per projection for larger ones).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "backend/cuda/cuda_backend_impl.h"
#include "core/check.h"
#include "core/status.h"

namespace r1::backend::cuda {
namespace {

const char* cublas_error(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "alloc failed";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "arch mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "execution failed";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "not supported";
    default:
      return "error";
  }
}

#define R1_CUBLAS_OK(expr)                                                             \
  do {                                                                                 \
    cublasStatus_t st_ = (expr);                                                       \
    R1_CHECK(st_ == CUBLAS_STATUS_SUCCESS, "{} failed: {}", #expr, cublas_error(st_)); \
  } while (0)

cudaDataType_t cuda_type(const Tensor& t) {
  return is_bf16(t) ? CUDA_R_16BF : CUDA_R_32F;
}

// Small batches of routed pairs use the GEMV kernels (no host sync).
// R1SERVE_CUDA_MOE_GEMV_PAIRS overrides the limit (for side-by-side runs).
int64_t gemv_max_pairs() {
  static const int64_t limit = [] {
    const char* e = std::getenv("R1SERVE_CUDA_MOE_GEMV_PAIRS");
    return e != nullptr ? std::max<int64_t>(0, std::atoll(e)) : int64_t{64};
  }();
  return limit;
}
// R1SERVE_CUDA_COMBINE_RESIDUAL=0: the MoE residual add stays a kernel of its own on the
// non-streamed paths (side-by-side runs).
bool combine_residual_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("R1SERVE_CUDA_COMBINE_RESIDUAL");
    return e == nullptr || e[0] != '0';
  }();
  return on;
}
// Dense products of up to this many rows use the GEMV kernel (weights read once, 16-byte loads).
constexpr int64_t kGemvMaxTokens = 4;

}  // namespace

// Decode batches past the GEMV's few rows and up to this many: skinny_gemm.cu.
// Measured on an H100 against cuBLAS (session 2, run E): batch 8 +3.9 %, batch 32
// neutral (its kernels cost more than cuBLAS's, but the idle gaps between cuBLAS
// launches, which do not overlap, go), batch 128 -12 % with 64-token tiles.
constexpr int64_t kSkinnyMaxTokens = 32;

bool CudaBackend::skinny_gemm(const Tensor& x, int64_t ldx, int64_t x_hs, const void* w,
                              int64_t w_hs, int64_t heads, int64_t N, int64_t K, Tensor& out,
                              int64_t ldo, int64_t o_hs) {
  const int64_t M = x.dim(0);
  if (!skinny_gemm_enabled() || M <= kGemvMaxTokens || M > kSkinnyMaxTokens || !is_bf16(x) ||
      !(is_bf16(out) || out.dtype() == DType::kF32) || K % 8 != 0 || ldx % 8 != 0 ||
      x_hs % 8 != 0 || w_hs % 8 != 0 || reinterpret_cast<uintptr_t>(x.raw()) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(w) % 16 != 0)
    return false;
  // Only where the product has too few output tiles to fill the GPU (the plan
  // splits K): cuBLAS streams the large ones (lm_head, the dense MLP) faster
  // (session 2, run D: lm_head 213 vs 197 us at batch 32).
  const SkinnyPlan p = plan_skinny_gemm(M, N, K, heads, sm_count_);
  if (p.splits < 2 || !skinny_plan_fits(p)) return false;
  launch_skinny_gemm(p, x.data<uint16_t>(), ldx, x_hs, static_cast<const uint16_t*>(w), w_hs, heads,
                     M, N, K, out.raw(), is_bf16(out), ldo, o_hs, stream_);
  return true;
}

// out[:, :N] (ld ldo) = x (ld ldx) W^T with W BF16 [N, K].
void CudaBackend::gemm(const Tensor& x, int64_t ldx, const void* w, int64_t N, int64_t K,
                       Tensor& out, int64_t ldo) {
  const int64_t M = x.dim(0);
  if (M == 0) return;
  if (skinny_gemm(x, ldx, 0, w, 0, 1, N, K, out, ldo, 0)) return;
  const float alpha = 1.0f, beta = 0.0f;
  R1_CUBLAS_OK(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N),
                            static_cast<int>(M), static_cast<int>(K), &alpha, w, CUDA_R_16BF,
                            static_cast<int>(K), x.raw(), CUDA_R_16BF, static_cast<int>(ldx), &beta,
                            out.raw(), cuda_type(out), static_cast<int>(ldo), CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::linear(const Tensor& x, const Linear& w, Tensor& out) {
  OpTimer timer(*this, "linear");
  const int64_t M = x.dim(0), K = x.row_size(), N = w.out_features();
  R1_CHECK(w.in_features() == K, "linear: x {} vs weight {}", x.describe(), w.weight.describe());
  R1_CHECK(out.dim(0) == M && out.row_size() == N, "linear out {} for [{}, {}]", out.describe(), M,
           N);
  R1_CHECK(is_bf16(w.weight), "CUDA linear needs BF16 weights, got {}", w.weight.describe());
  if (w.scale.defined())
    throw Error(make_error(
        ErrorCode::kUnsupported,
        "CUDA linear: int8 weights with row scales are CPU-only; load BF16 or FP8 weights for "
        "--device cuda (weight {}, scale {})",
        w.weight.describe(), w.scale.describe()));
  R1_CHECK(!w.bias.defined() || (w.bias.dtype() == DType::kF32 && w.bias.numel() == N),
           "linear bias {}", w.bias.describe());
  if (f32_act_ && !is_bf16(x)) {
    // Validation mode: F32 activations times the exactly widened BF16 weights, F32 accumulation.
    launch_ref_gemm(x.raw(), false, K, 0, w.weight.data<uint16_t>(), 0, N, K, M, 1, out.raw(),
                    is_bf16(out), N, 0, stream_);
    if (w.bias.defined())
      launch_add_bias(out.raw(), is_bf16(out), w.bias.data<float>(), M, N, stream_);
    return;
  }
  Tensor xb = as_bf16(x, 3);
  if (M <= kGemvMaxTokens && K % 8 == 0) {
    // The bias is added in the GEMV's epilogue.
    GemvFusion f;
    f.x_early = early_input(xb);
    launch_dense_gemv_fused(xb.data<uint16_t>(), K, w.weight.data<uint16_t>(), N, K, M,
                            w.bias.defined() ? w.bias.data<float>() : nullptr, false, f, out.raw(),
                            is_bf16(out), N, stream_);
    note_early(f.x_early);
    note_write(out);
    return;
  }
  gemm(xb, K, w.weight.raw(), N, K, out, N);
  if (w.bias.defined())
    launch_add_bias(out.raw(), is_bf16(out), w.bias.data<float>(), M, N, stream_);
  note_write(out);
}

namespace {
// R1SERVE_CUDA_LINEAR_PAIR=0: the two products are launched one by one (side-by-side runs).
bool linear_pair_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("R1SERVE_CUDA_LINEAR_PAIR");
    return e == nullptr || e[0] != '0';
  }();
  return on;
}
}  // namespace

// Few-token steps: both products in one GEMV launch (one kernel fewer on the
// chain; its plan is that of the N1 + N2 rows); otherwise linear twice.
void CudaBackend::linear_pair(const Tensor& x, const Linear& w1, Tensor& out1, const Linear& w2,
                              Tensor& out2) {
  const int64_t M = x.dim(0), K = x.row_size(), N1 = w1.out_features(), N2 = w2.out_features();
  auto plain = [](const Linear& w) {
    return !w.bias.defined() && !w.scale.defined() && is_bf16(w.weight);
  };
  if (!linear_pair_enabled() || f32_act_ || M > kGemvMaxTokens || K % 8 != 0 || !plain(w1) ||
      !plain(w2) || w1.in_features() != K || w2.in_features() != K ||
      is_bf16(out1) != is_bf16(out2)) {
    Backend::linear_pair(x, w1, out1, w2, out2);
    return;
  }
  OpTimer timer(*this, "linear");
  R1_CHECK(out1.dim(0) == M && out1.row_size() == N1 && out2.dim(0) == M && out2.row_size() == N2,
           "linear_pair outs {} {} for [{}, {} + {}]", out1.describe(), out2.describe(), M, N1, N2);
  Tensor xb = as_bf16(x, 3);
  GemvFusion f;
  f.x_early = early_input(xb);
  f.w2 = w2.weight.data<uint16_t>();
  f.n_first = N1;
  f.out2 = out2.raw();
  f.ldo2 = N2;
  launch_dense_gemv_fused(xb.data<uint16_t>(), K, w1.weight.data<uint16_t>(), N1 + N2, K, M,
                          nullptr, false, f, out1.raw(), is_bf16(out1), N1, stream_);
  note_early(f.x_early);
  note_write(out1);
  note_write(out2);
}

void CudaBackend::linear_swiglu(const Tensor& x, const Linear& gate_up, Tensor& gu, Tensor& out) {
  const int64_t M = x.dim(0), K = x.row_size(), I = gate_up.out_features() / 2;
  // One GEMV that writes silu(g) * u for the few-token steps; otherwise the plain ops.
  if (f32_act_ || M > kGemvMaxTokens || K % 8 != 0 || gate_up.bias.defined() ||
      gate_up.scale.defined() || !is_bf16(gate_up.weight) || !is_bf16(out) ||
      gate_up.in_features() != K) {
    Backend::linear_swiglu(x, gate_up, gu, out);
    return;
  }
  OpTimer timer(*this, "linear_swiglu");
  R1_CHECK(out.dim(0) == M && out.row_size() == I, "linear_swiglu out {} for [{}, {}]",
           out.describe(), M, I);
  Tensor xb = as_bf16(x, 3);
  GemvFusion f;
  f.x_early = early_input(xb);
  launch_dense_gemv_fused(xb.data<uint16_t>(), K, gate_up.weight.data<uint16_t>(), I, K, M, nullptr,
                          true, f, out.raw(), true, I, stream_);
  note_early(f.x_early);
  note_write(out);
}

namespace {

bool overlaps(const Tensor& a, const Tensor& b) {
  const char *a0 = static_cast<const char*>(a.raw()), *b0 = static_cast<const char*>(b.raw());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// Whether rms_norm(x, norm_w) -> normed followed by a GEMV over K = x's rows can
// be one GEMV with the norm in it: BF16 x, few tokens, no validation mode.
// R1SERVE_CUDA_NORM_IN_GEMV=0 keeps the norm a kernel of its own (side-by-side runs).
bool norm_in_gemv() {
  static const bool on = [] {
    const char* e = std::getenv("R1SERVE_CUDA_NORM_IN_GEMV");
    return e == nullptr || e[0] != '0';
  }();
  return on;
}

// How the norm goes into a GEMV reading `bytes` of weights: folded into the
// products (no latency before them; what the DeepSeek layer's small
// projections want) up to R1SERVE_CUDA_NORM_FOLD_MB (default 16, the L2
// prefetch limit), the prologue above it (where the folded norm's extra work
// per weight costs more than the prologue's round trip: the 7B's q/k/v and
// gate/up GEMVs, 2 % slower folded, docs/performance.md day 4) or where the
// rows are too long for it.
std::atomic<int64_t> g_fold_max{-1};  // bytes; -1: from the environment
bool fold_norm(int64_t bytes, int64_t K) {
  int64_t limit = g_fold_max.load(std::memory_order_relaxed);
  if (limit < 0) {
    const char* e = std::getenv("R1SERVE_CUDA_NORM_FOLD_MB");
    limit = (e != nullptr ? std::atoll(e) : int64_t{16}) << 20;
    g_fold_max.store(limit, std::memory_order_relaxed);
  }
  return bytes <= limit || K > 8192;
}

bool norm_fusable(bool f32_act, const Tensor& x, const Tensor& norm_w, const Tensor& normed,
                  const Linear& w) {
  const int64_t M = x.dim(0), K = x.row_size();
  return norm_in_gemv() && !f32_act && M > 0 && M <= kGemvMaxTokens && is_bf16(x) &&
         normed.defined() && is_bf16(normed) && normed.dim(0) == M && normed.row_size() == K &&
         reinterpret_cast<uintptr_t>(normed.raw()) % 16 == 0 && norm_w.dtype() == DType::kF32 &&
         norm_w.numel() == K && !w.scale.defined() && is_bf16(w.weight) && w.in_features() == K &&
         dense_gemv_norm_ok(K, x.raw(), K, norm_w.data<float>(),
                            fold_norm(static_cast<int64_t>(w.weight.nbytes()), K));
}

// The fusion of a norm into a GEMV over `bytes` of weights reading x.
GemvFusion norm_fusion(const Tensor& norm_w, float eps, int64_t bytes, int64_t K, bool x_early) {
  GemvFusion f;
  f.norm_w = norm_w.data<float>();
  f.eps = eps;
  f.norm_fold = fold_norm(bytes, K);
  f.x_early = x_early && f.norm_fold;  // the prologue reads x after pdl_wait
  return f;
}

}  // namespace

void CudaBackend::linear_add(const Tensor& x, const Linear& w, Tensor& residual, Tensor& tmp) {
  const int64_t M = x.dim(0), K = x.row_size(), N = w.out_features();
  // The residual add in the GEMV's epilogue where linear would use the GEMV;
  // otherwise (and in the F32 validation mode) the plain ops.
  const bool float_res = is_bf16(residual) || residual.dtype() == DType::kF32;
  const bool float_tmp = is_bf16(tmp) || tmp.dtype() == DType::kF32;
  if (f32_act_ || M == 0 || M > kGemvMaxTokens || K % 8 != 0 || w.scale.defined() ||
      !is_bf16(w.weight) || w.in_features() != K || !float_res || !float_tmp ||
      residual.dim(0) != M || residual.row_size() != N || overlaps(x, residual)) {
    Backend::linear_add(x, w, residual, tmp);
    return;
  }
  OpTimer timer(*this, "linear_add");
  R1_CHECK(!w.bias.defined() || (w.bias.dtype() == DType::kF32 && w.bias.numel() == N),
           "linear_add bias {}", w.bias.describe());
  Tensor xb = as_bf16(x, 3);
  GemvFusion f;
  f.residual = residual.raw();
  f.residual_bf = is_bf16(residual);
  f.ldr = N;
  f.round_bf = is_bf16(tmp);  // the plain ops round the product to tmp's dtype
  launch_dense_gemv_fused(xb.data<uint16_t>(), K, w.weight.data<uint16_t>(), N, K, M,
                          w.bias.defined() ? w.bias.data<float>() : nullptr, false, f, nullptr,
                          true, N, stream_);
  note_early(f.x_early);
  note_write(residual);
}

void CudaBackend::rms_norm_linear(const Tensor& x, const Tensor& norm_w, float eps, Tensor& normed,
                                  const Linear& w, Tensor& out) {
  if (!norm_fusable(f32_act_, x, norm_w, normed, w)) {
    Backend::rms_norm_linear(x, norm_w, eps, normed, w, out);
    return;
  }
  OpTimer timer(*this, "rms_norm_linear");
  const int64_t M = x.dim(0), K = x.row_size(), N = w.out_features();
  R1_CHECK(out.dim(0) == M && out.row_size() == N, "rms_norm_linear out {} for [{}, {}]",
           out.describe(), M, N);
  R1_CHECK(!w.bias.defined() || (w.bias.dtype() == DType::kF32 && w.bias.numel() == N),
           "rms_norm_linear bias {}", w.bias.describe());
  GemvFusion f =
      norm_fusion(norm_w, eps, static_cast<int64_t>(w.weight.nbytes()), K, early_input(x));
  launch_dense_gemv_fused(x.data<uint16_t>(), K, w.weight.data<uint16_t>(), N, K, M,
                          w.bias.defined() ? w.bias.data<float>() : nullptr, false, f, out.raw(),
                          is_bf16(out), N, stream_);
  note_early(f.x_early);
  note_write(out);
}

void CudaBackend::rms_norm_linear_pair(const Tensor& x, const Tensor& norm_w, float eps,
                                       Tensor& normed, const Linear& w1, Tensor& out1,
                                       const Linear& w2, Tensor& out2) {
  const int64_t M = x.dim(0), K = x.row_size(), N1 = w1.out_features(), N2 = w2.out_features();
  if (!linear_pair_enabled() || !norm_fusable(f32_act_, x, norm_w, normed, w1) ||
      !norm_fusable(f32_act_, x, norm_w, normed, w2) || w1.bias.defined() || w2.bias.defined() ||
      is_bf16(out1) != is_bf16(out2)) {
    Backend::rms_norm_linear_pair(x, norm_w, eps, normed, w1, out1, w2, out2);
    return;
  }
  OpTimer timer(*this, "rms_norm_linear");
  R1_CHECK(out1.dim(0) == M && out1.row_size() == N1 && out2.dim(0) == M && out2.row_size() == N2,
           "rms_norm_linear_pair outs {} {} for [{}, {} + {}]", out1.describe(), out2.describe(), M,
           N1, N2);
  GemvFusion f =
      norm_fusion(norm_w, eps, static_cast<int64_t>(w1.weight.nbytes() + w2.weight.nbytes()), K,
                  early_input(x));
  f.w2 = w2.weight.data<uint16_t>();
  f.n_first = N1;
  f.out2 = out2.raw();
  f.ldo2 = N2;
  launch_dense_gemv_fused(x.data<uint16_t>(), K, w1.weight.data<uint16_t>(), N1 + N2, K, M, nullptr,
                          false, f, out1.raw(), is_bf16(out1), N1, stream_);
  note_early(f.x_early);
  note_write(out1);
  note_write(out2);
}

void set_norm_fold_max_bytes(int64_t bytes) {
  g_fold_max.store(bytes, std::memory_order_relaxed);
}

bool CudaBackend::folds_norms(int64_t num_tokens) const {
  return norm_in_gemv() && !f32_act_ && num_tokens > 0 && num_tokens <= kGemvMaxTokens;
}

void CudaBackend::rms_norm_qkv_rope_cache_write(const Tensor& x, const Tensor& norm_w, float eps,
                                                Tensor& normed, const Linear& w_qkv, Tensor& qkv,
                                                int64_t nh, int64_t nkv, int64_t d,
                                                const RopeParams& rope, const BatchInfo& batch,
                                                Tensor& q, Tensor& k, Tensor& v, Tensor& k_cache,
                                                Tensor& v_cache) {
  // One GEMV (norm prologue, rope/cache epilogue) where rms_norm_linear's fusion
  // and qkv_rope_cache_write's kernel both apply: NeoX rope over whole heads,
  // BF16 q and caches. Otherwise the two ops.
  const int64_t M = x.dim(0), K = x.row_size(), N = w_qkv.out_features();
  if (!norm_fusable(f32_act_, x, norm_w, normed, w_qkv) || rope.interleaved ||
      rope.rot_dim() != d || d % 2 != 0 || N != (nh + 2 * nkv) * d || !is_bf16(q) ||
      !is_bf16(k_cache) || !is_bf16(v_cache) || M != batch.num_tokens()) {
    Backend::rms_norm_qkv_rope_cache_write(x, norm_w, eps, normed, w_qkv, qkv, nh, nkv, d, rope,
                                           batch, q, k, v, k_cache, v_cache);
    return;
  }
  OpTimer timer(*this, "rms_norm_qkv_rope_cache");
  const int64_t slots = k_cache.dim(0) * k_cache.dim(1);
  R1_CHECK(q.dim(0) == M && q.row_size() == nh * d &&
               k_cache.row_size() == k_cache.dim(1) * nkv * d && v_cache.shape() == k_cache.shape(),
           "rms_norm_qkv_rope_cache_write: q {} caches {} {}", q.describe(), k_cache.describe(),
           v_cache.describe());
  R1_CHECK(!w_qkv.bias.defined() || (w_qkv.bias.dtype() == DType::kF32 && w_qkv.bias.numel() == N),
           "rms_norm_qkv_rope_cache_write bias {}", w_qkv.bias.describe());
  for (int32_t sl : batch.slot_mapping)
    R1_CHECK(sl >= 0 && sl < slots, "slot {} outside cache of {} slots", sl, slots);
  if (cur_ != nullptr) cur_->num_slots = slots;
  DevBatch& db = dev_batch(batch);
  GemvFusion f = norm_fusion(norm_w, eps, static_cast<int64_t>(w_qkv.weight.nbytes()), K, false);
  f.rope_positions = db.positions;
  f.rope_slots = db.slot_mapping;
  f.inv_freq = dev_floats(rope.inv_freq);
  f.rope_factor = rope.attention_factor;
  f.rope_nh = static_cast<int32_t>(nh);
  f.rope_nkv = static_cast<int32_t>(nkv);
  f.rope_d = static_cast<int32_t>(d);
  f.k_cache = k_cache.raw();
  f.v_cache = v_cache.raw();
  launch_dense_gemv_fused(x.data<uint16_t>(), K, w_qkv.weight.data<uint16_t>(), N, K, M,
                          w_qkv.bias.defined() ? w_qkv.bias.data<float>() : nullptr, false, f,
                          q.raw(), true, nh * d, stream_);
}

void CudaBackend::rms_norm_linear_swiglu(const Tensor& x, const Tensor& norm_w, float eps,
                                         Tensor& normed, const Linear& gate_up, Tensor& gu,
                                         Tensor& out) {
  // Fused where both the norm and linear_swiglu's GEMV apply.
  if (!norm_fusable(f32_act_, x, norm_w, normed, gate_up) || gate_up.bias.defined() ||
      !is_bf16(out)) {
    Backend::rms_norm_linear_swiglu(x, norm_w, eps, normed, gate_up, gu, out);
    return;
  }
  OpTimer timer(*this, "rms_norm_linear_swiglu");
  const int64_t M = x.dim(0), K = x.row_size(), I = gate_up.out_features() / 2;
  R1_CHECK(out.dim(0) == M && out.row_size() == I, "rms_norm_linear_swiglu out {} for [{}, {}]",
           out.describe(), M, I);
  GemvFusion f =
      norm_fusion(norm_w, eps, static_cast<int64_t>(gate_up.weight.nbytes()), K, early_input(x));
  launch_dense_gemv_fused(x.data<uint16_t>(), K, gate_up.weight.data<uint16_t>(), I, K, M, nullptr,
                          true, f, out.raw(), true, I, stream_);
  note_early(f.x_early);
  note_write(out);
}

void CudaBackend::head_linear(const Tensor& x, int64_t x_head_stride, const Tensor& w, Tensor& out,
                              int64_t out_head_stride) {
  OpTimer timer(*this, "head_linear");
  const int64_t T = x.dim(0), H = w.dim(0), N = w.dim(1), K = w.dim(2);
  R1_CHECK(x.row_size() == H * x_head_stride && K <= x_head_stride, "head_linear x {} w {}",
           x.describe(), w.describe());
  R1_CHECK(out.row_size() == H * out_head_stride && N <= out_head_stride, "head_linear out {}",
           out.describe());
  R1_CHECK(is_bf16(w), "CUDA head_linear needs BF16 w: {}", w.describe());
  if (T == 0) return;
  if (f32_act_ && !is_bf16(x)) {
    launch_ref_gemm(x.raw(), false, x.row_size(), x_head_stride, w.data<uint16_t>(), N * K, N, K, T,
                    H, out.raw(), is_bf16(out), out.row_size(), out_head_stride, stream_);
    return;
  }
  const Tensor xb = as_bf16(x, 3);
  if (T <= kGemvMaxTokens && K % 8 == 0 && x_head_stride % 8 == 0) {
    // Few tokens: one GEMV launch over all heads (weights read once, 16-byte loads).
    const bool early = early_input(xb);
    // The next kernel (after W_UK: the decode attention, with a long preamble)
    // may launch before this one's wait.
    const int tf_mode = head_gemv_trigger_first_mode();
    const bool tf = !early && T <= kGemvMaxTokens && (tf_mode == 1 || (tf_mode == 2 && N > K));
    launch_head_gemv(xb.data<uint16_t>(), x.row_size(), x_head_stride, w.data<uint16_t>(), H, N, K,
                     T, early, out.raw(), is_bf16(out), out.row_size(), out_head_stride, stream_,
                     tf);
    note_early(early || tf);
    note_write(out);
    return;
  }
  if (skinny_gemm(xb, x.row_size(), x_head_stride, w.raw(), N * K, H, N, K, out, out.row_size(),
                  out_head_stride)) {
    note_write(out);
    return;
  }
  const float alpha = 1.0f, beta = 0.0f;
  R1_CUBLAS_OK(cublasGemmStridedBatchedEx(
      cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(T),
      static_cast<int>(K), &alpha, w.raw(), CUDA_R_16BF, static_cast<int>(K), N * K, xb.raw(),
      CUDA_R_16BF, static_cast<int>(x.row_size()), x_head_stride, &beta, out.raw(), cuda_type(out),
      static_cast<int>(out.row_size()), out_head_stride, static_cast<int>(H), CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT));
  note_write(out);
}

// ---- MoE routing and experts ----

void CudaBackend::moe_route(const Tensor& router_logits, const Tensor& bias, const RouterParams& p,
                            Tensor& ids, Tensor& weights) {
  OpTimer timer(*this, "moe_route");
  const int64_t T = router_logits.dim(0), E = router_logits.dim(1), K = p.top_k;
  R1_CHECK(ids.dtype() == DType::kI32 && weights.dtype() == DType::kF32 && ids.dim(0) == T &&
               ids.dim(1) == K && weights.dim(0) == T && weights.dim(1) == K,
           "moe_route outputs {} {}", ids.describe(), weights.describe());
  flush_route();  // one nobody consumed
  const float* lg = router_logits.data<float>();
  if (router_logits.dtype() != DType::kF32) {
    float* tmp = static_cast<float*>(workspace(0, static_cast<size_t>(T * E) * 4));
    launch_convert(router_logits.raw(), is_bf16(router_logits), tmp, false, T * E, stream_);
    lg = tmp;
  }
  R1_CHECK(!bias.defined() || (bias.dtype() == DType::kF32 && bias.numel() == E), "router bias {}",
           bias.describe());
  RouteArgs r;
  r.logits = lg;
  r.bias = bias.defined() ? bias.data<float>() : nullptr;
  r.E = static_cast<int>(E);
  r.K = static_cast<int>(K);
  r.n_group = static_cast<int>(p.n_group);
  r.topk_group = static_cast<int>(p.topk_group);
  r.softmax = p.scoring == Scoring::kSoftmax;
  r.normalize = p.normalize;
  r.scale = p.scale;
  if (!route_args_ok(r))
    throw Error(make_error(
        ErrorCode::kUnsupported,
        "CUDA moe_route: {} experts, top-{}, {} groups ({} kept): the GPU routes at most 256 "
        "experts, top-k from 1 to min(32, experts), groups dividing the experts; use --device "
        "cpu for this model",
        E, K, p.n_group, p.topk_group));
  if (T == 1 && router_logits.dtype() == DType::kF32 && moe_inline_route_enabled()) {
    pending_route_ =
        PendingRoute{r, router_logits, ids.data<int32_t>(), weights.data<float>(), true};
    return;
  }
  launch_moe_route(r, T, ids.data<int32_t>(), weights.data<float>(), stream_);
  route_ids_ = ids.raw();
  route_launch_ = pdl_launches(stream_);
}

void CudaBackend::flush_route() {
  if (!pending_route_.on) return;
  pending_route_.on = false;
  launch_moe_route(pending_route_.args, 1, pending_route_.ids, pending_route_.weights, stream_);
  route_ids_ = pending_route_.ids;
  route_launch_ = pdl_launches(stream_);
  pending_route_.logits = Tensor();
}

void CudaBackend::moe_experts(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                              const Tensor& weights, Tensor& out) {
  OpTimer timer(*this, "moe_experts");
  moe_experts_into(x, w, ids, weights, nullptr, out);
}

void CudaBackend::moe_experts_plus(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                                   const Tensor& weights, const Tensor& shared, Tensor& out) {
  OpTimer timer(*this, "moe_experts");
  R1_CHECK(shared.shape() == out.shape() && (is_bf16(shared) || shared.dtype() == DType::kF32),
           "moe_experts_plus: shared {} for out {}", shared.describe(), out.describe());
  moe_experts_into(x, w, ids, weights, &shared, out);
}

void CudaBackend::moe_experts_add(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                                  const Tensor& weights, const Tensor& shared, Tensor& residual,
                                  Tensor& tmp) {
  // The add in the streamed down kernel's epilogue (one token); otherwise the two ops.
  const bool float_res = is_bf16(residual) || residual.dtype() == DType::kF32;
  if (float_res && residual.shape() == tmp.shape() &&
      (is_bf16(tmp) || tmp.dtype() == DType::kF32) &&
      (!shared.defined() ||
       (shared.shape() == tmp.shape() && (is_bf16(shared) || shared.dtype() == DType::kF32)))) {
    OpTimer timer(*this, "moe_experts_add");
    if (moe_experts_into(x, w, ids, weights, shared.defined() ? &shared : nullptr, tmp, &residual))
      return;
  }
  Backend::moe_experts_add(x, w, ids, weights, shared, residual, tmp);
}

void CudaBackend::rms_norm_moe_experts_add(const Tensor& x, const Tensor& norm_w, float eps,
                                           Tensor& normed, const ExpertWeights& w,
                                           const Tensor& ids, const Tensor& weights,
                                           const Tensor& shared, Tensor& residual, Tensor& tmp) {
  // The norm folded into the streamed gate/up kernel (one token); otherwise the two ops.
  const bool float_res = is_bf16(residual) || residual.dtype() == DType::kF32;
  if (norm_in_gemv() && !f32_act_ && is_bf16(x) && norm_w.dtype() == DType::kF32 &&
      norm_w.numel() == x.row_size() && reinterpret_cast<uintptr_t>(norm_w.raw()) % 16 == 0 &&
      float_res && residual.shape() == tmp.shape() &&
      (is_bf16(tmp) || tmp.dtype() == DType::kF32) &&
      (!shared.defined() ||
       (shared.shape() == tmp.shape() && (is_bf16(shared) || shared.dtype() == DType::kF32)))) {
    OpTimer timer(*this, "moe_experts_add");
    if (moe_experts_into(x, w, ids, weights, shared.defined() ? &shared : nullptr, tmp, &residual,
                         norm_w.data<float>(), eps))
      return;
  }
  Backend::rms_norm_moe_experts_add(x, norm_w, eps, normed, w, ids, weights, shared, residual, tmp);
}

bool CudaBackend::moe_experts_into(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                                   const Tensor& weights, const Tensor* addend, Tensor& out,
                                   Tensor* residual, const float* norm_w, float eps) {
  const void* add_p = addend ? addend->raw() : nullptr;
  const bool add_bf = addend ? is_bf16(*addend) : false;
  const int64_t T = x.dim(0), H = x.dim(1), K = ids.dim(1), E = w.num_experts(), I = w.inter_size();
  R1_CHECK(w.gate_up.dim(1) == 2 * I && w.gate_up.dim(2) == H && w.down.dim(1) == H,
           "moe weights {} {}", w.gate_up.describe(), w.down.describe());
  R1_CHECK(is_bf16(w.gate_up) && is_bf16(w.down) && ids.dtype() == DType::kI32 &&
               weights.dtype() == DType::kF32,
           "moe_experts: BF16 experts, I32 ids, F32 weights");
  if (w.gate_up_scale.defined() || w.down_scale.defined())
    throw Error(make_error(
        ErrorCode::kUnsupported,
        "CUDA moe_experts: int8 experts with row scales are CPU-only; load BF16 or FP8 weights "
        "for --device cuda"));
  const int64_t P = T * K;
  const bool gemv = P <= gemv_max_pairs() && H % 8 == 0 && I % 8 == 0;
  const bool streamed = gemv && T == 1 && is_bf16(x) &&
                        reinterpret_cast<uintptr_t>(x.raw()) % 16 == 0 && moe_stream_ok(H, I, K);
  // The held-back routing of this token goes to the streamed kernels; anything else reads ids.
  const bool inline_route = streamed && pending_route_.on && pending_route_.ids == ids.raw() &&
                            pending_route_.weights == weights.raw();
  if (!inline_route) flush_route();
  // The residual is added in the combine's epilogue, except where only the streamed kernels
  // fold the norm in and in the validation mode's F32 path: the plain ops there.
  if (residual != nullptr && !streamed &&
      (norm_w != nullptr || (f32_act_ && !is_bf16(x)) || !combine_residual_enabled()))
    return false;
  if (T == 0) return true;
  if (f32_act_ && !is_bf16(x)) {
    // Validation mode: every pair in F32 (act not rounded), combined in top-k order like the CPU.
    float* act = static_cast<float*>(workspace(5, static_cast<size_t>(P * I) * 4));
    float* y = static_cast<float*>(workspace(6, static_cast<size_t>(P * H) * 4));
    launch_ref_moe(x.raw(), false, H, w.gate_up.data<uint16_t>(), w.down.data<uint16_t>(), I,
                   ids.data<int32_t>(), P, K, act, y, stream_);
    launch_moe_combine(y, false, nullptr, weights.data<float>(), T, K, H, add_p, add_bf, out.raw(),
                       is_bf16(out), stream_);
    return true;
  }
  // Workspace: slot_info [E][4] (first: 16-byte aligned), offsets [E+1], active [E+1],
  // sorted_pair [P], pos_of_pair [P].
  int32_t* idx =
      static_cast<int32_t*>(workspace(4, static_cast<size_t>(4 * E + 2 * (E + 1) + 2 * P) * 4));
  int32_t* slot_info = idx;
  int32_t* offsets = idx + 4 * E;
  int32_t* active = offsets + E + 1;
  int32_t* sorted_pair = active + E + 1;
  int32_t* pos_of_pair = sorted_pair + P;
  uint16_t* act = static_cast<uint16_t*>(workspace(5, static_cast<size_t>(P * I) * 2));
  if (streamed) {
    // One token: no sort; the down kernel combines, adds the shared experts' output
    // and, with a residual, adds the sum into it.
    // With the routing held back, the kernels route the token themselves
    // (before pdl_wait once the router's logits are two launches back).
    // The down kernel reads the gate/up kernel's routing when it is written (ready).
    const RouteArgs route = pending_route_.args;
    const bool ids_early = inline_route ? early_input(pending_route_.logits)
                                        : ids.raw() == route_ids_ && settled_since(route_launch_);
    int32_t* ready =
        inline_route && K <= 32 && moe_route_ready_enabled() ? route_ready_word() : nullptr;
    launch_moe_gate_up_stream(x.data<uint16_t>(), H, w.gate_up.data<uint16_t>(), I,
                              ids.data<int32_t>(), K, ids_early, act, stream_, norm_w, eps,
                              inline_route ? &route : nullptr, weights.data<float>(),
                              ids_early && moe_x_early_enabled() && early_input(x), ready);
    const bool route_early = inline_route && early_input(pending_route_.logits);
    if (inline_route) {
      pending_route_.on = false;
      pending_route_.logits = Tensor();
    }
    launch_moe_down_stream(act, w.down.data<uint16_t>(), H, I, ids.data<int32_t>(),
                           weights.data<float>(), K, add_p, add_bf, out.raw(), is_bf16(out),
                           residual ? residual->raw() : nullptr,
                           residual ? is_bf16(*residual) : false, stream_,
                           inline_route ? &route : nullptr, route_early, ready);
    if (residual != nullptr) note_write(*residual);
    return true;
  }
  launch_moe_sort(ids.data<int32_t>(), P, E, offsets, active, slot_info, sorted_pair, pos_of_pair,
                  stream_);
  // y: F32 from the GEMVs, BF16 from the grouped GEMM (cuBLAS groups BF16 x BF16 -> BF16 only).
  void* y = workspace(6, static_cast<size_t>(P * H) * 4);
  bool y_bf = false;
  if (!gemv && moe_mma_ok(H, I, P, E)) {
    // Tensor cores, driven by slot_info on the device: no host sync, recordable.
    const bool direct = is_bf16(x) && reinterpret_cast<uintptr_t>(x.raw()) % 16 == 0;
    const uint16_t* xin = direct ? x.data<uint16_t>() : nullptr;
    if (!direct) {
      uint16_t* xg = static_cast<uint16_t*>(workspace(7, static_cast<size_t>(P * H) * 2));
      launch_moe_gather(x.raw(), is_bf16(x), H, sorted_pair, P, K, xg, stream_);
      xin = xg;
    }
    OpTimer t(*this, "moe/mma");
    launch_moe_mma(xin, direct ? sorted_pair : nullptr, K, H, w.gate_up.data<uint16_t>(),
                   w.down.data<uint16_t>(), E, I, slot_info, P, act, static_cast<float*>(y),
                   stream_);
  } else if (gemv) {
    launch_moe_gate_up_gemv(x.raw(), is_bf16(x), H, w.gate_up.data<uint16_t>(), E, I, slot_info,
                            sorted_pair, P, K, act, stream_);
    launch_moe_down_gemv(act, w.down.data<uint16_t>(), E, H, I, slot_info, P,
                         static_cast<float*>(y), stream_);
  } else {
    // The per-expert counts decide the GEMM shapes: one small download (so a
    // step that comes here cannot be recorded).
    step_synced_ = true;
    if (capturing_) {
      capture_broken_ = true;
      return true;
    }
    std::vector<int32_t> off(static_cast<size_t>(E + 1));
    R1_CUDA_OK(
        cudaMemcpyAsync(off.data(), offsets, off.size() * 4, cudaMemcpyDeviceToHost, stream_));
    uint16_t* xg = static_cast<uint16_t*>(workspace(7, static_cast<size_t>(P * H) * 2));
    {
      OpTimer t(*this, "moe/gather");
      launch_moe_gather(x.raw(), is_bf16(x), H, sorted_pair, P, K, xg, stream_);
    }
    uint16_t* gu = static_cast<uint16_t*>(workspace(8, static_cast<size_t>(P * 2 * I) * 2));
    y_bf = true;
    R1_CUDA_OK(cudaStreamSynchronize(stream_));
    std::vector<int> active;
    for (int64_t e = 0; e < E; ++e)
      if (off[static_cast<size_t>(e + 1)] > off[static_cast<size_t>(e)])
        active.push_back(static_cast<int>(e));
    const int G = static_cast<int>(active.size());
    const char* wgu = static_cast<const char*>(w.gate_up.raw());
    const char* wd = static_cast<const char*>(w.down.raw());
    // Two projections: (A = expert weights, B = inputs, C = outputs).
    auto run = [&](int64_t m, int64_t k, const char* wbase, const void* in, cudaDataType_t in_type,
                   void* o) {
      std::vector<cublasOperation_t> ta(static_cast<size_t>(G), CUBLAS_OP_T),
          tb(static_cast<size_t>(G), CUBLAS_OP_N);
      std::vector<int> ms(static_cast<size_t>(G), static_cast<int>(m)), ns(static_cast<size_t>(G)),
          ks(static_cast<size_t>(G), static_cast<int>(k)), sizes(static_cast<size_t>(G), 1);
      std::vector<float> alpha(static_cast<size_t>(G), 1.0f), beta(static_cast<size_t>(G), 0.0f);
      std::vector<const void*> ptrs(static_cast<size_t>(3 * G));
      for (int g = 0; g < G; ++g) {
        const int e = active[static_cast<size_t>(g)];
        const int64_t o0 = off[static_cast<size_t>(e)];
        ns[static_cast<size_t>(g)] = off[static_cast<size_t>(e + 1)] - off[static_cast<size_t>(e)];
        ptrs[static_cast<size_t>(g)] = wbase + static_cast<size_t>(e * m * k) * 2;
        ptrs[static_cast<size_t>(G + g)] =
            static_cast<const char*>(in) + static_cast<size_t>(o0 * k) * 2;
        ptrs[static_cast<size_t>(2 * G + g)] =
            static_cast<const char*>(o) + static_cast<size_t>(o0 * m) * 2;
      }
      // One grouped launch when the experts have few rows each (decode); with many rows
      // (prefill) one cuBLAS GEMM per expert is faster (measured: 52 vs 72 ms at 16x512).
      if (grouped_ok_ && P <= 128 * static_cast<int64_t>(G)) {
        void** dptr =
            static_cast<void**>(workspace(9 + (wbase == wd ? 1 : 0), ptrs.size() * sizeof(void*)));
        R1_CUDA_OK(cudaMemcpyAsync(dptr, ptrs.data(), ptrs.size() * sizeof(void*),
                                   cudaMemcpyHostToDevice, stream_));
        std::vector<int> lda(static_cast<size_t>(G), static_cast<int>(k)),
            ldc(static_cast<size_t>(G), static_cast<int>(m));
        cublasStatus_t st = cublasGemmGroupedBatchedEx(
            cublas_, ta.data(), tb.data(), ms.data(), ns.data(), ks.data(), alpha.data(), dptr,
            CUDA_R_16BF, lda.data(), dptr + G, in_type, lda.data(), beta.data(), dptr + 2 * G,
            CUDA_R_16BF, ldc.data(), G, sizes.data(), CUBLAS_COMPUTE_32F);
        if (st == CUBLAS_STATUS_SUCCESS) return;
        std::fprintf(stderr,
                     "r1serve cuda: cublasGemmGroupedBatchedEx: %s; using one GEMM per expert\n",
                     cublas_error(st));
        grouped_ok_ = false;
      }
      // One GEMM per expert, dealt round-robin to the side streams: one expert's
      // ~1000-row GEMM is about one wave of tiles, so alone it leaves SMs idle.
      const float one = 1.0f, zero = 0.0f;
      fork_sides();
      for (int g = 0; g < G; ++g)
        R1_CUBLAS_OK(cublasGemmEx(
            sides_[static_cast<size_t>(g % kSideStreams)].cublas, CUBLAS_OP_T, CUBLAS_OP_N,
            static_cast<int>(m), ns[static_cast<size_t>(g)], static_cast<int>(k), &one,
            ptrs[static_cast<size_t>(g)], CUDA_R_16BF, static_cast<int>(k),
            ptrs[static_cast<size_t>(G + g)], in_type, static_cast<int>(k), &zero,
            const_cast<void*>(ptrs[static_cast<size_t>(2 * G + g)]), CUDA_R_16BF,
            static_cast<int>(m), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      join_sides();
    };
    {
      OpTimer t(*this, "moe/gemm_gate_up");
      run(2 * I, H, wgu, xg, CUDA_R_16BF, gu);
    }
    {
      OpTimer t(*this, "moe/silu");
      launch_silu_mul(gu, true, P, I, act, true, stream_);
    }
    OpTimer t(*this, "moe/gemm_down");
    run(H, I, wd, act, CUDA_R_16BF, y);
  }
  OpTimer t(*this, "moe/combine");
  launch_moe_combine(y, y_bf, pos_of_pair, weights.data<float>(), T, K, H, add_p, add_bf, out.raw(),
                     is_bf16(out), stream_, residual ? residual->raw() : nullptr,
                     residual ? is_bf16(*residual) : false);
  if (residual != nullptr) note_write(*residual);
  return true;
}

}  // namespace r1::backend::cuda
