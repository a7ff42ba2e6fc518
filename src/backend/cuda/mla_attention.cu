// Absorbed MLA attention on tensor cores (mma.sync m16n8k16, BF16 in, F32
// accumulate): every query row of a token is one of its heads, and all heads
// share one latent key per cached token (D = kv_lora_rank + rope_dim wide;
// values are its first DV columns). A block takes one token, 16 heads and a
// range of keys: it streams 64 keys at a time through shared memory, computes
// S = Q K^T (16 x 64), an online softmax, and O += P V with V read from the same
// shared rows. When a token's keys are split across blocks (decode, few tokens),
// partial (acc, max, sum) states go to a workspace; when the whole grid is
// resident at once the token's split blocks wait for each other and each merges
// a slice of the outputs, otherwise the last block to finish merges them all.
// Bandwidth arithmetic: a decode step at context n reads n x D x 2 bytes of
// cache per layer and token; everything else stays in shared memory.
#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cstdlib>
#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/mla_merge.cuh"

namespace r1::backend::cuda {
namespace {

using mla::kHeads;
using mla::kKeys;
using mla::kMaxSplits;
using mla::kThreads;
using mla::merge_outputs;

// Checkpoints of MlaArgs::stamps: start, before pdl_wait, after it, first keys
// in shared memory, keys done, partial state written, all splits arrived, end;
// then, inside the spread merge, the partial maxima and sums read, the weights
// made; then the first key slots found, the older rows requested, (thread
// 0's) older rows in, after q is requested, the prologue after the wait done
// (the query's rotation), and the first key step's scores and softmax made.
constexpr int kStamps = 16;
__device__ unsigned long long g_stamps[kMaxSplits][kStamps];
// The SM's clock64 at the waited and keys-done checkpoints: the clock the
// block ran at in between (latency-bound phases scale with it).
__device__ long long g_stamp_clocks[kMaxSplits][2];

template <int DV, int D, bool SEPV>
struct Smem {
  static constexpr int kLd = D + 8;       // BF16 per q/k/v row (+16 bytes: conflict-free fragments)
  static constexpr int kLdp = kKeys + 8;  // BF16 per P row
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + size_t{kHeads} * kLd * 2;
  static constexpr size_t kV = kK + size_t{kKeys} * kLd * 2;  // separate values (GQA)
  static constexpr size_t kS = SEPV ? kV + size_t{kKeys} * kLd * 2 : kV;
  static constexpr size_t kP = kS + size_t{kHeads} * kKeys * 4;
  static constexpr size_t kStats = kP + size_t{kHeads} * kLdp * 2;
  static constexpr size_t kSlots = kStats + 3 * kHeads * 4;
  static constexpr size_t kFresh = kSlots + kKeys * 8;  // the token's own latent row (MLA)
  static constexpr size_t kBar = kFresh + size_t{D} * 2 + 8 * 4;  // rows_tma's mbarrier
  static constexpr size_t kBytes = kBar + 8;
  static_assert(kK % 16 == 0 && kLd * 2 % 16 == 0 && kBar % 8 == 0, "bulk-copy alignment");
};

template <int DV, int D, bool SEPV>
__global__ void __launch_bounds__(kThreads) mla_mma_kernel(MlaArgs a) {
  static_assert(D % 16 == 0 && DV % 64 == 0 && DV <= D, "attention widths");
  using L = Smem<DV, D, SEPV>;
  constexpr int kLd = L::kLd, kLdp = L::kLdp;
  constexpr int kTiles = DV / 64;  // n-tiles of 8 value columns per warp
  extern __shared__ __align__(16) unsigned char smem[];
  uint16_t* q_s = reinterpret_cast<uint16_t*>(smem + L::kQ);
  uint16_t* k_s = reinterpret_cast<uint16_t*>(smem + L::kK);
  uint16_t* v_s = reinterpret_cast<uint16_t*>(smem + (SEPV ? L::kV : L::kK));
  float* s_s = reinterpret_cast<float*>(smem + L::kS);
  uint16_t* p_s = reinterpret_cast<uint16_t*>(smem + L::kP);
  float* m_s = reinterpret_cast<float*>(smem + L::kStats);
  float* l_s = m_s + kHeads;
  float* c_s = l_s + kHeads;
  int64_t* slot_s = reinterpret_cast<int64_t*>(smem + L::kSlots);
  uint16_t* fresh_s = reinterpret_cast<uint16_t*>(smem + L::kFresh);
  float* red_s = reinterpret_cast<float*>(smem + L::kFresh + size_t{D} * 2);
  uint64_t* bar_s = reinterpret_cast<uint64_t*>(smem + L::kBar);

  // Block z takes query heads h0 .. h0 + nrows - 1 (MLA: 16 of all heads; GQA: the
  // G heads of KV head z, whose keys start z * kv_off into each cache row).
  const int t = blockIdx.x, split = blockIdx.y, h0 = blockIdx.z * a.group_rows;
  const int nrows = min(a.group_rows, a.H - h0);
  const int64_t koff = static_cast<int64_t>(blockIdx.z) * a.kv_off;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
  const bool stamping = a.stamps != 0 && t == 0 && blockIdx.z == 0 && tid == 0;
  auto stamp = [&](int i) {
    if (!stamping) return;
    g_stamps[split][i] = global_ns();
    if (i == 2 || i == 4) g_stamp_clocks[split][i / 4] = clock64();
  };
  if (stamping)
    for (int i = 1; i < kStamps; ++i) g_stamps[split][i] = 0;
  stamp(0);
  // Inputs written two or more launches back start moving into L1 at once
  // (the latent's kv row, the query's rotary columns; read below).
  if (!SEPV && a.latent_kv != nullptr && a.latent_kv_early && tid < D / 64)
    asm volatile("prefetch.global.L1 [%0];" ::"l"(a.latent_kv + t * a.latent_kv_row + tid * 64));
  if (!SEPV && a.rope_q != nullptr && a.rope_q_early && tid < 2 * nrows)
    asm volatile("prefetch.global.L1 [%0];" ::"l"(
        a.rope_q + t * a.rope_q_row + (h0 + tid / 2) * a.rope_q_stride + (tid % 2) * (D - DV - 1)));
  // and the constants they use (the latent's norm weights, the rotary frequencies)
  if (!SEPV && a.latent_kv != nullptr && tid >= 64 && tid < 64 + DV / 32)
    asm volatile("prefetch.global.L1 [%0];" ::"l"(a.latent_w + (tid - 64) * 32));
  if (!SEPV && (a.latent_kv != nullptr || a.rope_q != nullptr) && tid == 96)
    asm volatile("prefetch.global.L1 [%0];" ::"l"(a.inv_freq));
  // The token's sequence: itself when every sequence has one token (decode),
  // else the last s with query_start[s] <= t.
  int lo = 0;
  if (a.one_token_seqs) {
    lo = t;
  } else {
    int hi = a.num_seqs - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (a.query_start[mid] <= t)
        lo = mid;
      else
        hi = mid - 1;
    }
  }
  const int32_t* table = a.block_tables + static_cast<int64_t>(lo) * a.max_blocks;
  const int key_begin = split * a.keys_per_split;
  // The block-table entries of the first key step, requested together with the
  // position (one round trip for both; entries past the keys are not used).
  int32_t first_block = 0;
  if (tid < kKeys && (key_begin + tid) / a.block_size < a.max_blocks)
    first_block = table[(key_begin + tid) / a.block_size];
  const int pos_t = a.positions[t];
  // Splits past the token's last key (a recorded step plans for the block
  // table's capacity) have nothing to add: they leave at once, and the merge
  // counts and reads only the `active` ones (their weights would be zero).
  const int active = min(a.splits, (pos_t + a.keys_per_split) / a.keys_per_split);
  // With the token's own latent made here and a split block to spare, that
  // block (split == active, the helper) takes the own key alone as one more
  // partial state, so making the latent runs beside the other splits' keys
  // instead of before one of them; the others stop one key short.
  const bool helper =
      !SEPV && a.latent_kv != nullptr && a.fresh_helper && a.one_token_seqs && active < a.splits;
  const int parts = active + (helper ? 1 : 0);  // partial states merged
  const bool is_helper = helper && split == active;
  const int key_end = min(pos_t + (helper ? 0 : 1), key_begin + a.keys_per_split);
  // Keys from this position on are written in this step (by the kernels just
  // before); older cache rows, and the step's inputs (positions, block tables,
  // query_start, copied before its first kernel), may be read before pdl_wait.
  const int fresh_from = a.one_token_seqs ? pos_t : a.positions[a.query_start[lo]];
  // Inputs made here (decode, one token a sequence: the only fresh key is the
  // token's own, at fresh_from): the block whose keys hold it makes its latent
  // row in fresh_s; the rotary columns of the query come from rope_q.
  const bool own_key = !SEPV && a.latent_kv != nullptr &&
                       (helper ? is_helper : fresh_from >= key_begin && fresh_from < key_end);
  auto make_latent = [&] {  // every thread; ends synced
    const uint16_t* x = a.latent_kv + t * a.latent_kv_row;
    const float inv = latent_inv_rms(x, DV, a.latent_eps, red_s);
    latent_store(x, D, DV, inv, a.latent_w, fresh_from, a.inv_freq, a.rope_factor, fresh_s);
    __syncthreads();
  };
  // The query's rotation (rope_copy's arithmetic; rows past nrows get zeros):
  // each thread's pairs' angles are made first (the positions and frequencies
  // are the step's inputs, readable before pdl_wait), then the pairs read,
  // rotated and stored, both pairs' loads in flight together.
  constexpr int kPairs = (D - DV) / 2, kHalf = kPairs > 0 ? kPairs : 1;  // GQA: none
  constexpr int kRopeIters = (kHeads * kPairs + kThreads - 1) / kThreads;
  float rope_cs[kRopeIters > 0 ? kRopeIters : 1], rope_sn[kRopeIters > 0 ? kRopeIters : 1];
  auto rope_angles = [&] {
    const float pos = static_cast<float>(a.positions[t]);
#pragma unroll
    for (int j = 0; j < kRopeIters; ++j) {
      const int i = (tid + j * kThreads) % kHalf;
      float sn, cs;
      sincosf(pos * a.inv_freq[i], &sn, &cs);
      rope_cs[j] = cs * a.rope_factor;
      rope_sn[j] = sn * a.rope_factor;
    }
  };
  auto rope_query = [&] {
    __nv_bfloat162 x[kRopeIters > 0 ? kRopeIters : 1];
#pragma unroll
    for (int j = 0; j < kRopeIters; ++j) {
      const int idx = tid + j * kThreads, r = idx / kHalf, i = idx % kHalf;
      x[j] = __floats2bfloat162_rn(0.0f, 0.0f);
      if (idx < kHeads * kPairs && r < nrows)
        x[j] = *reinterpret_cast<const __nv_bfloat162*>(a.rope_q + t * a.rope_q_row +
                                                        (h0 + r) * a.rope_q_stride + 2 * i);
    }
#pragma unroll
    for (int j = 0; j < kRopeIters; ++j) {
      const int idx = tid + j * kThreads, r = idx / kHalf, i = idx % kHalf;
      if (idx >= kHeads * kPairs) continue;
      const float x0 = __low2float(x[j]), x1 = __high2float(x[j]);
      const float cs = rope_cs[j], sn = rope_sn[j];
      *reinterpret_cast<__nv_bfloat162*>(q_s + r * kLd + DV + 2 * i) =
          r < nrows ? __floats2bfloat162_rn(x0 * cs - x1 * sn, x1 * cs + x0 * sn)
                    : __floats2bfloat162_rn(0.0f, 0.0f);
    }
  };

  // The slots of keys j0 .. j0 + 63, then their rows: which = 0 the rows that
  // existed before this step (and the zero rows past the end), 1 the fresh
  // ones, 2 all.
  auto find_slots = [&](int j0) {
    if (tid < kKeys) {
      const int key = j0 + tid;
      const int32_t blk = j0 == key_begin ? first_block : table[key / a.block_size];
      slot_s[tid] =
          key < key_end ? static_cast<int64_t>(blk) * a.block_size + key % a.block_size : -1;
    }
  };
  auto load_rows = [&](int j0, int which) {
    for (int idx = tid; idx < kKeys * (D / 8); idx += kThreads) {
      const int j = idx / (D / 8), c = idx % (D / 8);
      const int64_t slot = slot_s[j];
      const bool fresh = slot >= 0 && j0 + j >= fresh_from;
      if (own_key && j0 + j == fresh_from) {  // made in fresh_s (already synced)
        if (which != 0)
          *reinterpret_cast<uint4*>(k_s + j * kLd + c * 8) =
              *reinterpret_cast<const uint4*>(fresh_s + c * 8);
        continue;
      }
      if (which == 2 || (which == 1) == fresh)
        cp_async16(k_s + j * kLd + c * 8, a.cache + (slot < 0 ? 0 : slot) * a.k_row + koff + c * 8,
                   slot >= 0);
    }
    if (SEPV) {
      for (int idx = tid; idx < kKeys * (DV / 8); idx += kThreads) {
        const int j = idx / (DV / 8), c = idx % (DV / 8);
        const int64_t slot = slot_s[j];
        const bool fresh = slot >= 0 && j0 + j >= fresh_from;
        if (which == 2 || (which == 1) == fresh)
          cp_async16(v_s + j * kLd + c * 8,
                     a.vcache + (slot < 0 ? 0 : slot) * a.v_row + koff + c * 8, slot >= 0);
      }
    }
  };
  // The first step's older rows are requested while the kernel before still runs
  // (with rows_tma, a bulk copy a row: 64 requests instead of 64 x D / 8).
  const bool tma_rows = !SEPV && a.rows_tma != 0 && key_begin < key_end;
  if (key_begin < key_end) {
    if (tma_rows && tid == 0) mbar_init(bar_s, kKeys);
    find_slots(key_begin);
    __syncthreads();
    stamp(10);
    if (tma_rows) {
      if (tid < kKeys) {
        const int64_t slot = slot_s[tid];
        if (slot >= 0 && key_begin + tid < fresh_from) {
          mbar_arrive_expect_tx(bar_s, D * 2);
          bulk_copy_g2s(k_s + tid * kLd, a.cache + slot * a.k_row + koff, D * 2, bar_s);
        } else {
          mbar_arrive(bar_s);
        }
      }
      for (int j = warp; j < kKeys; j += kThreads / 32)  // load_rows' zero fill past the keys
        if (slot_s[j] < 0)
          for (int c = lane; c < D / 8; c += 32)
            *reinterpret_cast<uint4*>(k_s + j * kLd + c * 8) = make_uint4(0, 0, 0, 0);
    } else {
      load_rows(key_begin, 0);
    }
    if (stamping) asm volatile("cp.async.commit_group;\n" ::: "memory");
    stamp(11);
  }
  const bool rope_here = !SEPV && a.rope_q != nullptr;
  if (own_key && a.latent_kv_early) make_latent();
  if (rope_here && split < parts) rope_angles();
  if (rope_here && a.rope_q_early && split < parts) rope_query();
  stamp(1);
  if (a.trigger_first) pdl_trigger();
  pdl_wait();
  if (!a.trigger_late) pdl_trigger();
  stamp(2);
  if (split >= parts) return;
  // q (made by the kernel just before) is requested first, so that its round
  // trip overlaps the rotation's reads below (columns [DV, D), apart from these).
  const int qcols = rope_here ? DV : D;  // columns of q read from a.q
  for (int idx = tid; idx < kHeads * (qcols / 8); idx += kThreads) {
    const int r = idx / (qcols / 8), c = idx % (qcols / 8);
    const bool valid = r < nrows;
    cp_async16(q_s + r * kLd + c * 8,
               a.q + t * a.q_row + static_cast<int64_t>(valid ? h0 + r : h0) * D + c * 8, valid);
  }
  if (stamping && key_begin < key_end) {  // thread 0's older rows, q still in flight
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    if (tma_rows) mbar_wait(bar_s, 0);
    stamp(12);
  }
  if (own_key && !a.latent_kv_early) make_latent();
  if (rope_here && !a.rope_q_early) rope_query();
  if (own_key && blockIdx.z == 0)  // the cache row, for the steps after this one
    for (int c = tid; c < D / 8; c += kThreads)
      *reinterpret_cast<uint4*>(const_cast<uint16_t*>(a.cache) + int64_t{a.slots[t]} * a.k_row +
                                c * 8) = *reinterpret_cast<const uint4*>(fresh_s + c * 8);

  if (tid < kHeads) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  stamp(13);
  float acc[kTiles][4];
#pragma unroll
  for (int n = 0; n < kTiles; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  const int col0 = warp * (DV / 8);

  for (int j0 = key_begin; j0 < key_end; j0 += kKeys) {
    if (j0 == key_begin) {
      // The fresh rows, if this step has any (a decode split block without the
      // own key skips the pass over its older rows' slots).
      if (fresh_from < min(j0 + kKeys, key_end)) load_rows(j0, 1);
    } else {
      __syncthreads();  // the previous step's k_s and p_s consumed
      find_slots(j0);
      __syncthreads();
      load_rows(j0, 2);
    }
    cp_async_wait_all();
    if (tma_rows && j0 == key_begin) mbar_wait(bar_s, 0);
    __syncthreads();
    if (j0 == key_begin) {
      stamp(3);
      if (a.trigger_late) pdl_trigger();
    }
    {  // S = Q K^T: warp w takes keys 8w .. 8w + 7 for all 16 heads. Q's fragments
      // by ldmatrix; two accumulators (even and odd k steps) halve the MMA chain.
      float s4[4] = {0.0f, 0.0f, 0.0f, 0.0f}, t4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      const uint16_t* kr = k_s + (warp * 8 + g) * kLd;
      // Lane l addresses row l % 8 (+ 8 for matrices 1 and 3), columns + 8 for 2 and 3.
      const uint16_t* qa = q_s + ((lane & 7) + ((lane >> 3) & 1) * 8) * kLd + (lane >> 4) * 8;
#pragma unroll
      for (int k0 = 0; k0 < D; k0 += 32) {  // whole: every step's loads can be issued early
        uint32_t af[4];
        ldmatrix_x4(af, qa + k0);
        mma_bf16(s4, af[0], af[1], af[2], af[3], ld32(kr + k0 + 2 * tg),
                 ld32(kr + k0 + 8 + 2 * tg));
        if (k0 + 16 < D) {  // D % 32 == 16 (80, 160): the last step has no odd half
          ldmatrix_x4(af, qa + k0 + 16);
          mma_bf16(t4, af[0], af[1], af[2], af[3], ld32(kr + k0 + 16 + 2 * tg),
                   ld32(kr + k0 + 24 + 2 * tg));
        }
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) s4[i] += t4[i];
      const int kc = warp * 8 + 2 * tg, key = j0 + kc;
      s_s[g * kKeys + kc] = key < key_end ? s4[0] * a.scale : -INFINITY;
      s_s[g * kKeys + kc + 1] = key + 1 < key_end ? s4[1] * a.scale : -INFINITY;
      s_s[(g + 8) * kKeys + kc] = key < key_end ? s4[2] * a.scale : -INFINITY;
      s_s[(g + 8) * kKeys + kc + 1] = key + 1 < key_end ? s4[3] * a.scale : -INFINITY;
    }
    __syncthreads();
    if (j0 == key_begin) stamp(14);
    // Online softmax: warp w updates heads 2w and 2w + 1, two keys per lane. P is
    // rounded to BF16 for the product and the row sum adds the rounded values.
    // Both heads' inputs are read before any store, so their shuffle chains
    // interleave (a store between them would order the second head's loads
    // after the first head's whole chain).
    {
      const int r0 = 2 * warp;
      float s[2][2], m_old[2], mx[2], sum[2];
      __nv_bfloat16 p[2][2];
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        s[rr][0] = s_s[(r0 + rr) * kKeys + lane];
        s[rr][1] = s_s[(r0 + rr) * kKeys + lane + 32];
        m_old[rr] = m_s[r0 + rr];
        mx[rr] = fmaxf(s[rr][0], s[rr][1]);
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1)  // warp_max of both heads
#pragma unroll
        for (int rr = 0; rr < 2; ++rr)
          mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], o));
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        mx[rr] = fmaxf(m_old[rr], mx[rr]);  // the new maximum
#pragma unroll
        for (int k = 0; k < 2; ++k)
          p[rr][k] = __float2bfloat16_rn(mx[rr] == -INFINITY ? 0.0f : expf(s[rr][k] - mx[rr]));
        sum[rr] = __bfloat162float(p[rr][0]) + __bfloat162float(p[rr][1]);
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1)  // warp_sum of both heads
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) sum[rr] += __shfl_xor_sync(0xffffffffu, sum[rr], o);
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int r = r0 + rr;
        reinterpret_cast<__nv_bfloat16*>(p_s)[r * kLdp + lane] = p[rr][0];
        reinterpret_cast<__nv_bfloat16*>(p_s)[r * kLdp + lane + 32] = p[rr][1];
        if (lane == 0) {
          const float corr = mx[rr] == -INFINITY ? 1.0f : expf(m_old[rr] - mx[rr]);
          c_s[r] = corr;
          m_s[r] = mx[rr];
          l_s[r] = l_s[r] * corr + sum[rr];
        }
      }
    }
    __syncthreads();
    if (j0 == key_begin) stamp(15);
    {  // O = O * corr + P V: warp w takes value columns [col0, col0 + DV / 8).
      const float cg = c_s[g], cg8 = c_s[g + 8];
#pragma unroll
      for (int n = 0; n < kTiles; ++n) {
        acc[n][0] *= cg;
        acc[n][1] *= cg;
        acc[n][2] *= cg8;
        acc[n][3] *= cg8;
      }
      const uint16_t* pa = p_s + ((lane & 7) + ((lane >> 3) & 1) * 8) * kLdp + (lane >> 4) * 8;
#pragma unroll
      for (int k0 = 0; k0 < kKeys; k0 += 16) {
        uint32_t af[4];
        ldmatrix_x4(af, pa + k0);
        if constexpr (kTiles % 2 == 0) {
          // V's fragments of two n-tiles by one transposing ldmatrix: lane l
          // addresses key k0 + l % 8 (+ 8 for matrices 1 and 3) of n-tile n
          // (+ 1 for matrices 2 and 3).
          const uint16_t* vb =
              v_s + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLd + col0 + (lane >> 4) * 8;
#pragma unroll
          for (int n = 0; n < kTiles; n += 2) {
            uint32_t bf[4];
            ldmatrix_x4_trans(bf, vb + n * 8);
            mma_bf16(acc[n], af[0], af[1], af[2], af[3], bf[0], bf[1]);
            mma_bf16(acc[n + 1], af[0], af[1], af[2], af[3], bf[2], bf[3]);
          }
        } else {
          const uint16_t* v0 = v_s + (k0 + 2 * tg) * kLd;
#pragma unroll
          for (int n = 0; n < kTiles; ++n) {
            const int c = col0 + n * 8 + g;
            const uint32_t b0 =
                static_cast<uint32_t>(v0[c]) | (static_cast<uint32_t>(v0[kLd + c]) << 16);
            const uint32_t b1 = static_cast<uint32_t>(v0[8 * kLd + c]) |
                                (static_cast<uint32_t>(v0[9 * kLd + c]) << 16);
            mma_bf16(acc[n], af[0], af[1], af[2], af[3], b0, b1);
          }
        }
      }
    }
  }
  cp_async_wait_all();
  __syncthreads();
  stamp(4);
  if (a.trigger_late && key_begin >= key_end) pdl_trigger();  // no key step (the helper)

  const int hg = h0 + g, hg8 = h0 + g + 8;
  const bool vg = g < nrows, vg8 = g + 8 < nrows;
  if (parts == 1) {  // one split with keys: nothing to merge
    const float l0 = l_s[g], l1 = l_s[g + 8];
    const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
    for (int n = 0; n < kTiles; ++n) {
      const int c = col0 + n * 8 + 2 * tg;
      if (vg)
        *reinterpret_cast<__nv_bfloat162*>(a.out + t * a.out_row + static_cast<int64_t>(hg) * DV +
                                           c) =
            __floats2bfloat162_rn(acc[n][0] * i0, acc[n][1] * i0);
      if (vg8)
        *reinterpret_cast<__nv_bfloat162*>(a.out + t * a.out_row + static_cast<int64_t>(hg8) * DV +
                                           c) =
            __floats2bfloat162_rn(acc[n][2] * i1, acc[n][3] * i1);
    }
    return;
  }
  const int64_t base = (static_cast<int64_t>(split) * a.T + t) * a.H;
  if (is_helper) {
    // One key: score s = q . key * scale, so m = s, P = exp(0) = 1, l = 1, and
    // the partial output is the key's value columns for every head.
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int r = 2 * warp + rr;
      float dot = 0.0f;
      for (int k = 2 * lane; k < D; k += 64) {
        const float2 qv =
            __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(q_s + r * kLd + k));
        const float2 kv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(fresh_s + k));
        dot = fmaf(qv.x, kv.x, dot);
        dot = fmaf(qv.y, kv.y, dot);
      }
      dot = warp_sum(dot);
      if (lane == 0) {
        m_s[r] = dot * a.scale;
        l_s[r] = 1.0f;
      }
    }
    for (int idx = tid; idx < nrows * (DV / 4); idx += kThreads) {
      const int r = idx / (DV / 4), c = (idx % (DV / 4)) * 4;
      const float2 v01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(fresh_s + c));
      const float2 v23 =
          __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(fresh_s + c + 2));
      *reinterpret_cast<float4*>(a.ws_acc + (base + h0 + r) * DV + c) =
          make_float4(v01.x, v01.y, v23.x, v23.y);
    }
    __syncthreads();  // m_s, l_s
  } else {
#pragma unroll
    for (int n = 0; n < kTiles; ++n) {
      const int c = col0 + n * 8 + 2 * tg;
      if (vg)
        *reinterpret_cast<float2*>(a.ws_acc + (base + hg) * DV + c) =
            make_float2(acc[n][0], acc[n][1]);
      if (vg8)
        *reinterpret_cast<float2*>(a.ws_acc + (base + hg8) * DV + c) =
            make_float2(acc[n][2], acc[n][3]);
    }
  }
  if (tid < nrows) {
    a.ws_ml[2 * (base + h0 + tid)] = m_s[tid];
    a.ws_ml[2 * (base + h0 + tid) + 1] = l_s[tid];
  }
  if (a.defer_merge) {  // the next kernel merges (after its pdl_wait: no fence, no counter)
    stamp(5);
    return;
  }
  if (a.light_fence) {  // the barrier orders the block's stores before thread 0's fence
    __syncthreads();
    if (tid == 0) asm volatile("fence.acq_rel.gpu;" ::: "memory");
  } else {
    __threadfence();
    __syncthreads();
  }
  int32_t* counter = a.counters + static_cast<int64_t>(t) * gridDim.z + blockIdx.z;
  float* w_s = s_s;                             // [splits][16] merge weights
  float* pm_s = reinterpret_cast<float*>(k_s);  // [splits][16] partial maxima
  float* pl_s = pm_s + kMaxSplits * kHeads;     // [splits][16] partial sums
  const int outs = nrows * (DV / 4);            // float4 outputs of this block's heads
  if (a.spread_merge) {
    // Every split block waits for the token's other active ones (they are all
    // resident: the launcher checked that the grid fits, and each passed
    // pdl_trigger), then merges its own slice of the outputs. The counter
    // counts arrivals (active) and then departures; the last to leave zeroes
    // it for the next launch.
    // The counter holds a generation (bits 16..30) and the arrivals of the
    // current one (bits 0..15): the last to arrive starts the next generation
    // with no arrivals, which releases the others (no departure count).
    stamp(5);
    if (tid == 0) {
      int old;
      asm volatile("atom.add.acq_rel.gpu.global.s32 %0, [%1], 1;"
                   : "=r"(old)
                   : "l"(counter)
                   : "memory");
      if ((old & 0xffff) == parts - 1) {
        const int next = (((old >> 16) + 1) & 0x7fff) << 16;
        asm volatile("st.release.gpu.global.s32 [%0], %1;" ::"l"(counter), "r"(next) : "memory");
      } else {
        while ((ld_acquire(counter) >> 16) == (old >> 16)) __nanosleep(32);
      }
    }
    __syncthreads();
    stamp(6);
    merge_outputs<DV>(a, t, h0, parts, split * outs / parts, (split + 1) * outs / parts, pm_s, pl_s,
                      w_s, stamping ? g_stamps[split] : nullptr);
    stamp(7);
    return;
  }
  // Otherwise the last of the token's split blocks to finish merges them all
  // and resets the counter.
  __shared__ int last;
  if (tid == 0) last = (atomicAdd(counter, 1) & 0xffff) == active - 1;
  __syncthreads();
  if (!last) return;
  if (tid == 0) *counter = 0;
  __threadfence();
  merge_outputs<DV>(a, t, h0, active, 0, outs, pm_s, pl_s, w_s);
}

// A spare split block takes the token's own key (measured +1.8 % on the 9B at
// batch 1, docs/performance-history.md, day 3 run 5); R1SERVE_CUDA_ATTN_FRESH_HELPER=0
// leaves it to the split holding that key (side-by-side runs).
EnvSwitch g_fresh_helper{"R1SERVE_CUDA_ATTN_FRESH_HELPER", 1};
}  // namespace
bool attn_fresh_helper_enabled() {
  return g_fresh_helper.on();
}
namespace {

// R1SERVE_CUDA_ATTN_SPREAD_MERGE=0: the last split block merges alone (side-by-side runs).
EnvSwitch g_spread_merge{"R1SERVE_CUDA_ATTN_SPREAD_MERGE", 1};
// R1SERVE_CUDA_MLA_DEFER_MERGE=0: the attention merges its splits itself even
// where the W_UV product could (side-by-side runs).
EnvSwitch g_defer_merge{"R1SERVE_CUDA_MLA_DEFER_MERGE", 1};
bool spread_merge_enabled() {
  return g_spread_merge.on();
}

template <int DV, int D, bool SEPV>
void launch_widths(const MlaArgs& a, cudaStream_t s) {
  constexpr size_t smem = Smem<DV, D, SEPV>::kBytes;
  static bool configured = false;
  if (!configured) {
    R1_CUDA_OK(cudaFuncSetAttribute(mla_mma_kernel<DV, D, SEPV>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
    configured = true;
  }
  const dim3 grid(static_cast<unsigned>(a.T), static_cast<unsigned>(a.splits),
                  static_cast<unsigned>((a.H + a.group_rows - 1) / a.group_rows));
  // The split blocks of a token may wait for each other only when the whole
  // grid is resident at once (blocks per SM at this kernel's shared memory x
  // SMs, found on the first launch like the attribute above).
  static int capacity = 0;
  if (capacity == 0) {
    int dev = 0, sms = 0, per_sm = 0;
    R1_CUDA_OK(cudaGetDevice(&dev));
    R1_CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    R1_CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, mla_mma_kernel<DV, D, SEPV>,
                                                             kThreads, smem));
    capacity = std::max(1, sms * per_sm);
  }
  MlaArgs b = a;
  static const bool stamps = [] {
    const char* e = std::getenv("R1SERVE_CUDA_ATTN_STAMPS");
    return e != nullptr && e[0] == '1';
  }();
  b.stamps = stamps ? 1 : 0;
  static const bool light_fence = [] {
    const char* e = std::getenv("R1SERVE_CUDA_ATTN_LIGHT_FENCE");
    return e == nullptr || e[0] != '0';
  }();
  b.light_fence = light_fence ? 1 : 0;
  // With the merge deferred, the next kernel launches once the first keys are
  // in, not right after the wait: -9 to -13 us a batch-1 step (docs/performance-history.md,
  // 2026-12-07 session 6 run 9); R1SERVE_CUDA_ATTN_TRIGGER_LATE=0 turns it off.
  static EnvSwitch late{"R1SERVE_CUDA_ATTN_TRIGGER_LATE", 1};
  b.trigger_late = late.on() && a.defer_merge ? 1 : 0;
  b.spread_merge = a.splits > 1 && !a.defer_merge && spread_merge_enabled() &&
                   static_cast<int64_t>(grid.x) * grid.y * grid.z <= capacity;
  // The helper's partial state needs a merge that counts `parts` (not the last block's).
  b.fresh_helper = (b.spread_merge || a.defer_merge) && attn_fresh_helper_enabled() ? 1 : 0;
  // The first step's older rows by bulk copies, MLA only (its rows and cache are
  // 16-byte aligned): -11 to -14 us a batch-1 step on an H100 (docs/performance.md,
  // session 12 run 1); R1SERVE_CUDA_ATTN_ROWS_TMA=0 turns it off.
  static EnvSwitch rows_tma{"R1SERVE_CUDA_ATTN_ROWS_TMA", 1};
  b.rows_tma = !SEPV && rows_tma.on() && reinterpret_cast<uintptr_t>(a.cache) % 16 == 0 &&
                       a.k_row % 8 == 0 && a.kv_off % 8 == 0
                   ? 1
                   : 0;
  pdl_launch(mla_mma_kernel<DV, D, SEPV>, grid, kThreads, smem, s, b);
  R1_CUDA_LAUNCHED();
}

void check_common(const MlaArgs& a) {
  R1_CUDA_REQUIRE(a.q_row % 8 == 0 && a.k_row % 8 == 0 && a.out_row % 2 == 0,
                  "attention: rows must be 16-byte aligned");
  R1_CUDA_REQUIRE(a.splits >= 1 && a.splits <= kMaxSplits && a.keys_per_split % kKeys == 0,
                  "attention: bad split");
  R1_CUDA_REQUIRE(a.splits == 1 || (a.ws_acc && a.ws_ml && a.counters),
                  "attention: split without workspace");
}

}  // namespace

std::string mla_attention_stamps() {
  const char* e = std::getenv("R1SERVE_CUDA_ATTN_STAMPS");
  if (e == nullptr || e[0] != '1') return "";
  unsigned long long st[kMaxSplits][kStamps];
  R1_CUDA_OK(cudaDeviceSynchronize());
  R1_CUDA_OK(cudaMemcpyFromSymbol(st, g_stamps, sizeof(st)));
  long long clk[kMaxSplits][2];
  R1_CUDA_OK(cudaMemcpyFromSymbol(clk, g_stamp_clocks, sizeof(clk)));
  unsigned long long t0 = ~0ull;
  for (auto& row : st)
    if (row[0] != 0) t0 = std::min(t0, row[0]);
  std::string out =
      "attention stamps (ns from the first block's start; split: start, pre-wait, waited, keys "
      "in, keys done, partials out, all arrived, end, merge's maxima in, merge's weights made, "
      "slots found, older rows requested, older rows in (thread 0's, after q requested), "
      "prologue done, first scores made, first softmax made; then the SM clock from waited to "
      "keys done)\n";
  for (int z = 0; z < kMaxSplits; ++z) {
    if (st[z][0] == 0) continue;
    out += "  split " + std::to_string(z) + ":";
    for (int i = 0; i < kStamps; ++i)
      out += " " + (st[z][i] == 0 ? std::string("-") : std::to_string(st[z][i] - t0));
    if (st[z][2] != 0 && st[z][4] > st[z][2])
      out += " | " +
             std::to_string((clk[z][1] - clk[z][0]) * 1000 /
                            static_cast<long long>(st[z][4] - st[z][2])) +
             " MHz";
    out += "\n";
  }
  return out;
}

void set_attn_fresh_helper(bool on) {
  g_fresh_helper.set(on ? 1 : 0);
}

void set_attn_spread_merge(bool on) {
  g_spread_merge.set(on ? 1 : 0);
}

bool mla_defer_merge_enabled() {
  return g_defer_merge.on();
}
void set_mla_defer_merge(bool on) {
  g_defer_merge.set(on ? 1 : 0);
}

bool mla_mma_supported(int64_t kv_lora_rank, int64_t rope_dim) {
  return (kv_lora_rank == 512 && rope_dim == 64) || (kv_lora_rank == 128 && rope_dim == 32) ||
         (kv_lora_rank == 64 && rope_dim == 16);
}

bool gqa_mma_supported(int64_t group, int64_t head_dim) {
  return group >= 1 && group <= kHeads && (head_dim == 128 || head_dim == 64);
}

int mla_keys_per_step() {
  return kKeys;
}
int mla_max_splits() {
  return kMaxSplits;
}

void launch_mla_attention(const MlaArgs& a, int64_t kv_lora_rank, int64_t rope_dim,
                          cudaStream_t s) {
  R1_CUDA_REQUIRE(mla_mma_supported(kv_lora_rank, rope_dim), "mla_attention: unsupported widths");
  R1_CUDA_REQUIRE(a.group_rows == kHeads && a.kv_off == 0 && a.k_row == kv_lora_rank + rope_dim,
                  "mla_attention: one latent head");
  check_common(a);
  if (a.T == 0) return;
  if (kv_lora_rank == 512)
    launch_widths<512, 576, false>(a, s);
  else if (kv_lora_rank == 128)
    launch_widths<128, 160, false>(a, s);
  else
    launch_widths<64, 80, false>(a, s);
}

void launch_gqa_attention(const MlaArgs& a, int64_t head_dim, cudaStream_t s) {
  R1_CUDA_REQUIRE(gqa_mma_supported(a.group_rows, head_dim) && a.kv_off == head_dim && a.vcache,
                  "gqa_attention: shape");
  R1_CUDA_REQUIRE(a.v_row % 8 == 0, "gqa_attention: value rows must be 16-byte aligned");
  check_common(a);
  if (a.T == 0) return;
  if (head_dim == 128)
    launch_widths<128, 128, true>(a, s);
  else
    launch_widths<64, 64, true>(a, s);
}

}  // namespace r1::backend::cuda
