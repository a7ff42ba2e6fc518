// Paged attention over the BF16 KV cache, one kernel for absorbed MLA (one
// 576-wide latent head shared by all query heads, values = its first 512
// columns) and dense GQA (K and V caches, G query heads per KV head). A block
// takes a tile of 16 query rows (token, head) of one sequence that share keys,
// streams 32 keys at a time through shared memory with an online softmax, and
// either normalizes or, when the keys are split across blocks, writes
// (acc, max, sum) partials that merge_kernel combines.
#include <cfloat>

#include "backend/cuda/common.cuh"

namespace r1::backend::cuda {
namespace {

constexpr int kRows = 16;  // query rows per tile
constexpr int kKeys = 32;  // keys per step
constexpr int kThreads = 256;

// Shared layout: q [16][dk + 2], k [32][dk + 2], v [32][dv + 2] (GQA only), all
// BF16 with a 4-byte pad so rows fall in different banks; p [16][32] F32.
template <int MAX_DV>
__global__ void __launch_bounds__(kThreads) attention_kernel(AttnArgs a) {
  pdl_wait();
  pdl_trigger();
  extern __shared__ __align__(16) unsigned char smem[];
  const int dk = a.dk, dv = a.dv, ldk = dk + 2, ldv = dv + 2;
  const bool shared_v = a.v == a.k && a.v_row == a.k_row;
  uint16_t* q_s = reinterpret_cast<uint16_t*>(smem);
  uint16_t* k_s = q_s + kRows * ldk;
  uint16_t* v_s = shared_v ? k_s : k_s + kKeys * ldk;
  const int v_ld = shared_v ? ldk : ldv;
  float* p_s = reinterpret_cast<float*>(
      smem +
      (((shared_v ? (kRows + kKeys) * ldk : (kRows + kKeys) * ldk + kKeys * ldv) * 2 + 15) / 16) *
          16);
  float* m_s = p_s + kRows * kKeys;
  float* l_s = m_s + kRows;
  float* c_s = l_s + kRows;
  int* lim_s = reinterpret_cast<int*>(c_s + kRows);
  int64_t* qrow_s = reinterpret_cast<int64_t*>(lim_s + kRows + (kRows & 1 ? 1 : 0) + 2);

  const AttnTile tile = a.tiles[blockIdx.x];
  const int tid = threadIdx.x;
  const int qs = a.query_start[tile.seq], qe = a.query_start[tile.seq + 1];
  const int32_t* table = a.block_tables + static_cast<int64_t>(tile.seq) * a.max_blocks;
  const int64_t koff = static_cast<int64_t>(tile.kvh) * a.k_head_off;

  if (tid < kRows) {
    const int r = tile.i0 + tid;
    const int t = qs + r / a.G;
    const int h = tile.kvh * a.G + r % a.G;
    const bool valid = t < qe;
    lim_s[tid] = valid ? a.positions[t] + 1 : 0;
    qrow_s[tid] =
        valid ? static_cast<int64_t>(t) * a.out_row + static_cast<int64_t>(h) * a.out_head_stride
              : -1;
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
    // the query row pointer is stored in the upper part of p_s temporarily
    reinterpret_cast<int64_t*>(p_s)[tid] =
        valid ? static_cast<int64_t>(t) * a.q_row + static_cast<int64_t>(h) * a.q_head_stride : -1;
  }
  __syncthreads();
  // Queries into shared memory (zeros for invalid rows).
  for (int idx = tid; idx < kRows * (dk / 2); idx += kThreads) {
    const int r = idx / (dk / 2), c = idx % (dk / 2);
    const int64_t base = reinterpret_cast<int64_t*>(p_s)[r];
    uint32_t v = 0;
    if (base >= 0) v = *reinterpret_cast<const uint32_t*>(a.q + base + 2 * c);
    *reinterpret_cast<uint32_t*>(q_s + r * ldk + 2 * c) = v;
  }
  __syncthreads();

  const int key_begin = blockIdx.y * a.keys_per_split;
  // Keys the tile needs: up to the position of its last valid row's token (positions
  // rise within a sequence). Read on the device, so a recorded plan fits any step.
  const int last_row = min((qe - qs) * a.G, tile.i0 + kRows) - 1;
  const int kmax = a.positions[qs + last_row / a.G] + 1;
  const int key_end = min(kmax, key_begin + a.keys_per_split);

  // Thread roles. Scores: row tid/16, keys tid%16 and tid%16 + 16.
  // Output: row tid/16, columns 2*(tid%16) + 32*i.
  const int row = tid >> 4, sub = tid & 15;
  constexpr int kCols = MAX_DV / 32;  // column pairs per thread
  float acc[kCols][2];
#pragma unroll
  for (int i = 0; i < kCols; ++i) acc[i][0] = acc[i][1] = 0.0f;

  for (int j0 = key_begin; j0 < key_end; j0 += kKeys) {
    // Keys (and values) of this step.
    const int width_k = dk / 2, width_v = shared_v ? 0 : dv / 2;
    for (int idx = tid; idx < kKeys * (width_k + width_v); idx += kThreads) {
      const int j = idx / (width_k + width_v), c = idx % (width_k + width_v);
      const int key = j0 + j;
      uint32_t v = 0;
      if (key < key_end) {
        const int64_t slot =
            static_cast<int64_t>(table[key / a.block_size]) * a.block_size + key % a.block_size;
        if (c < width_k)
          v = *reinterpret_cast<const uint32_t*>(a.k + slot * a.k_row + koff + 2 * c);
        else
          v = *reinterpret_cast<const uint32_t*>(a.v + slot * a.v_row + koff + 2 * (c - width_k));
      }
      if (c < width_k)
        *reinterpret_cast<uint32_t*>(k_s + j * ldk + 2 * c) = v;
      else
        *reinterpret_cast<uint32_t*>(v_s + j * ldv + 2 * (c - width_k)) = v;
    }
    __syncthreads();
    // Scores.
    {
      float s0 = 0.0f, s1 = 0.0f;
      const uint16_t* qr = q_s + row * ldk;
      const uint16_t* k0 = k_s + sub * ldk;
      const uint16_t* k1 = k_s + (sub + 16) * ldk;
      for (int c = 0; c < dk; c += 2) {
        const uint32_t qv = *reinterpret_cast<const uint32_t*>(qr + c);
        const uint32_t a0 = *reinterpret_cast<const uint32_t*>(k0 + c);
        const uint32_t a1 = *reinterpret_cast<const uint32_t*>(k1 + c);
        const float q0 = __uint_as_float(qv << 16), q1 = __uint_as_float(qv & 0xffff0000u);
        s0 = fmaf(q0, __uint_as_float(a0 << 16), fmaf(q1, __uint_as_float(a0 & 0xffff0000u), s0));
        s1 = fmaf(q0, __uint_as_float(a1 << 16), fmaf(q1, __uint_as_float(a1 & 0xffff0000u), s1));
      }
      const int lim = lim_s[row];
      p_s[row * kKeys + sub] = j0 + sub < min(lim, key_end) ? s0 * a.scale : -INFINITY;
      p_s[row * kKeys + sub + 16] = j0 + sub + 16 < min(lim, key_end) ? s1 * a.scale : -INFINITY;
    }
    __syncthreads();
    // Online softmax: warp w updates rows 2w and 2w + 1, a lane per key.
    {
      const int warp = tid >> 5, lane = tid & 31;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int r = 2 * warp + rr;
        const float s = p_s[r * kKeys + lane];
        const float m_old = m_s[r];
        const float m_new = fmaxf(m_old, warp_max(s));
        const float p = m_new == -INFINITY ? 0.0f : expf(s - m_new);
        const float sum = warp_sum(p);
        p_s[r * kKeys + lane] = p;
        if (lane == 0) {
          const float corr = m_new == -INFINITY ? 1.0f : expf(m_old - m_new);
          c_s[r] = corr;
          m_s[r] = m_new;
          l_s[r] = l_s[r] * corr + sum;
        }
      }
    }
    __syncthreads();
    // acc = acc * corr + P V.
    {
      const float corr = c_s[row];
#pragma unroll
      for (int i = 0; i < kCols; ++i) {
        acc[i][0] *= corr;
        acc[i][1] *= corr;
      }
      const float* pr = p_s + row * kKeys;
      for (int j = 0; j < kKeys; ++j) {
        const float p = pr[j];
        const uint16_t* vr = v_s + j * v_ld;
#pragma unroll
        for (int i = 0; i < kCols; ++i) {
          const int c = 2 * sub + 32 * i;
          if (c < dv) {
            const uint32_t vv = *reinterpret_cast<const uint32_t*>(vr + c);
            acc[i][0] = fmaf(p, __uint_as_float(vv << 16), acc[i][0]);
            acc[i][1] = fmaf(p, __uint_as_float(vv & 0xffff0000u), acc[i][1]);
          }
        }
      }
    }
    __syncthreads();
  }

  const int64_t orow = qrow_s[row];
  if (a.splits == 1) {
    if (orow < 0) return;
    const float l = l_s[row];
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    __nv_bfloat16* o = reinterpret_cast<__nv_bfloat16*>(a.out) + orow;
#pragma unroll
    for (int i = 0; i < kCols; ++i) {
      const int c = 2 * sub + 32 * i;
      if (c < dv) {
        o[c] = __float2bfloat16_rn(acc[i][0] * inv);
        o[c + 1] = __float2bfloat16_rn(acc[i][1] * inv);
      }
    }
  } else {
    const int64_t grow = static_cast<int64_t>(blockIdx.y) * a.num_tiles * kRows +
                         static_cast<int64_t>(blockIdx.x) * kRows + row;
    float* w = a.ws_acc + grow * dv;
#pragma unroll
    for (int i = 0; i < kCols; ++i) {
      const int c = 2 * sub + 32 * i;
      if (c < dv) {
        w[c] = acc[i][0];
        w[c + 1] = acc[i][1];
      }
    }
    if (sub == 0) {
      a.ws_ml[2 * grow] = m_s[row];
      a.ws_ml[2 * grow + 1] = l_s[row];
    }
  }
}

// One block per tile row: combines the splits' partial softmax states.
__global__ void merge_kernel(AttnArgs a) {
  pdl_wait();
  pdl_trigger();
  const int tile_row = blockIdx.x;  // tile * 16 + row
  const AttnTile tile = a.tiles[tile_row / kRows];
  const int r = tile.i0 + tile_row % kRows;
  const int qs = a.query_start[tile.seq], qe = a.query_start[tile.seq + 1];
  const int t = qs + r / a.G;
  if (t >= qe) return;
  const int h = tile.kvh * a.G + r % a.G;
  const int64_t stride = static_cast<int64_t>(a.num_tiles) * kRows;
  float M = -INFINITY;
  for (int z = 0; z < a.splits; ++z) M = fmaxf(M, a.ws_ml[2 * (z * stride + tile_row)]);
  float L = 0.0f;
  for (int z = 0; z < a.splits; ++z) {
    const float m = a.ws_ml[2 * (z * stride + tile_row)];
    if (m != -INFINITY) L += a.ws_ml[2 * (z * stride + tile_row) + 1] * expf(m - M);
  }
  const float inv = L > 0.0f ? 1.0f / L : 0.0f;
  __nv_bfloat16* o = reinterpret_cast<__nv_bfloat16*>(a.out) + static_cast<int64_t>(t) * a.out_row +
                     static_cast<int64_t>(h) * a.out_head_stride;
  for (int c = threadIdx.x; c < a.dv; c += blockDim.x) {
    float v = 0.0f;
    for (int z = 0; z < a.splits; ++z) {
      const float m = a.ws_ml[2 * (z * stride + tile_row)];
      if (m != -INFINITY) v += a.ws_acc[(z * stride + tile_row) * a.dv + c] * expf(m - M);
    }
    o[c] = __float2bfloat16_rn(v * inv);
  }
}

size_t smem_bytes(const AttnArgs& a) {
  const bool shared_v = a.v == a.k && a.v_row == a.k_row;
  const size_t bf =
      static_cast<size_t>(shared_v ? (kRows + kKeys) * (a.dk + 2)
                                   : (kRows + kKeys) * (a.dk + 2) + kKeys * (a.dv + 2)) *
      2;
  const size_t floats = kRows * kKeys + 3 * kRows;
  return (bf + 15) / 16 * 16 + floats * 4 + (kRows + 4) * 4 + kRows * 8 + 16;
}

template <int MAX_DV>
void launch_tiles(const AttnArgs& a, cudaStream_t s) {
  const size_t smem = smem_bytes(a);
  static bool configured = false;
  if (!configured) {
    R1_CUDA_OK(cudaFuncSetAttribute(attention_kernel<MAX_DV>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, 160 * 1024));
    configured = true;
  }
  dim3 grid(static_cast<unsigned>(a.num_tiles), static_cast<unsigned>(a.splits));
  pdl_launch(attention_kernel<MAX_DV>, grid, kThreads, smem, s, a);
  R1_CUDA_LAUNCHED();
}

}  // namespace

void launch_paged_attention(const AttnArgs& a, cudaStream_t s) {
  R1_CUDA_REQUIRE(a.dk % 2 == 0 && a.dv % 2 == 0 && a.dv <= 512 && a.dk <= 1024,
                  "attention: even head widths, values at most 512 wide");
  R1_CUDA_REQUIRE(a.q_head_stride % 2 == 0 && a.q_row % 2 == 0 && a.k_row % 2 == 0 &&
                      a.v_row % 2 == 0 && a.k_head_off % 2 == 0,
                  "attention: rows must be 4-byte aligned");
  R1_CUDA_REQUIRE(a.splits == 1 || (a.ws_acc && a.ws_ml), "attention: split without workspace");
  if (a.num_tiles == 0) return;
  if (a.dv <= 128)
    launch_tiles<128>(a, s);
  else
    launch_tiles<512>(a, s);
  if (a.splits > 1) {
    pdl_launch(merge_kernel, static_cast<unsigned>(a.num_tiles) * kRows, 128, 0, s, a);
    R1_CUDA_LAUNCHED();
  }
}

}  // namespace r1::backend::cuda
