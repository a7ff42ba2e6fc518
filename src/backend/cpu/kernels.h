// The hot inner loops of the CPU backend, compiled once per vector ISA
// (AVX-512, AVX2, generic) from kernels_impl.inc; cpu_backend.cc picks one
// table at run time. Every output of gemm is reduced in the same order
// whatever the tile shape, so results never depend on the batch size.
#pragma once

#include <cstdint>

namespace r1::backend::cpu {

// kI8: weight-only int8 with one F32 scale per weight row.
enum class WeightType { kF32, kBF16, kI8 };

struct Kernels {
  const char* isa;
  int vector_floats;  // lanes per vector register
  // out[m * ldo + n] = (sum_k x[m * ldx + k] * W[n, k]) * scale[n] (+ bias[n])
  // for m < M, n < N; W rows are ldw elements apart, of type `wt`; scale and
  // bias may be null.
  void (*gemm)(const float* x, int64_t ldx, int64_t M, const void* w, WeightType wt, int64_t ldw,
               int64_t N, int64_t K, const float* scale, const float* bias, float* out,
               int64_t ldo);
  // sum_i a[i] * b[i], fixed reduction order.
  float (*dot)(const float* a, const float* b, int64_t n);
  // y[i] += alpha * x[i]
  void (*axpy)(float* y, float alpha, const float* x, int64_t n);
  // y[i] = alpha * y[i]
  void (*scale)(float* y, float alpha, int64_t n);
  // sum_i x[i]^2, fixed order.
  float (*sum_squares)(const float* x, int64_t n);
  // out[i] = x[i] * inv_rms * w[i]
  void (*scale_mul)(const float* x, float inv_rms, const float* w, float* out, int64_t n);
  // out[i] = silu(g[i]) * u[i]
  void (*silu_mul)(const float* g, const float* u, float* out, int64_t n);
  // dst[i] = (float) src[i] for bf16 src
  void (*bf16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  // Benchmark helpers: `iters` rounds of independent FMAs in registers
  // (returns the flop count), and a streaming read of n floats (returns a sum
  // so the read cannot be optimized away).
  double (*fma_peak)(int64_t iters, float* sink);
  float (*stream_read)(const float* x, int64_t n);
};

const Kernels& kernels_avx512();
const Kernels& kernels_avx2();
const Kernels& kernels_generic();

// The best table for this CPU (R1SERVE_CPU_ISA=avx2|generic forces one).
const Kernels& best_kernels();

}  // namespace r1::backend::cpu
