// The test and benchmark hooks of cuda_backend.h: per-op timing, recorded
// steps, and the switches that set the backend's kernel paths (each drops the
// recordings made under the old setting).
#include <string>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_backend_impl.h"

namespace r1::backend {

std::string cuda_profile_report(Backend& be) {
  auto* c = dynamic_cast<cuda::CudaBackend*>(&be);
  return c ? c->profile_report() : std::string();
}

void cuda_set_profiling(Backend& be, bool on) {
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->set_profiling(on);
}

void cuda_set_graphs(Backend& be, bool on) {
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->set_graphs(on);
}

void cuda_set_pdl(Backend& be, bool on) {
  cuda::set_pdl_enabled(on);
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->drop_recordings();
}

void cuda_set_gemv_plan(int split, int rows, int unroll) {
  cuda::GemvPlan p;
  p.split = split;
  p.rows = rows;
  p.unroll = unroll;
  cuda::set_gemv_override(p);
}

void cuda_set_moe_stream(Backend& be, bool on) {
  cuda::set_moe_stream_enabled(on);
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->drop_recordings();
}

void cuda_set_moe_mma(Backend& be, bool on) {
  cuda::set_moe_mma_enabled(on);
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->drop_recordings();
}

void cuda_set_skinny_gemm(Backend& be, bool on) {
  cuda::set_skinny_gemm_enabled(on);
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->drop_recordings();
}

void cuda_set_attn_spread_merge(Backend& be, bool on) {
  cuda::set_attn_spread_merge(on);
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->drop_recordings();
}

void cuda_set_mla_fused_inputs(Backend& be, bool on) {
  cuda::set_mla_fused_inputs(on);
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->drop_recordings();
}

void cuda_set_attn_fresh_helper(Backend& be, bool on) {
  cuda::set_attn_fresh_helper(on);
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->drop_recordings();
}

void cuda_set_mla_defer_merge(Backend& be, bool on) {
  cuda::set_mla_defer_merge(on);
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->drop_recordings();
}

void cuda_set_moe_inline_route(Backend& be, bool on) {
  cuda::set_moe_inline_route(on);
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->drop_recordings();
}

void cuda_set_batch1_paths(Backend& be, bool on) {
  cuda::set_moe_inline_route(on);
  cuda::set_head_gemv_short(on);
  cuda::set_head_gemv_trigger_first_mode(on ? 1 : 0);
  cuda::set_moe_x_early(on);
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->drop_recordings();
}

void cuda_set_trigger_first(Backend& be, int head_mode, int gemv_bits) {
  cuda::set_head_gemv_trigger_first_mode(head_mode);
  cuda::set_gemv_trigger_first(gemv_bits & 7);
  cuda::set_attn_trigger_first((gemv_bits & 8) != 0);
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->drop_recordings();
}

void cuda_set_norm_fold(Backend& be, int64_t max_bytes) {
  cuda::set_norm_fold_max_bytes(max_bytes);
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->drop_recordings();
}

std::string cuda_attention_stamps() {
  return cuda::mla_attention_stamps() + cuda::moe_stream_stamps();
}

void cuda_set_max_recordings(Backend& be, size_t n) {
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) c->set_max_recordings(n);
}

CudaGraphCounts cuda_graph_counts(Backend& be) {
  CudaGraphCounts r;
  if (auto* c = dynamic_cast<cuda::CudaBackend*>(&be)) {
    const auto s = c->graph_stats();
    r.replays = s.replays;
    r.captures = s.captures;
    r.warmups = s.warmups;
    r.failures = s.failures;
    r.evictions = s.evictions;
  }
  return r;
}

int64_t cuda_free_bytes(Backend& be) {
  auto* c = dynamic_cast<cuda::CudaBackend*>(&be);
  return c ? c->free_bytes() : -1;
}

}  // namespace r1::backend
