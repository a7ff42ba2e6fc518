// The CUDA backend's factory and device queries: a plain C++ header (no CUDA
// headers) so the app and tests can create the backend without nvcc.
// Activations are BF16 on the GPU; matrices are stored BF16; the KV cache is BF16
// (all F32 but the weights in the validation mode).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "backend/backend.h"

namespace r1::backend {

// Number of CUDA devices usable by this process (0 when there is no driver or GPU).
int cuda_device_count();

// The CUDA backend on `device`. It may use at most `memory_fraction` of the
// device's total memory (weights + KV cache + activations); allocations beyond
// it fail with a message saying how much was needed and available.
// With `f32_activations` (a validation mode, slow): activations between ops, GEMM
// inputs, MoE intermediates and the KV cache are F32; weights stay BF16 and are
// widened exactly, so results match the CPU backend to float rounding.
std::unique_ptr<Backend> make_cuda_backend(int device = 0, double memory_fraction = 0.9,
                                           bool f32_activations = false);

// Bytes of device memory the backend may still allocate under its limit
// (for sizing a KV-cache pool), or -1 if `be` is not a CUDA backend.
int64_t cuda_free_bytes(Backend& be);

// With R1SERVE_CUDA_PROFILE set: GPU time per op since the last call (empty otherwise).
std::string cuda_profile_report(Backend& be);
// Turns the per-op timing on or off at run time.
void cuda_set_profiling(Backend& be, bool on);
// Turns recorded decode steps (CUDA graphs) on or off; on by default unless
// R1SERVE_CUDA_GRAPHS=0. Per-op profiling runs every step eagerly.
void cuda_set_graphs(Backend& be, bool on);
// Turns programmatic dependent launch (kernels overlapping the tail of the one
// before them) on or off for the whole process; on by default unless
// R1SERVE_CUDA_PDL=0. Drops the backend's recorded steps so new ones follow it.
void cuda_set_pdl(Backend& be, bool on);
// Benchmarks: forces how the dense GEMVs cover their weights (split warps per
// row 1/2/4/8, rows per warp 1/2, unroll 4/8) where valid; split 0 restores the
// built-in choice.
void cuda_set_gemv_plan(int split, int rows, int unroll);
// Tests and benchmarks: the routed experts of small batches streamed through
// shared memory (on by default unless R1SERVE_CUDA_MOE_STREAM=0) or computed by
// the warp-per-row GEMVs (off). Drops the backend's recorded steps.
void cuda_set_moe_stream(Backend& be, bool on);
// Decode batches past the expert GEMVs: tensor-core kernels driven from the device (on), or
// the grouped cuBLAS GEMMs after a host sync (off). Drops the backend's recordings.
void cuda_set_moe_mma(Backend& be, bool on);
// Dense products of 5-128 rows (decode batches): the split-K tensor-core kernel (on by
// default unless R1SERVE_CUDA_SKINNY_GEMM=0) or cuBLAS (off). Drops the backend's recordings.
void cuda_set_skinny_gemm(Backend& be, bool on);
// Tests and benchmarks: a token's decode-attention split blocks each merge a
// slice of its outputs (on by default unless R1SERVE_CUDA_ATTN_SPREAD_MERGE=0)
// or the last of them merges all (off). Drops the backend's recorded steps.
void cuda_set_attn_spread_merge(Backend& be, bool on);
// Tests and benchmarks: decode steps of absorbed MLA make the new tokens' latent
// rows and the query's rotary columns inside the attention kernel (on by
// default unless R1SERVE_CUDA_MLA_FUSED_INPUTS=0) or in kernels of their own
// (off). Drops the backend's recorded steps.
void cuda_set_mla_fused_inputs(Backend& be, bool on);
// Tests and benchmarks: with those latents made in the kernel, a spare split
// block takes each token's own key as a partial state of its own (on: the
// default; R1SERVE_CUDA_ATTN_FRESH_HELPER=0 turns it off) or the split holding it does.
void cuda_set_attn_fresh_helper(Backend& be, bool on);
// Tests and benchmarks: few-token decode steps of absorbed MLA leave the
// attention's split merge to the W_UV product's prologue (on: the default;
// R1SERVE_CUDA_MLA_DEFER_MERGE=0 turns it off) or merge in the attention
// (off). Drops the backend's recorded steps.
void cuda_set_mla_defer_merge(Backend& be, bool on);
// Tests and benchmarks: a one-token step's routing is done by the streamed
// expert kernels themselves (on; the route op's outputs are still written) or
// by the route kernel (off; R1SERVE_CUDA_MOE_INLINE_ROUTE=0). On by default.
// Drops the backend's recorded steps.
void cuda_set_moe_inline_route(Backend& be, bool on);
// Tests and benchmarks: the batch-1 paths of 2026-12-07 session 3, all on (the
// default since their first GPU run) or all off: the routing in the streamed
// experts (above), W_UK by the short-row GEMV (R1SERVE_CUDA_HEAD_GEMV_SHORT)
// and the per-head GEMVs triggering the next kernel before their wait
// (R1SERVE_CUDA_TRIGGER_FIRST=1, since session 5; session 3's was W_UK only), and
// the streamed gate/up kernel reading x before its wait (R1SERVE_CUDA_MOE_X_EARLY).
// Drops the backend's recorded steps.
void cuda_set_batch1_paths(Backend& be, bool on);
// Tests and benchmarks: which one-token GEMVs trigger the next kernel before
// their own wait. head_mode: the per-head GEMVs (R1SERVE_CUDA_TRIGGER_FIRST: 0
// none, 1 all, 2 those with more rows than columns: W_UK); gemv_bits: the
// dense ones (R1SERVE_CUDA_GEMV_TRIGGER_FIRST: 1 rms_norm_linear_pair, 2
// rms_norm_linear, 4 linear_add; 8: the decode attention,
// R1SERVE_CUDA_ATTN_TRIGGER_FIRST). Drops the backend's recorded steps.
void cuda_set_trigger_first(Backend& be, int head_mode, int gemv_bits);
// Tests and benchmarks: a GEMV with an RMSNorm of its input folds the norm
// into its products when it reads at most `max_bytes` of weights (else the
// normalizing prologue); negative: the default (R1SERVE_CUDA_NORM_FOLD_MB, 16).
// Drops the backend's recorded steps.
void cuda_set_norm_fold(Backend& be, int64_t max_bytes);
// Benchmarks: with R1SERVE_CUDA_ATTN_STAMPS=1, the checkpoint times of the
// last decode-attention launch's blocks (one token, one head group), and with
// R1SERVE_CUDA_MOE_STAMPS=1 those of the last streamed expert kernels, else "".
std::string cuda_attention_stamps();
// Recorded-step counters: replays, captures, warm-ups, failed captures, shapes dropped
// to make room (least recently used first).
struct CudaGraphCounts {
  int64_t replays = 0, captures = 0, warmups = 0, failures = 0, evictions = 0;
};
CudaGraphCounts cuda_graph_counts(Backend& be);
// Tests: at most n recorded step shapes (default 96). Drops the backend's recordings.
void cuda_set_max_recordings(Backend& be, size_t n);

}  // namespace r1::backend
