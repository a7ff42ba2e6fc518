// Rotary embeddings in place on F32 or BF16 rows: interleaved pairs (2i, 2i+1)
// for DeepSeek MLA or NeoX halves for the dense models, with YaRN's amplitude
// factor folded into cos/sin. Angles as the CPU computes them: pos * inv_freq in F32.
#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

__global__ void rope_kernel(void* x, bool bf, int64_t row, const int32_t* positions,
                            const float* inv_freq, int64_t half, float factor, bool interleaved,
                            int64_t heads, int64_t head_stride, int64_t offset, int64_t T) {
  pdl_wait();
  pdl_trigger();
  const int64_t n = T * heads * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = idx / (heads * half), h = (idx / half) % heads, i = idx % half;
    const float angle = static_cast<float>(positions[t]) * inv_freq[i];
    float sn, cs;
    sincosf(angle, &sn, &cs);
    cs *= factor;
    sn *= factor;
    const int64_t base = t * row + h * head_stride + offset;
    const int64_t ia = interleaved ? base + 2 * i : base + i;
    const int64_t ib = interleaved ? base + 2 * i + 1 : base + i + half;
    const float x0 = ldf(x, ia, bf), x1 = ldf(x, ib, bf);
    stf(x, ia, bf, x0 * cs - x1 * sn);
    stf(x, ib, bf, x1 * cs + x0 * sn);
  }
}

// dst = rope(src): the copy and the rotation in one pass (same arithmetic as rope_kernel).
__global__ void rope_copy_kernel(const void* src, bool src_bf, int64_t src_row, int64_t src_stride,
                                 int64_t src_off, void* dst, bool dst_bf, int64_t dst_row,
                                 int64_t dst_stride, int64_t dst_off, const int32_t* positions,
                                 const float* inv_freq, int64_t half, float factor,
                                 bool interleaved, int64_t heads, int64_t T, bool early) {
  bool waited = !early;  // early: src is read before pdl_wait, only the stores wait
  if (!early) pdl_wait();
  pdl_trigger();
  const int64_t n = T * heads * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = idx / (heads * half), h = (idx / half) % heads, i = idx % half;
    const float angle = static_cast<float>(positions[t]) * inv_freq[i];
    float sn, cs;
    sincosf(angle, &sn, &cs);
    cs *= factor;
    sn *= factor;
    const int64_t ja = interleaved ? 2 * i : i, jb = interleaved ? 2 * i + 1 : i + half;
    const int64_t sb = t * src_row + h * src_stride + src_off,
                  db = t * dst_row + h * dst_stride + dst_off;
    // Round through the destination's dtype first, as copy_heads then rope would.
    float x0 = ldf(src, sb + ja, src_bf), x1 = ldf(src, sb + jb, src_bf);
    if (dst_bf) {
      x0 = __bfloat162float(__float2bfloat16_rn(x0));
      x1 = __bfloat162float(__float2bfloat16_rn(x1));
    }
    if (!waited) {
      pdl_wait();
      waited = true;
    }
    stf(dst, db + ja, dst_bf, x0 * cs - x1 * sn);
    stf(dst, db + jb, dst_bf, x1 * cs + x0 * sn);
  }
  if (!waited) pdl_wait();
}

// One block per token: MLA's cache row [rms_norm(kv[:r]) * w | rope(kv[r:])]
// straight into its cache slot (BF16 kv and cache; interleaved rope pairs).
__global__ void __launch_bounds__(256)
    mla_latent_kernel(const uint16_t* kv, int64_t width, const float* w, int64_t r, float eps,
                      const int32_t* positions, const int32_t* slots, const float* inv_freq,
                      float factor, uint16_t* cache, bool early) {
  if (!early) pdl_wait();  // early: kv is read before it, only the stores wait
  pdl_trigger();
  const int64_t t = blockIdx.x;
  const uint16_t* x = kv + t * width;
  uint16_t* out = cache + static_cast<int64_t>(slots[t]) * width;
  __shared__ float partial[8];
  const float inv = latent_inv_rms(x, r, eps, partial);
  if (early) pdl_wait();
  latent_store(x, width, r, inv, w, positions[t], inv_freq, factor, out);
}

// GQA inputs in one pass: thread (t, head, i) rotates the NeoX pair (i, i + d/2)
// of a q or k head (the arithmetic of rope_kernel) or copies it for a v head.
__global__ void qkv_rope_cache_kernel(const void* qkv, bool bf, int64_t nh, int64_t nkv, int64_t d,
                                      const int32_t* positions, const int32_t* slots,
                                      const float* inv_freq, float factor, void* q, void* kc,
                                      void* vc, int64_t T) {
  pdl_wait();
  pdl_trigger();
  const int64_t half = d / 2, heads = nh + 2 * nkv, n = T * heads * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = idx / (heads * half), h = (idx / half) % heads, i = idx % half;
    const int64_t src = t * heads * d + h * d;
    const float x0 = ldf(qkv, src + i, bf), x1 = ldf(qkv, src + i + half, bf);
    void* dst;
    int64_t base;
    if (h < nh) {
      dst = q;
      base = t * nh * d + h * d;
    } else {
      dst = h < nh + nkv ? kc : vc;
      base = static_cast<int64_t>(slots[t]) * nkv * d + ((h - nh) % nkv) * d;
    }
    if (h >= nh + nkv) {
      stf(dst, base + i, bf, x0);
      stf(dst, base + i + half, bf, x1);
      continue;
    }
    const float angle = static_cast<float>(positions[t]) * inv_freq[i];
    float sn, cs;
    sincosf(angle, &sn, &cs);
    cs *= factor;
    sn *= factor;
    stf(dst, base + i, bf, x0 * cs - x1 * sn);
    stf(dst, base + i + half, bf, x1 * cs + x0 * sn);
  }
}

}  // namespace

void launch_rope_copy(const void* src, bool src_bf, int64_t src_row, int64_t src_stride,
                      int64_t src_off, void* dst, bool dst_bf, int64_t dst_row, int64_t dst_stride,
                      int64_t dst_off, const int32_t* positions, int64_t T, const float* inv_freq,
                      int64_t half, float attention_factor, bool interleaved, int64_t heads,
                      cudaStream_t s, bool x_early) {
  R1_CUDA_REQUIRE((heads - 1) * src_stride + src_off + 2 * half <= src_row &&
                      (heads - 1) * dst_stride + dst_off + 2 * half <= dst_row,
                  "rope_copy: rotary window past the row");
  const int64_t n = T * heads * half;
  if (n == 0) return;
  pdl_launch(rope_copy_kernel, grid_for(n, 256), 256, 0, s, src, src_bf, src_row, src_stride,
             src_off, dst, dst_bf, dst_row, dst_stride, dst_off, positions, inv_freq, half,
             attention_factor, interleaved, heads, T, x_early);
  R1_CUDA_LAUNCHED();
}

void launch_mla_latent(const uint16_t* kv, int64_t T, int64_t width, const float* w, int64_t r,
                       float eps, const int32_t* positions, const int32_t* slots,
                       const float* inv_freq, float attention_factor, uint16_t* cache,
                       cudaStream_t s, bool x_early) {
  R1_CUDA_REQUIRE(r > 0 && r < width && (width - r) % 2 == 0, "mla_latent: widths");
  if (T == 0) return;
  pdl_launch(mla_latent_kernel, static_cast<unsigned>(T), 256, 0, s, kv, width, w, r, eps,
             positions, slots, inv_freq, attention_factor, cache, x_early);
  R1_CUDA_LAUNCHED();
}

void launch_rope(void* x, bool bf, int64_t row, const int32_t* positions, int64_t T,
                 const float* inv_freq, int64_t half, float attention_factor, bool interleaved,
                 int64_t heads, int64_t head_stride, int64_t offset, cudaStream_t s) {
  R1_CUDA_REQUIRE(offset + 2 * half <= head_stride || heads == 1,
                  "rope: rotary window past the head");
  R1_CUDA_REQUIRE((heads - 1) * head_stride + offset + 2 * half <= row,
                  "rope: rotary window past the row");
  const int64_t n = T * heads * half;
  if (n == 0) return;
  pdl_launch(rope_kernel, grid_for(n, 256), 256, 0, s, x, bf, row, positions, inv_freq, half,
             attention_factor, interleaved, heads, head_stride, offset, T);
  R1_CUDA_LAUNCHED();
}

void launch_qkv_rope_cache(const void* qkv, bool bf, int64_t T, int64_t nh, int64_t nkv, int64_t d,
                           const int32_t* positions, const int32_t* slots, const float* inv_freq,
                           float attention_factor, void* q, void* k_cache, void* v_cache,
                           cudaStream_t s) {
  R1_CUDA_REQUIRE(d % 2 == 0 && nh > 0 && nkv > 0, "qkv_rope_cache: head sizes");
  const int64_t n = T * (nh + 2 * nkv) * (d / 2);
  if (n == 0) return;
  pdl_launch(qkv_rope_cache_kernel, grid_for(n, 256), 256, 0, s, qkv, bf, nh, nkv, d, positions,
             slots, inv_freq, attention_factor, q, k_cache, v_cache, T);
}

}  // namespace r1::backend::cuda
