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

namespace {

cudaDataType_t cuda_type(const Tensor& t) {
  return is_bf16(t) ? CUDA_R_16BF : CUDA_R_32F;
}

// Dense products of up to this many rows use the GEMV kernel (weights read once, 16-byte loads).
constexpr int64_t kGemvMaxTokens = 4;

}  // namespace

// Decode batches past the GEMV's few rows and up to this many: skinny_gemm.cu.
// Measured on an H100 against cuBLAS (session 2, run E): batch 8 +3.9 %, batch 32
// neutral (its kernels cost more than cuBLAS's, but the idle gaps between cuBLAS
// launches, which do not overlap, go), batch 128 -12 % with 64-token tiles.
constexpr int64_t kSkinnyMaxTokens = 32;

namespace {
// One-token GEMVs that trigger the next kernel before their own wait (like
// W_UK's, R1SERVE_CUDA_TRIGGER_FIRST), so that its blocks load their weights
// while this one still waits: bit 1 rms_norm_linear_pair (MLA: q_a + kv_a),
// bit 2 rms_norm_linear (q_b, the router), bit 4 linear_add (o_proj, the
// dense MLP's down). R1SERVE_CUDA_GEMV_TRIGGER_FIRST (a digit, the bits).
EnvSwitch g_gemv_tf{"R1SERVE_CUDA_GEMV_TRIGGER_FIRST", 0};
bool gemv_trigger_first(int bit, int64_t M, const GemvFusion& f) {
  return M == 1 && !f.x_early && (g_gemv_tf.value() & bit) != 0;
}
}  // namespace

void set_gemv_trigger_first(int bits) {
  g_gemv_tf.set(bits);
}

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

// How the norm goes into a GEMV reading `bytes` of weights: folded into the
// products (no latency before them; what the DeepSeek layer's small
// projections want) up to R1SERVE_CUDA_NORM_FOLD_MB (default 16, the L2
// prefetch limit), the prologue above it (where the folded norm's extra work
// per weight costs more than the prologue's round trip: the 7B's q/k/v and
// gate/up GEMVs, 2 % slower folded, docs/performance-history.md day 4) or where the
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
  f.trigger_first = gemv_trigger_first(4, M, f);
  launch_dense_gemv_fused(xb.data<uint16_t>(), K, w.weight.data<uint16_t>(), N, K, M,
                          w.bias.defined() ? w.bias.data<float>() : nullptr, false, f, nullptr,
                          true, N, stream_);
  note_early(f.x_early || f.trigger_first);
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
  f.trigger_first = gemv_trigger_first(2, M, f);
  launch_dense_gemv_fused(x.data<uint16_t>(), K, w.weight.data<uint16_t>(), N, K, M,
                          w.bias.defined() ? w.bias.data<float>() : nullptr, false, f, out.raw(),
                          is_bf16(out), N, stream_);
  note_early(f.x_early || f.trigger_first);
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
  f.trigger_first = gemv_trigger_first(1, M, f);
  launch_dense_gemv_fused(x.data<uint16_t>(), K, w1.weight.data<uint16_t>(), N1 + N2, K, M, nullptr,
                          false, f, out1.raw(), is_bf16(out1), N1, stream_);
  note_early(f.x_early || f.trigger_first);
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

void CudaBackend::rms_norm_linear_head(const Tensor& x, const Tensor& norm_w, float eps,
                                       Tensor& normed, const Linear& w, Tensor& out,
                                       int64_t head_stride, const Tensor& w_head, Tensor& out2,
                                       int64_t out2_head_stride) {
  // One token, the folded norm, the widths q_absorb.cu takes: one kernel.
  const int64_t M = x.dim(0), K = x.row_size(), N = w.out_features();
  const bool one = M == 1 && w_head.rank() == 3 &&
                   q_absorb_ok(K, head_stride, w_head.dim(0), w_head.dim(1), w_head.dim(2));
  if (!one || !norm_fusable(f32_act_, x, norm_w, normed, w) ||
      !fold_norm(static_cast<int64_t>(w.weight.nbytes()), K) || w.bias.defined() || !is_bf16(out) ||
      !is_bf16(out2) || !is_bf16(w_head) || N != w_head.dim(0) * head_stride ||
      out.row_size() != N || out.dim(0) != 1 || out2.dim(0) != 1 ||
      out2.row_size() != w_head.dim(0) * out2_head_stride || w_head.dim(1) > out2_head_stride) {
    Backend::rms_norm_linear_head(x, norm_w, eps, normed, w, out, head_stride, w_head, out2,
                                  out2_head_stride);
    return;
  }
  OpTimer timer(*this, "rms_norm_linear_head");
  QAbsorbArgs a;
  a.x = x.data<uint16_t>();
  a.norm_w = norm_w.data<float>();
  a.eps = eps;
  a.K = static_cast<int>(K);
  a.wq = w.weight.data<uint16_t>();
  a.qk = static_cast<int>(head_stride);
  a.q = out.data<uint16_t>();
  a.wuk = w_head.data<uint16_t>();
  a.qa = out2.data<uint16_t>();
  a.ohs = out2_head_stride;
  launch_q_absorb(a, static_cast<int>(w_head.dim(0)), stream_);
  note_write(out);
  note_write(out2);
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

}  // namespace r1::backend::cuda
