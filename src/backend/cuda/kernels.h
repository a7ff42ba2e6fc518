// Launchers of the CUDA kernels: plain C++ declarations (raw device pointers,
// sizes, a stream) so the runtime in *.cc never includes device code. Each
// launcher checks its preconditions and the launch. `bf` flags say whether a
// float buffer holds BF16 (true) or F32 (false).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <cuda_runtime_api.h>

namespace r1::backend::cuda {

// A switch of the backend for side-by-side runs and tests: the first digit of
// the environment variable `name` on first use (unset or not a digit: the
// default), then whatever a test sets. 0 is off; other values are on, or a mode.
class EnvSwitch {
 public:
  constexpr EnvSwitch(const char* name, int def) : name_(name), def_(def) {}
  int value() const {
    int v = v_.load(std::memory_order_relaxed);
    if (v < 0) {
      const char* e = std::getenv(name_);
      v = e != nullptr && e[0] >= '0' && e[0] <= '9' ? e[0] - '0' : def_;
      v_.store(v, std::memory_order_relaxed);
    }
    return v;
  }
  bool on() const { return value() != 0; }
  void set(int v) { v_.store(v, std::memory_order_relaxed); }

 private:
  const char* name_;
  int def_;
  mutable std::atomic<int> v_{-1};
};

// Fails loudly (via R1_CHECK) with `what` and the CUDA error; defined in cuda_backend.cc.
[[noreturn]] void cuda_fail(const char* file, int line, const char* what, const char* detail);
#define R1_CUDA_OK(expr)                                                                      \
  do {                                                                                        \
    cudaError_t r1_err_ = (expr);                                                             \
    if (r1_err_ != cudaSuccess)                                                               \
      ::r1::backend::cuda::cuda_fail(__FILE__, __LINE__, #expr, cudaGetErrorString(r1_err_)); \
  } while (0)
#define R1_CUDA_REQUIRE(cond, msg)                                               \
  do {                                                                           \
    if (!(cond)) ::r1::backend::cuda::cuda_fail(__FILE__, __LINE__, #cond, msg); \
  } while (0)
#define R1_CUDA_LAUNCHED() R1_CUDA_OK(cudaGetLastError())

// Whether kernels that support it are launched with programmatic dependent
// launch (on unless R1SERVE_CUDA_PDL=0); process-wide, defined in elementwise.cu.
bool pdl_enabled();
void set_pdl_enabled(bool on);

// ---- elementwise.cu ----
void launch_embedding(const void* table, bool table_bf, int64_t vocab, const int32_t* ids,
                      int64_t T, int64_t H, void* out, bool out_bf, cudaStream_t s);
// out = x / rms(x[:n]) * w over rows; with `add`, x += add first (x written back).
// x_early (no add): x was written at least two launches back, so the one-pass
// kernel reads it before pdl_wait and only its stores wait (as GemvFusion's).
void launch_rms_norm(void* x, bool x_bf, int64_t ldx, const void* add, bool add_bf, int64_t ld_add,
                     const float* w, int64_t n, float eps, int64_t rows, void* out, bool out_bf,
                     int64_t ldo, cudaStream_t s, bool x_early = false);
// ids[i] = index of the first maximum of row i of x [n, V] F32.
// Chunks a row of V values is split into by launch_argmax_rows (partials
// [n, chunks] of float and int32, counters [n] zeroed once; nullptr part_v: one
// block a row).
int argmax_chunks(int64_t V);
void launch_argmax_rows(const float* x, int64_t n, int64_t V, int32_t* ids, float* part_v,
                        int32_t* part_i, int32_t* counters, cudaStream_t s);
void launch_gather_rows(const void* src, const int32_t* rows, int64_t n, int64_t row_bytes,
                        void* out, cudaStream_t s);
void launch_add(const void* a, bool a_bf, const void* b, bool b_bf, void* out, bool out_bf,
                int64_t n, cudaStream_t s);
// out[t, i] = silu(gu[t, i]) * gu[t, I + i]
void launch_silu_mul(const void* gu, bool gu_bf, int64_t rows, int64_t inter, void* out,
                     bool out_bf, cudaStream_t s);
void launch_copy_heads(const void* src, bool src_bf, int64_t src_row, int64_t src_stride,
                       int64_t src_off, void* dst, bool dst_bf, int64_t dst_row, int64_t dst_stride,
                       int64_t dst_off, int64_t width, int64_t heads, int64_t T, cudaStream_t s);
void launch_cache_write(const void* src, bool src_bf, int64_t T, int64_t width,
                        const int32_t* slots, int64_t num_slots, void* cache, bool cache_bf,
                        cudaStream_t s);
void launch_add_bias(void* out, bool out_bf, const float* bias, int64_t rows, int64_t n,
                     cudaStream_t s);
void launch_convert(const void* src, bool src_bf, void* dst, bool dst_bf, int64_t n,
                    cudaStream_t s);

// ---- rope.cu ----
void launch_rope(void* x, bool bf, int64_t row, const int32_t* positions, int64_t T,
                 const float* inv_freq, int64_t half, float attention_factor, bool interleaved,
                 int64_t heads, int64_t head_stride, int64_t offset, cudaStream_t s);

// dst = rope(src) for `heads` windows of 2 * half values (copy_heads + rope in one pass).
void launch_rope_copy(const void* src, bool src_bf, int64_t src_row, int64_t src_stride,
                      int64_t src_off, void* dst, bool dst_bf, int64_t dst_row, int64_t dst_stride,
                      int64_t dst_off, const int32_t* positions, int64_t T, const float* inv_freq,
                      int64_t half, float attention_factor, bool interleaved, int64_t heads,
                      cudaStream_t s, bool x_early = false);
// cache[slots[t]] = [rms_norm(kv[t, :r]) * w | rope(kv[t, r:])] (BF16; interleaved pairs).
// x_early: src / kv read before pdl_wait, as launch_rms_norm's.
void launch_mla_latent(const uint16_t* kv, int64_t T, int64_t width, const float* w, int64_t r,
                       float eps, const int32_t* positions, const int32_t* slots,
                       const float* inv_freq, float attention_factor, uint16_t* cache,
                       cudaStream_t s, bool x_early = false);

// From qkv [T, (nh + 2 nkv) * d] (one dtype for all buffers): q [T, nh * d] =
// NeoX rope of the q heads; rope of the k heads and the v heads written to
// slot slots[t] of k_cache / v_cache ([slots, nkv * d]).
void launch_qkv_rope_cache(const void* qkv, bool bf, int64_t T, int64_t nh, int64_t nkv, int64_t d,
                           const int32_t* positions, const int32_t* slots, const float* inv_freq,
                           float attention_factor, void* q, void* k_cache, void* v_cache,
                           cudaStream_t s);

// ---- random.cu ----
// dst[i] (BF16 or F32) = offset + scale * u(state, i), the arithmetic of core/random.h.
void launch_fill_random(void* dst, bool bf, int64_t n, uint64_t state, float scale, float offset,
                        cudaStream_t s);

// Holds the stream for `ns` nanoseconds (so the host can queue a whole step
// behind it and per-op GPU events then time the kernels, not the host).
void launch_hold(int64_t ns, cudaStream_t s);

// ---- moe.cu ----
// The router's inputs and parameters (moe_route's) for the kernels that route
// (route.cuh): logits F32 [T, E], bias F32 [E] or null.
struct RouteArgs {
  const float* logits = nullptr;
  const float* bias = nullptr;
  int E = 0, K = 0, n_group = 1, topk_group = 1;
  bool softmax = false, normalize = false;
  float scale = 1.0f;
  // E == 64: route.cuh's shuffle form (R1SERVE_CUDA_ROUTE_FAST, default 1;
  // the same bits as the general one).
  bool fast = true;
};
// Whether the kernels can route these widths: 1 <= E <= 256, 1 <= K <= min(32,
// E), 1 <= n_group <= 32 dividing E, topk_group <= n_group.
bool route_args_ok(const RouteArgs& r);
// ids I32 [T, K], weights F32 [T, K]: a warp per token.
void launch_moe_route(const RouteArgs& r, int64_t T, int32_t* ids, float* weights, cudaStream_t s);
// Sorts the T*K (token, slot) pairs by expert: offsets [E+1], sorted_pair [P]
// (pair index at each sorted position), pos_of_pair [P].
// active [E + 1]: the number of experts with pairs, then those experts in order.
// slot_info [min(P, E)][4] (16-byte aligned): for the n-th expert with pairs,
// {expert, first sorted position, end, 1}; zeros after the last.
void launch_moe_sort(const int32_t* ids, int64_t P, int64_t E, int32_t* offsets, int32_t* active,
                     int32_t* slot_info, int32_t* sorted_pair, int32_t* pos_of_pair,
                     cudaStream_t s);
// Small batches: act[pos, i] = silu(Wg_e[i] . x) * (Wu_e[i] . x) for every sorted
// pair, reading only the experts that have tokens; then y[pos] = Wd_e act[pos].
void launch_moe_gate_up_gemv(const void* x, bool x_bf, int64_t H, const uint16_t* gate_up,
                             int64_t E, int64_t I, const int32_t* slot_info,
                             const int32_t* sorted_pair, int64_t P, int64_t K, uint16_t* act,
                             cudaStream_t s);
void launch_moe_down_gemv(const uint16_t* act, const uint16_t* down, int64_t E, int64_t H,
                          int64_t I, const int32_t* slot_info, int64_t P, float* y, cudaStream_t s);
// ---- moe_mma.cu ----
// Larger batches: the same two products on the tensor cores, a block per 128
// weight rows of an active expert (grid rows from slot_info, so nothing comes
// back to the host and the step can be recorded). act (BF16 [P][I]) and y (F32
// [P][H]) by sorted position, as the GEMVs write them. x: BF16 [T][H] rows read
// through sorted_pair (row sorted_pair[q] / K), or already gathered by sorted
// position when sorted_pair is null.
constexpr int64_t kMoeMmaMaxPairsPerExpert = 64;
bool moe_mma_ok(int64_t H, int64_t I, int64_t P, int64_t E);
void set_moe_mma_enabled(bool on);  // tests and benchmarks: off = the grouped cuBLAS GEMMs
void launch_moe_mma(const uint16_t* x, const int32_t* sorted_pair, int64_t K, int64_t H,
                    const uint16_t* gate_up, const uint16_t* down, int64_t E, int64_t I,
                    const int32_t* slot_info, int64_t P, uint16_t* act, float* y, cudaStream_t s);
// ---- skinny_gemm.cu ----
// Dense products of decode batches (out[m, n] = x[m, :] . w[n, :], M of 5-32
// rows) on the tensor cores, split over K (the splits of a tile are one
// cluster) so that more SMs stream weights; per head with heads > 1 (x + h x_hs,
// w + h w_hs, out + h o_hs).
struct SkinnyPlan {
  int64_t nt = 4;  // tokens a block: 8 * nt
  int64_t tok_tiles = 1, row_tiles = 1, splits = 1, kc = 0;
};
bool skinny_gemm_enabled();             // on unless R1SERVE_CUDA_SKINNY_GEMM=0
void set_skinny_gemm_enabled(bool on);  // tests and benchmarks: off = cuBLAS
SkinnyPlan plan_skinny_gemm(int64_t M, int64_t N, int64_t K, int64_t heads, int sm_count);
// Whether the plan's cluster of splits can be placed on this GPU (else: cuBLAS).
bool skinny_plan_fits(const SkinnyPlan& p);
void launch_skinny_gemm(const SkinnyPlan& p, const uint16_t* x, int64_t ldx, int64_t x_hs,
                        const uint16_t* w, int64_t w_hs, int64_t heads, int64_t M, int64_t N,
                        int64_t K, void* out, bool out_bf, int64_t ldo, int64_t o_hs,
                        cudaStream_t s);
// ---- moe_stream.cu ----
// One token's routed experts (the same products as the two GEMVs above, bit for
// bit), streamed: a block per SM, each warp a contiguous range of weight rows
// kept in flight by cp.async copies into shared memory. No sort: slot j is the
// token's expert ids[j] (act row j); the down kernel writes out[h] = sum_j w[j] *
// (Wd_ids[j][h] . act[j]) (+ add[h]), the combine's arithmetic, instead of y;
// with res (BF16 or F32 [H]), res[h] += that value rounded to out's dtype
// (what out followed by add_kernel computes) and out is not written.
bool moe_stream_ok(int64_t H, int64_t I, int64_t K);
void set_moe_stream_enabled(bool on);  // tests and benchmarks: off = the warp-per-row GEMVs
// Tests: the gate/up kernel's balanced units (R1SERVE_CUDA_MOE_GU_BALANCE, on by default).
void set_moe_gu_balance(bool on);
// Benchmarks: with R1SERVE_CUDA_MOE_STAMPS=1, a summary of the checkpoints of the
// last streamed gate/up and down launches, else "".
std::string moe_stream_stamps();
// A one-token routing left to the streamed kernels (gemm.cc; on unless
// R1SERVE_CUDA_MOE_INLINE_ROUTE=0).
bool moe_inline_route_enabled();
void set_moe_inline_route(bool on);
// The streamed gate/up kernel reads x before pdl_wait when it may (on unless
// R1SERVE_CUDA_MOE_X_EARLY=0).
bool moe_x_early_enabled();
void set_moe_x_early(bool on);
// ids_early: the kernel that wrote ids is at least two launches back on s (the
// gate/up kernel then requests its first rows before pdl_wait). norm_w (F32 [H])
// set: x is the raw row and the products are those of RMSNorm(x) with norm_w
// and eps, folded in as the dense GEMV's are (GemvFusion::norm_w).
// With route (route->logits set): the kernels route the token themselves from
// the router's logits instead of reading ids and w (route_token, the route
// kernel's arithmetic), before pdl_wait when ids_early says the logits were
// written two or more launches back; the gate/up kernel's first block then
// writes ids and w (the route op's outputs) after its pdl_wait. x_early (x
// written two or more launches back): x is read and normed before pdl_wait.
// ready (with route, K <= 32; one device word of the backend's, used by these
// two kernels only): the gate/up kernel's first block clears it before its
// pdl_trigger and sets it to 1 once ids and w are written, so the down kernel,
// given the same word, reads them instead of routing again when they are there
// (else it routes; the two give the same bits).
// shared_gate_up ([2I, H] BF16) / shared_down ([H, I]): the shared experts' MLP
// (one unit of the experts' width I) in the same kernels: its act is row K of
// act ([K + 1, I]), its rows are requested first (before the routing and any
// wait), and its output, rounded as out is, takes the place of add.
void launch_moe_gate_up_stream(const uint16_t* x, int64_t H, const uint16_t* gate_up, int64_t I,
                               int32_t* ids, int64_t K, bool ids_early, uint16_t* act,
                               cudaStream_t s, const float* norm_w = nullptr, float eps = 0.0f,
                               const RouteArgs* route = nullptr, float* w = nullptr,
                               bool x_early = false, int32_t* ready = nullptr,
                               const uint16_t* shared_gate_up = nullptr);
// Kernels launched through pdl_launch on s from this thread so far (common.cuh).
uint64_t pdl_launches(cudaStream_t s);
void launch_moe_down_stream(const uint16_t* act, const uint16_t* down, int64_t H, int64_t I,
                            const int32_t* ids, const float* w, int64_t K, const void* add,
                            bool add_bf, void* out, bool out_bf, void* res, bool res_bf,
                            cudaStream_t s, const RouteArgs* route = nullptr,
                            bool route_early = false, const int32_t* ready = nullptr,
                            const uint16_t* shared_down = nullptr);
// The down kernel reads the gate/up kernel's routing when it is ready (on unless
// R1SERVE_CUDA_MOE_ROUTE_READY=0: then it always routes again).
bool moe_route_ready_enabled();
void set_moe_route_ready(bool on);
// Tests: RouteArgs::fast for the routings made from now on (R1SERVE_CUDA_ROUTE_FAST).
void set_route_fast(bool on);
// The shared experts' MLP in the streamed kernels at one token (on unless
// R1SERVE_CUDA_MOE_SHARED_STREAM=0: then its own GEMVs).
bool moe_shared_stream_enabled();
void set_moe_shared_stream(bool on);
// The streamed down kernel copies act into shared memory once (on unless
// R1SERVE_CUDA_MOE_DOWN_ACT_SMEM=0: act rows read from global memory per item).
void set_moe_down_act_smem(bool on);
// Which one-token dense GEMVs trigger the next kernel before their wait
// (gemm.cc, R1SERVE_CUDA_GEMV_TRIGGER_FIRST): bits 1 rms_norm_linear_pair,
// 2 rms_norm_linear, 4 linear_add.
void set_gemv_trigger_first(int bits);
// The dense GEMV: out[t, n] (ld ldo) = x[t] (BF16, ld ldx) . W[n] (BF16 [N, K]) (+ bias[n], F32, if
// given) for t < T (small T). With `swiglu`, W is [2N, K] (gate rows, then up rows) and
// out[t, n] = silu(x[t] . W[n]) * (x[t] . W[N + n]) (no bias).
// How a dense GEMV covers W: `split` warps share a row (1, 2, 4, 8), `rows`
// rows per warp (1, 2; SwiGLU always pairs its gate and up row), `unroll` x 256
// columns per round trip (4, 8).
struct GemvPlan {
  int split = 0, rows = 1, unroll = 4;
};
GemvPlan gemv_plan(int64_t N, int64_t K, bool swiglu, int sms);
// Per-head offsets of a batched GEMV (grid row h reads x + h * x, W + h * w, writes out + h * out).
struct HeadStrides {
  int64_t x = 0, w = 0, out = 0;
};
// Benchmarks: every dense GEMV uses `plan` where it is valid (split 0: gemv_plan).
void set_gemv_override(const GemvPlan& plan);
// The dense GEMV's fused forms (BF16 x). norm_w (F32 [K]) set: the products
// are those of RMSNorm(x) with norm_w and eps (x / rms(x) * norm_w over K).
// norm_fold: folded in, x times norm_w enters the sums, which are scaled by
// 1 / rms(x) at the end (the normed rows are never rounded to BF16, so the
// result differs from launch_rms_norm followed by a GEMV by that rounding; no
// extra latency, but more work per weight); otherwise a prologue: each block
// first normalizes the T rows of x into shared memory with launch_rms_norm's
// arithmetic (bit for bit what it writes) and multiplies those (one x round
// trip and two reductions before the products). Needs dense_gemv_norm_ok.
// residual set (not with SwiGLU): out is not written; residual[t, n] (ld ldr,
// BF16 or F32) += the product (+ bias), the product first rounded to BF16 when
// round_bf (what a BF16 out followed by launch_add computes). x must not overlap
// the residual.
struct GemvFusion {
  const float* norm_w = nullptr;
  float eps = 0.0f;
  bool norm_fold = true;
  void* residual = nullptr;
  bool residual_bf = true;
  int64_t ldr = 0;
  bool round_bf = true;
  // The GQA inputs from a fused q/k/v projection (rope_positions set; BF16): a
  // warp covers rows (h d + i, h d + i + d/2) of head h, rounds both to BF16 and
  // does what qkv_rope_cache_kernel does with them (NeoX rope of q heads into
  // out [T, nh d], of k heads into k_cache's slot, v heads copied to v_cache's).
  const int32_t* rope_positions = nullptr;
  const int32_t* rope_slots = nullptr;
  const float* inv_freq = nullptr;
  float rope_factor = 1.0f;
  int32_t rope_nh = 0, rope_nkv = 0, rope_d = 0;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  // x was written at least two launches back (pdl_wait rule), so the whole
  // product is computed before pdl_wait, overlapping the kernel just before;
  // only the stores wait. Not with a residual or the norm prologue.
  bool x_early = false;
  // (Without x_early, one launch: T <= 4.) pdl_trigger comes before pdl_wait,
  // so the next kernel launches while the one before this still runs and
  // overlaps its own preamble with both (the launch then counts as early for
  // the pdl_wait rule: CudaBackend::note_early).
  bool trigger_first = false;
  // A second product of the same x in the same launch (plain or normed
  // products: no bias, residual, rope or SwiGLU): rows n >= n_first are w2's rows
  // n - n_first, written to out2 [T, N - n_first] (ld ldo2) instead of out.
  const uint16_t* w2 = nullptr;
  int64_t n_first = 0;
  void* out2 = nullptr;
  int64_t ldo2 = 0;
};
// Whether the norm (folded, or the prologue) serves x [*, K] (ld ldx) with norm
// weights norm_w: K % 8 == 0, 16-byte aligned rows and weights; the prologue
// also K <= 8192 (launch_rms_norm's one-pass kernel; up to 64 KB of shared
// memory at 4 tokens).
bool dense_gemv_norm_ok(int64_t K, const void* x, int64_t ldx, const float* norm_w, bool fold);
// Tests and benchmarks: GEMVs over at most this many bytes of weights fold
// their norm, larger ones take the prologue (gemm.cc; -1: the default).
void set_norm_fold_max_bytes(int64_t bytes);
void launch_dense_gemv_fused(const uint16_t* x, int64_t ldx, const uint16_t* w, int64_t N,
                             int64_t K, int64_t T, const float* bias, bool swiglu,
                             const GemvFusion& fusion, void* out, bool out_bf, int64_t ldo,
                             cudaStream_t s);
// Per-head products for few tokens (BF16 x): out[t, h * out_head_stride + n] =
// x[t, h * x_head_stride ...K] . W[h, n] for W [H, N, K], t < T.
// x_early and trigger_first as in GemvFusion.
void launch_head_gemv(const uint16_t* x, int64_t ldx, int64_t x_head_stride, const uint16_t* w,
                      int64_t H, int64_t N, int64_t K, int64_t T, bool x_early, void* out,
                      bool out_bf, int64_t ldo, int64_t out_head_stride, cudaStream_t s,
                      bool trigger_first = false);
// Which per-head GEMVs let the next kernel launch before their pdl_wait
// (R1SERVE_CUDA_TRIGGER_FIRST: 0 none; 1, the default, all; 2 those with N > K,
// the absorbed query's W_UK before the decode attention).
int head_gemv_trigger_first_mode();
void set_head_gemv_trigger_first_mode(int mode);
// Per-head GEMVs of short rows (K <= 256) by the short-row kernel (on unless
// R1SERVE_CUDA_HEAD_GEMV_SHORT=0).
void set_head_gemv_short(bool on);
// The absorbed MLA query of one token in one kernel (q_absorb.cu): q [H qk] =
// RMSNorm(x) W_q^T (the folded norm), then qa[h ohs + n] = W_UK[h, n] . q[h qk
// ... + 128] for n < 512, bit for bit what rms_norm_linear (folded) and
// head_linear write. One cluster of 8 blocks a head.
struct QAbsorbArgs {
  const uint16_t* x = nullptr;  // [K] BF16, the raw (unnormed) c_q
  const float* norm_w = nullptr;
  float eps = 0.0f;
  int K = 0;                      // 768 or 1536
  const uint16_t* wq = nullptr;   // [H qk, K]
  int qk = 0;                     // 192
  uint16_t* q = nullptr;          // [H qk]
  const uint16_t* wuk = nullptr;  // [H, 512, 128]
  uint16_t* qa = nullptr;
  int64_t ohs = 0;
};
// Whether the kernel takes these widths (and R1SERVE_CUDA_Q_ABSORB is not 0).
bool q_absorb_ok(int64_t K, int64_t qk, int64_t heads, int64_t N, int64_t dn);
// R1SERVE_CUDA_Q_ABSORB: 0 the two kernels, 1 (default) one kernel.
void set_q_absorb(bool on);
void launch_q_absorb(const QAbsorbArgs& a, int heads, cudaStream_t s);
// xg[pos] = x[sorted_pair[pos] / K] (BF16 rows for the grouped GEMM).
void launch_moe_gather(const void* x, bool x_bf, int64_t H, const int32_t* sorted_pair, int64_t P,
                       int64_t K, uint16_t* xg, cudaStream_t s);
// out[t] = sum_j w[t, j] * y[pos_of_pair[t*K + j]], j in order (pos_of_pair null: y by pair);
// with `add` [T, H], that sum rounded to out's dtype plus add[t]. With res ([T, H]):
// res[t] += that value rounded to out's dtype (what out followed by add_kernel
// computes) and out is not written.
void launch_moe_combine(const void* y, bool y_bf, const int32_t* pos_of_pair, const float* w,
                        int64_t T, int64_t K, int64_t H, const void* add, bool add_bf, void* out,
                        bool out_bf, cudaStream_t s, void* res = nullptr, bool res_bf = false);

// ---- attention.cu ----
// One tile = up to 16 query rows (token, head) of one sequence that share a KV head.
struct AttnTile {
  int32_t seq;
  int32_t kvh;
  int32_t i0;    // first flattened row (t - q_start) * G + g
  int32_t kmax;  // keys the tile needs when planned (the kernel reads positions instead)
};
struct AttnArgs {
  const uint16_t* q;  // BF16 [T, q_row]
  int64_t q_row, q_head_stride;
  const uint16_t* k;     // BF16 cache rows
  const uint16_t* v;     // BF16 cache rows (== k for MLA)
  int64_t k_row, v_row;  // elements per cache slot
  int64_t block_size;
  const int32_t* block_tables;
  int32_t max_blocks;
  const int32_t* query_start;
  const int32_t* positions;
  const AttnTile* tiles;
  int32_t num_tiles;
  int32_t G;           // query heads per KV head
  int32_t dk, dv;      // key / value widths
  int64_t k_head_off;  // kvh * k_head_off added to key/value offsets (dense: head_dim; MLA: 0)
  float scale;
  uint16_t* out;  // BF16 [T, out_row]
  int64_t out_row, out_head_stride;
  int32_t splits, keys_per_split;
  float* ws_acc;  // [splits, num_tiles * 16, dv]
  float* ws_ml;   // [splits, num_tiles * 16, 2]
};
void launch_paged_attention(const AttnArgs& a, cudaStream_t s);

// ---- mla_attention.cu ----
// Absorbed MLA on tensor cores: q [T, H, D] BF16 (D = kv_lora_rank + rope_dim),
// latent cache [blocks, block_size, D] BF16 -> out [T, H, kv_lora_rank] BF16.
// The same kernel runs dense GQA (launch_gqa_attention): K and V caches,
// G = group_rows query heads per KV head, head_dim-wide keys at kv_off =
// head_dim x kv head in each cache row.
struct MlaArgs {
  const uint16_t* q;
  int64_t q_row;           // elements per token row of q (H * D)
  const uint16_t* cache;   // keys (MLA: latent rows)
  const uint16_t* vcache;  // GQA: values (MLA: the keys' first columns are the values)
  int64_t k_row, v_row;    // elements per cache slot
  int32_t group_rows;      // query heads per block: MLA 16, GQA G
  int64_t kv_off;          // GQA: head_dim (keys of block z start at z * kv_off); MLA: 0
  int32_t block_size;
  const int32_t* block_tables;
  int32_t max_blocks;
  const int32_t* query_start;
  int32_t num_seqs;
  const int32_t* positions;
  int32_t T, H;
  float scale;
  int32_t splits, keys_per_split;  // keys_per_split: a multiple of mla_keys_per_step()
  float* ws_acc;                   // [splits, T, H, kv_lora_rank]
  float* ws_ml;                    // [splits, T, H, 2]
  int32_t* counters;               // [T, head groups of 16], no arrivals between launches
  // Set by the launcher: every block of the grid fits on the GPU at once, so a
  // token's split blocks can wait for each other and each merge a slice.
  int32_t spread_merge;
  uint16_t* out;
  int64_t out_row;  // elements per token row of out (H * kv_lora_rank)
  // MLA decode with its inputs made here (one new token per sequence; null: off).
  // rope_q: the query's last D - DV columns are rope(rope_q[t * rope_q_row +
  // h * rope_q_stride ...]) (rope_copy's arithmetic), not q's, which then only
  // needs its first DV columns per head.
  const uint16_t* rope_q;
  int64_t rope_q_row, rope_q_stride;
  // latent_kv: the token's own key is its latent row made from latent_kv[t]
  // (mla_latent_write's arithmetic) by the block whose keys hold it, which also
  // writes it to cache slot slots[t].
  const uint16_t* latent_kv;
  int64_t latent_kv_row;
  const float* latent_w;
  float latent_eps;
  const int32_t* slots;
  const float* inv_freq;  // [(D - DV) / 2], both
  float rope_factor;
  // rope_q / latent_kv may be read before pdl_wait (written two or more launches back).
  int32_t rope_q_early, latent_kv_early;
  // The next kernel may launch before this one's pdl_wait (one-token steps with
  // R1SERVE_CUDA_ATTN_TRIGGER_FIRST=1; counted as an early launch).
  int32_t trigger_first;
  // Set by the launcher: the partial states are published by one gpu-scope
  // acq_rel fence of thread 0 after a barrier instead of every thread's
  // sequentially consistent __threadfence (R1SERVE_CUDA_ATTN_LIGHT_FENCE=0: the latter).
  int32_t light_fence;
  // Set by the launcher (with spread_merge): a spare split block takes the
  // token's own key when the kernel makes its latent (on unless R1SERVE_CUDA_ATTN_FRESH_HELPER=0).
  int32_t fresh_helper;
  int32_t one_token_seqs;  // every sequence has one token: token t is sequence t's
  // The split partial states are left in ws_acc / ws_ml for the next kernel to
  // merge (GemvFusion::merge_acc; no counters, waits or merge here); tokens whose
  // keys took one split are written to out as usual.
  int32_t defer_merge;
  int32_t trigger_late;  // set by the launcher: pdl_trigger after the first keys, not the wait
  int32_t rows_tma;      // set by the launcher: the first key step's older rows by bulk copies
  int32_t stamps;        // set by the launcher: R1SERVE_CUDA_ATTN_STAMPS=1 (mla_attention_stamps)
};
// R1SERVE_CUDA_ATTN_STAMPS=1: every attention launch's blocks of token 0, head
// group 0 record %globaltimer at their checkpoints; the last launch's, as a
// table (ns from the earliest start), or "" when off.
std::string mla_attention_stamps();
bool mla_mma_supported(int64_t kv_lora_rank, int64_t rope_dim);
int mla_keys_per_step();
int mla_max_splits();
void set_attn_fresh_helper(bool on);  // tests and benchmarks: off = the own key's split makes it
bool attn_fresh_helper_enabled();
void set_mla_fused_inputs(bool on);  // attention_ops.cc; off = latent and rope kernels of their own
void set_attn_trigger_first(bool on);  // attention_ops.cc; R1SERVE_CUDA_ATTN_TRIGGER_FIRST
void set_attn_spread_merge(bool on);   // tests and benchmarks: off = the last split block merges
// The attention's merge left to the W_UV product (R1SERVE_CUDA_MLA_DEFER_MERGE, on by default).
bool mla_defer_merge_enabled();
void set_mla_defer_merge(bool on);
void launch_mla_attention(const MlaArgs& a, int64_t kv_lora_rank, int64_t rope_dim, cudaStream_t s);
bool gqa_mma_supported(int64_t group, int64_t head_dim);
void launch_gqa_attention(const MlaArgs& a, int64_t head_dim, cudaStream_t s);

// ---- merge_gemv.cu ----
// W_UV's per-head product (out[t, h * out_head_stride + n] = x[t, h] . W[h, n],
// W [H, N, K] BF16, T <= 4 tokens) where x is the absorbed MLA attention's
// output left unmerged (MlaArgs::defer_merge): token t's row of head h is the
// merge of its split partial states (acc [splits, T, H, K], ml [splits, T, H,
// 2]; mla_split_parts(positions[t], splits, kps, helper) of them), made in
// shared memory after pdl_wait with the attention's merge arithmetic and
// rounded to BF16; where a token's keys took one split, x itself (the attention
// wrote it). Each product sums in the order of the plain per-head GEMV
// (gemv_plan's split), so out equals the attention's merge followed by
// launch_head_gemv bit for bit.
struct MergeGemvArgs {
  const float* acc;
  const float* ml;
  const int32_t* positions;
  int32_t splits, kps, helper, T, H;
  const uint16_t* x;  // the attention's out [T, ldx] (head h at h * x_head_stride)
  int64_t ldx, x_head_stride;
  const uint16_t* w;
  int32_t N, K;
  uint16_t* out;  // BF16
  int64_t ldo, out_head_stride;
  bool trigger_first;  // as GemvFusion::trigger_first
};
bool merge_gemv_supported(int64_t H, int64_t N, int64_t K, int64_t T);
void launch_merge_gemv(const MergeGemvArgs& a, cudaStream_t s);

// ---- mla_prefill.cu ----
// MLA prefill over decompressed keys/values. A tile: up to
// mla_prefill_rows_per_tile() consecutive query tokens of one sequence.
struct MlaPrefillTile {
  int32_t seq;
  int32_t t0;    // first token (index into the step's tokens)
  int32_t rows;  // tokens in the tile
  int32_t kmax;  // keys the tile reads: the last token's position + 1
};
struct MlaPrefillArgs {
  const uint16_t* q;  // BF16 [T, q_row]: head h at h (dn + p), q_pe rotated
  int64_t q_row;
  const uint16_t* kv;  // BF16 [keys, kv_row]: head h at h (dn + dv): k_nope, then the value
  int64_t kv_row;
  const uint16_t* pe;  // BF16 [keys, pe_row]: rotated k_pe, shared by the heads
  int64_t pe_row;
  const int32_t* ctx_start;  // [num_seqs]: row of sequence s's key 0 in kv and pe
  const int32_t* positions;  // [T]
  const MlaPrefillTile* tiles;
  int32_t num_tiles;
  int32_t H;
  float scale;
  uint16_t* out;  // BF16 [T, out_row]: head h at h dv
  int64_t out_row;
};
int mla_prefill_rows_per_tile();
bool mla_prefill_supported(int64_t dn, int64_t p, int64_t dv);
void launch_mla_prefill(const MlaPrefillArgs& a, int64_t dn, int64_t p, int64_t dv, cudaStream_t s);
// Cache rows cache[slots[i]] ([width] BF16) -> lat [n, r] and pe [n, width - r].
void launch_mla_gather(const uint16_t* cache, int64_t width, int64_t r, const int32_t* slots,
                       int64_t n, uint16_t* lat, uint16_t* pe, cudaStream_t s);

// ---- validation.cu (F32 validation mode: plain F32 arithmetic) ----
// out[b, t, n] = x[b, t, :K] . W[b, n, :K] (W BF16), a warp per output, any alignment.
void launch_ref_gemm(const void* x, bool x_bf, int64_t ldx, int64_t x_bstride, const uint16_t* w,
                     int64_t w_bstride, int64_t N, int64_t K, int64_t T, int64_t batches, void* out,
                     bool out_bf, int64_t ldo, int64_t o_bstride, cudaStream_t s);
// Routed experts per (token, slot) pair p: act [P, I] F32, y [P, H] F32 (indexed by pair).
void launch_ref_moe(const void* x, bool x_bf, int64_t H, const uint16_t* gate_up,
                    const uint16_t* down, int64_t I, const int32_t* ids, int64_t P, int64_t K,
                    float* act, float* y, cudaStream_t s);
struct RefAttnArgs {
  const void* q;
  bool q_bf;
  int64_t q_row, q_head_stride;
  const void* k;
  const void* v;
  bool kv_bf;
  int64_t k_row, v_row, k_head_off;
  int32_t block_size;
  const int32_t* block_tables;
  int32_t max_blocks;
  const int32_t* query_start;
  const int32_t* positions;
  int32_t num_seqs, T, num_heads, G, dk, dv, max_keys;
  float scale;
  void* out;
  bool out_bf;
  int64_t out_row, out_head_stride;
};
// A block per (token, head): exact softmax over all its keys.
void launch_ref_attention(const RefAttnArgs& a, cudaStream_t s);

}  // namespace r1::backend::cuda
