// CpuBackend: memory, elementwise ops, normalization, matrix products and
// rotary embeddings. Attention and MoE are in attention.cc and moe.cc.
#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

#include "core/check.h"

namespace r1::backend {

int64_t KvCacheSpec::bytes_per_token() const {
  int64_t per_layer = mla ? kv_lora_rank + rope_dim : 2 * num_kv_heads * head_dim;
  return per_layer * num_layers * static_cast<int64_t>(dtype_size(dtype));
}

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_unique<cpu::CpuBackend>(threads);
}

namespace cpu {

const Kernels& best_kernels() {
  const char* force = std::getenv("R1SERVE_CPU_ISA");
  std::string_view f = force ? force : "";
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (f.empty() || f == "avx512") {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
      return kernels_avx512();
  }
  if (f.empty() || f == "avx512" || f == "avx2") {
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kernels_avx2();
  }
#endif
  return kernels_generic();
}

WeightType weight_type(const Tensor& w) {
  switch (w.dtype()) {
    case DType::kF32:
      return WeightType::kF32;
    case DType::kBF16:
      return WeightType::kBF16;
    case DType::kI8:
      return WeightType::kI8;
    default:
      R1_CHECK(false, "CPU weights must be F32 or BF16, got {}", w.describe());
  }
  return WeightType::kF32;
}

OpTimer::~OpTimer() {
  if (active_) {
    auto& st = be_.profile_[name_];
    st.calls += 1;
    st.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    st.bytes += bytes_;
  }
  if (entered_) --be_.op_depth_;
}

std::map<std::string, CpuBackend::OpStat> CpuBackend::take_profile() {
  std::map<std::string, OpStat> out;
  out.swap(profile_);
  return out;
}

CpuBackend::CpuBackend(int threads) : pool_(threads), k_(best_kernels()) {}

std::string CpuBackend::name() const {
  return fmt::format("cpu ({}, {} threads)", k_.isa, pool_.num_threads());
}

Tensor CpuBackend::alloc(const Shape& shape, DType dtype) {
  return Tensor::empty(shape, dtype);
}

Tensor CpuBackend::upload(const Tensor& host, DType dtype) {
  if (host.dtype() == dtype) return host;  // zero-copy: the mapped file stays the storage
  Tensor f = host.dtype() == DType::kF32 ? host : to_f32(host);
  return convert_f32(f, dtype);
}

Tensor CpuBackend::upload_stacked(const std::vector<Tensor>& parts, DType dtype) {
  R1_CHECK(!parts.empty(), "upload_stacked of nothing");
  std::vector<int64_t> dims = parts[0].shape().to_vector();
  dims.insert(dims.begin(), static_cast<int64_t>(parts.size()));
  Tensor out = Tensor::empty(Shape(dims), dtype);
  char* dst = static_cast<char*>(out.raw());
  for (const Tensor& p : parts) {
    R1_CHECK(p.shape() == parts[0].shape(), "stacked parts differ: {} vs {}", p.describe(),
             parts[0].describe());
    Tensor c = upload(p, dtype);
    std::memcpy(dst, c.raw(), c.nbytes());
    dst += c.nbytes();
  }
  return out;
}

void CpuBackend::to_host(const Tensor& src, void* dst) {
  std::memcpy(dst, src.raw(), src.nbytes());
}

KvCache CpuBackend::alloc_kv_cache(const KvCacheSpec& spec, int64_t num_blocks,
                                   int64_t block_size) {
  R1_CHECK(spec.dtype == DType::kF32, "the CPU KV cache is F32");
  KvCache c;
  c.spec = spec;
  c.num_blocks = num_blocks;
  c.block_size = block_size;
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    if (spec.mla) {
      c.latent.push_back(
          Tensor::zeros({num_blocks, block_size, spec.kv_lora_rank + spec.rope_dim}, spec.dtype));
    } else {
      int64_t w = spec.num_kv_heads * spec.head_dim;
      c.k.push_back(Tensor::zeros({num_blocks, block_size, w}, spec.dtype));
      c.v.push_back(Tensor::zeros({num_blocks, block_size, w}, spec.dtype));
    }
  }
  return c;
}

void CpuBackend::embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) {
  OpTimer timer(*this, [] { return std::string("embedding"); });
  const int64_t h = table.dim(1);
  R1_CHECK(out.dim(0) == static_cast<int64_t>(ids.size()) && out.dim(1) == h, "embedding out {}",
           out.describe());
  float* o = out.data<float>();
  for (size_t t = 0; t < ids.size(); ++t) {
    R1_CHECK(ids[t] >= 0 && ids[t] < table.dim(0), "token id {} outside vocabulary {}", ids[t],
             table.dim(0));
    const int64_t row = ids[t];
    if (table.dtype() == DType::kF32) {
      std::memcpy(o + t * h, table.data<float>() + row * h, static_cast<size_t>(h) * 4);
    } else if (table.dtype() == DType::kBF16) {
      k_.bf16_to_f32(table.data<uint16_t>() + row * h, o + t * h, h);
    } else {
      R1_CHECK(false, "embedding table dtype {}", table.describe());
    }
  }
}

void CpuBackend::rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) {
  OpTimer timer(*this, [] { return std::string("rms_norm"); });
  const int64_t rows = x.dim(0), n = w.numel(), ldx = x.row_size(), ldo = out.row_size();
  R1_CHECK(n <= ldx && n <= ldo && w.dtype() == DType::kF32 && out.dim(0) == rows,
           "rms_norm x {} weight {} out {}", x.describe(), w.describe(), out.describe());
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  const float* wp = w.data<float>();
  pool_.parallel_for(rows, std::max<int64_t>(1, 16384 / n), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      float ms = k_.sum_squares(xp + r * ldx, n) / static_cast<float>(n);
      float inv = 1.0f / std::sqrt(ms + eps);
      k_.scale_mul(xp + r * ldx, inv, wp, op + r * ldo, n);
    }
  });
}

void CpuBackend::gather_rows(const Tensor& src, const std::vector<int32_t>& rows, Tensor& out) {
  OpTimer timer(*this, [] { return std::string("gather_rows"); });
  const int64_t h = src.row_size();
  R1_CHECK(out.dim(0) == static_cast<int64_t>(rows.size()) && out.row_size() == h,
           "gather_rows out {}", out.describe());
  for (size_t i = 0; i < rows.size(); ++i) {
    R1_CHECK(rows[i] >= 0 && rows[i] < src.dim(0), "gather_rows row {} of {}", rows[i], src.dim(0));
    std::memcpy(out.data<float>() + static_cast<int64_t>(i) * h, src.data<float>() + rows[i] * h,
                static_cast<size_t>(h) * 4);
  }
}

void CpuBackend::add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                              Tensor& out) {
  OpTimer timer(*this, [] { return std::string("add_rms_norm"); });
  add(residual, x, residual);
  rms_norm(residual, w, eps, out);
}

void CpuBackend::add(const Tensor& a, const Tensor& b, Tensor& out) {
  OpTimer timer(*this, [] { return std::string("add"); });
  R1_CHECK(a.numel() == b.numel() && a.numel() == out.numel(), "add {} {} {}", a.describe(),
           b.describe(), out.describe());
  const float* ap = a.data<float>();
  const float* bp = b.data<float>();
  float* op = out.data<float>();
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) op[i] = ap[i] + bp[i];
}

void CpuBackend::silu_mul(const Tensor& gate_up, Tensor& out) {
  OpTimer timer(*this, [] { return std::string("silu_mul"); });
  const int64_t rows = gate_up.dim(0), inter = gate_up.dim(1) / 2;
  R1_CHECK(out.dim(0) == rows && out.dim(1) == inter, "silu_mul out {}", out.describe());
  const float* g = gate_up.data<float>();
  float* o = out.data<float>();
  pool_.parallel_for(rows, std::max<int64_t>(1, 8192 / inter), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      k_.silu_mul(g + r * 2 * inter, g + r * 2 * inter + inter, o + r * inter, inter);
  });
}

void CpuBackend::gemm(const float* x, int64_t ldx, int64_t M, const Tensor& w,
                      int64_t w_offset_rows, int64_t N, const float* bias, float* out, int64_t ldo,
                      const Tensor& scale) {
  gemm_batch({GemmJob{x, ldx, M, &w, w_offset_rows, N, bias, out, ldo,
                      scale.defined() ? &scale : nullptr}});
}

void CpuBackend::gemm_batch(const std::vector<GemmJob>& jobs) {
  // One task = one block of weight rows of one job: small enough to stay in L2
  // while all of x streams past it, and enough blocks to keep every thread busy.
  struct Task {
    const GemmJob* job;
    int64_t n0, n1;
  };
  int64_t total_rows = 0;
  for (const GemmJob& j : jobs) total_rows += j.N;
  const int64_t per_thread = (total_rows + pool_.num_threads() * 4 - 1) / (pool_.num_threads() * 4);
  std::vector<Task> tasks;
  for (const GemmJob& j : jobs) {
    const Tensor& w = *j.w;
    R1_CHECK((weight_type(w) == WeightType::kI8) == (j.scale != nullptr),
             "int8 weights need row scales: {}", w.describe());
    const int64_t row_bytes = w.dim(-1) * static_cast<int64_t>(dtype_size(w.dtype()));
    int64_t block = std::max<int64_t>(8, (128 * 1024 / row_bytes) / 8 * 8);
    block = std::max<int64_t>(8, std::min(block, (per_thread + 7) / 8 * 8));
    for (int64_t n0 = 0; n0 < j.N; n0 += block)
      tasks.push_back({&j, n0, std::min(j.N, n0 + block)});
  }
  pool_.parallel_for(static_cast<int64_t>(tasks.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const Task& task = tasks[static_cast<size_t>(t)];
      const GemmJob& j = *task.job;
      const Tensor& w = *j.w;
      const int64_t K = w.dim(-1), row0 = j.w_offset_rows + task.n0;
      const size_t wbytes = dtype_size(w.dtype());
      const char* wp = static_cast<const char*>(w.raw()) + static_cast<size_t>(row0 * K) * wbytes;
      k_.gemm(j.x, j.ldx, j.M, wp, weight_type(w), K, task.n1 - task.n0, K,
              j.scale ? j.scale->data<float>() + row0 : nullptr,
              j.bias ? j.bias + task.n0 : nullptr, j.out + task.n0, j.ldo);
    }
  });
}

void CpuBackend::linear(const Tensor& x, const Linear& w, Tensor& out) {
  const int64_t M = x.dim(0), K = x.row_size(), N = w.out_features();
  OpTimer timer(
      *this, [&] { return fmt::format("linear {}x{} {}", N, K, dtype_name(w.weight.dtype())); },
      static_cast<double>(w.weight.nbytes() + (w.scale.defined() ? w.scale.nbytes() : 0)));
  R1_CHECK(w.in_features() == K, "linear: x {} vs weight {}", x.describe(), w.weight.describe());
  R1_CHECK(out.dim(0) == M && out.row_size() == N, "linear out {} for [{}, {}]", out.describe(), M,
           N);
  gemm(x.data<float>(), K, M, w.weight, 0, N, w.bias.defined() ? w.bias.data<float>() : nullptr,
       out.data<float>(), N, w.scale);
}

void CpuBackend::head_linear(const Tensor& x, int64_t x_head_stride, const Tensor& w, Tensor& out,
                             int64_t out_head_stride) {
  const int64_t T = x.dim(0), H = w.dim(0), N = w.dim(1), K = w.dim(2);
  OpTimer timer(
      *this, [&] { return fmt::format("head_linear {}x{}x{}", H, N, K); },
      static_cast<double>(w.nbytes()));
  R1_CHECK(x.row_size() == H * x_head_stride && K <= x_head_stride, "head_linear x {} w {}",
           x.describe(), w.describe());
  R1_CHECK(out.row_size() == H * out_head_stride && N <= out_head_stride, "head_linear out {}",
           out.describe());
  std::vector<GemmJob> jobs;
  for (int64_t h = 0; h < H; ++h)
    jobs.push_back({x.data<float>() + h * x_head_stride, x.row_size(), T, &w, h * N, N, nullptr,
                    out.data<float>() + h * out_head_stride, out.row_size(), nullptr});
  gemm_batch(jobs);
}

void CpuBackend::copy_heads(const Tensor& src, int64_t src_stride, int64_t src_offset, Tensor& dst,
                            int64_t dst_stride, int64_t dst_offset, int64_t width,
                            int64_t num_heads) {
  OpTimer timer(*this, [] { return std::string("copy_heads"); });
  const int64_t T = src.dim(0);
  const float* s = src.data<float>();
  float* d = dst.data<float>();
  const int64_t sr = src.row_size(), dr = dst.row_size();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < num_heads; ++h)
      std::memcpy(d + t * dr + h * dst_stride + dst_offset,
                  s + t * sr + h * src_stride + src_offset, static_cast<size_t>(width) * 4);
}

void CpuBackend::rope(Tensor& x, const std::vector<int32_t>& positions, const RopeParams& rope,
                      int64_t num_heads, int64_t head_stride, int64_t offset) {
  OpTimer timer(*this, [] { return std::string("rope"); });
  const int64_t T = x.dim(0), row = x.row_size(), half = static_cast<int64_t>(rope.inv_freq.size());
  R1_CHECK(static_cast<int64_t>(positions.size()) == T, "rope: {} positions for {} rows",
           positions.size(), T);
  float* xp = x.data<float>();
  pool_.parallel_for(T, 4, [&](int64_t b, int64_t e) {
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t t = b; t < e; ++t) {
      const float pos = static_cast<float>(positions[static_cast<size_t>(t)]);
      for (int64_t i = 0; i < half; ++i) {
        float angle = pos * rope.inv_freq[static_cast<size_t>(i)];
        cs[static_cast<size_t>(i)] = std::cos(angle) * rope.attention_factor;
        sn[static_cast<size_t>(i)] = std::sin(angle) * rope.attention_factor;
      }
      for (int64_t h = 0; h < num_heads; ++h) {
        float* v = xp + t * row + h * head_stride + offset;
        for (int64_t i = 0; i < half; ++i) {
          const float c = cs[static_cast<size_t>(i)], s = sn[static_cast<size_t>(i)];
          float* a = rope.interleaved ? v + 2 * i : v + i;
          float* bb = rope.interleaved ? v + 2 * i + 1 : v + i + half;
          const float x0 = *a, x1 = *bb;
          *a = x0 * c - x1 * s;
          *bb = x1 * c + x0 * s;
        }
      }
    }
  });
}

void CpuBackend::cache_write(const Tensor& src, const BatchInfo& batch, Tensor& cache) {
  OpTimer timer(*this, [] { return std::string("cache_write"); });
  const int64_t width = src.row_size(), slots = cache.dim(0) * cache.dim(1);
  R1_CHECK(cache.row_size() == cache.dim(1) * width, "cache_write: src {} cache {}", src.describe(),
           cache.describe());
  const float* s = src.data<float>();
  float* c = cache.data<float>();
  for (int64_t t = 0; t < src.dim(0); ++t) {
    const int64_t slot = batch.slot_mapping[static_cast<size_t>(t)];
    R1_CHECK(slot >= 0 && slot < slots, "slot {} outside cache of {} slots", slot, slots);
    std::memcpy(c + slot * width, s + t * width, static_cast<size_t>(width) * 4);
  }
}

}  // namespace cpu
}  // namespace r1::backend
