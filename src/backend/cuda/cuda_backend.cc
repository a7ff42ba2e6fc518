// CudaBackend runtime: device selection, the caching allocator, uploads and
// downloads, the per-step device copies of host vectors and BatchInfo, and
// the dispatch of every op to its kernel launcher (GEMMs are in gemm.cc,
// attention in attention_ops.cc, step recording in step_graphs.cc, the test and
// benchmark hooks in switches.cc).
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>

#include <fmt/format.h>

#include "backend/cuda/cuda_backend_impl.h"
#include "core/check.h"
#include "core/status.h"

namespace r1::backend {

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::unique_ptr<Backend> make_cuda_backend(int device, double memory_fraction,
                                           bool f32_activations) {
  return std::make_unique<cuda::CudaBackend>(device, memory_fraction, f32_activations);
}

namespace cuda {

void cuda_fail(const char* file, int line, const char* what, const char* detail) {
  r1::detail::check_failed(file, line, what, fmt::format("CUDA: {}", detail));
}

bool is_bf16(const Tensor& t) {
  return t.dtype() == DType::kBF16;
}

namespace {

size_t round_size(size_t bytes) {
  if (bytes <= (size_t{1} << 20)) return std::max<size_t>(512, (bytes + 511) / 512 * 512);
  return (bytes + (size_t{2} << 20) - 1) / (size_t{2} << 20) * (size_t{2} << 20);
}

bool is_float(DType d) {
  return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16;
}

std::string mib(size_t b) {
  return fmt::format("{:.1f} GiB", static_cast<double>(b) / (1 << 30));
}

}  // namespace

DeviceAllocator::~DeviceAllocator() {
  release_cached();
}

void DeviceAllocator::release_cached() {
  cudaSetDevice(device_);
  for (auto& [size, list] : free_) {
    for (void* p : list) {
      cudaFree(p);
      reserved_ -= size;
    }
  }
  free_.clear();
}

void* DeviceAllocator::get(size_t bytes) {
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = free_.find(size);
  if (it != free_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    return p;
  }
  if (reserved_ + size > limit_) release_cached();
  void* p = nullptr;
  cudaError_t err = reserved_ + size > limit_ ? cudaErrorMemoryAllocation : cudaMalloc(&p, size);
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw Error(make_error(
        ErrorCode::kResourceExhausted,
        "out of GPU memory: needed {} more ({} bytes); this backend holds {} of its limit {} "
        "(--gpu-memory-utilization); the device has {} free of {}",
        mib(size), size, mib(reserved_), mib(limit_), mib(free_b), mib(total_b)));
  }
  reserved_ += size;
  return p;
}

void DeviceAllocator::put(void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  free_[round_size(bytes)].push_back(p);
}

CudaBackend::CudaBackend(int device, double memory_fraction, bool f32_activations)
    : device_(device), f32_act_(f32_activations) {
  const int n = cuda_device_count();
  R1_CHECK(n > 0, "--device cuda: no CUDA device is visible (cudaGetDeviceCount found none)");
  R1_CHECK(device >= 0 && device < n, "CUDA device {} of {}", device, n);
  R1_CHECK(memory_fraction > 0.0 && memory_fraction <= 1.0, "GPU memory fraction {} outside (0, 1]",
           memory_fraction);
  R1_CUDA_OK(cudaSetDevice(device));
  cudaDeviceProp prop{};
  R1_CUDA_OK(cudaGetDeviceProperties(&prop, device));
  sm_count_ = prop.multiProcessorCount;
  alloc_ = std::make_shared<DeviceAllocator>(
      device, static_cast<size_t>(memory_fraction * static_cast<double>(prop.totalGlobalMem)));
  R1_CUDA_OK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  profiling_ = std::getenv("R1SERVE_CUDA_PROFILE") != nullptr;
  R1_CHECK(cublasCreate(&cublas_) == CUBLAS_STATUS_SUCCESS, "cublasCreate failed");
  cublasSetStream(cublas_, stream_);
  cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH);
  // A fixed cuBLAS workspace, so GEMMs inside a recorded step never allocate.
  constexpr size_t kCublasWorkspace = size_t{32} << 20;
  R1_CUDA_OK(cudaMalloc(&cublas_ws_, kCublasWorkspace));
  R1_CHECK(cublasSetWorkspace(cublas_, cublas_ws_, kCublasWorkspace) == CUBLAS_STATUS_SUCCESS,
           "cublasSetWorkspace failed");
  const char* g = std::getenv("R1SERVE_CUDA_GRAPHS");
  graphs_ = !(g != nullptr && std::string(g) == "0");
}

OpTimer::OpTimer(CudaBackend& be, const char* name)
    : be_(be.profiling_ ? &be : nullptr), name_(name) {
  if (!be_) return;
  cudaEventCreate(&e0_);
  cudaEventCreate(&e1_);
  cudaEventRecord(e0_, be.stream_);
}

OpTimer::~OpTimer() {
  if (!be_) return;
  cudaEventRecord(e1_, be_->stream_);
  be_->timings_.push_back({name_, e0_, e1_});
}

void CudaBackend::set_profiling(bool on) {
  if (on && !profiling_) launch_hold(50'000'000, stream_);
  profiling_ = on;
}

std::string CudaBackend::profile_report() {
  synchronize();
  std::map<std::string, std::pair<double, int>> sum;
  double total = 0;
  for (auto& t : timings_) {
    float ms = 0;
    cudaEventElapsedTime(&ms, t.e0, t.e1);
    sum[t.name].first += ms;
    sum[t.name].second += 1;
    if (std::strchr(t.name, '/') == nullptr) total += ms;  // "op/phase" timers nest inside their op
    cudaEventDestroy(t.e0);
    cudaEventDestroy(t.e1);
  }
  timings_.clear();
  std::string r = fmt::format("op times (GPU events, sum {:.3f} ms):\n", total);
  for (auto& [name, v] : sum)
    r += fmt::format("  {:<16} {:8.3f} ms  {:5d} calls\n", name, v.first, v.second);
  return r;
}

CudaBackend::~CudaBackend() {
  cudaStreamSynchronize(stream_);
  destroy_recordings();
  if (pinned_) cudaFreeHost(pinned_);
  if (download_) cudaFreeHost(download_);
  retired_.clear();
  for (auto& w : ws_) w = Tensor();
  counters_ = Tensor();
  ints_.clear();
  floats_.clear();
  batches_.clear();
  for (Side& sd : sides_) {
    if (sd.stream) cudaStreamSynchronize(sd.stream);
    if (sd.cublas) cublasDestroy(sd.cublas);
    if (sd.ws) cudaFree(sd.ws);
    if (sd.done) cudaEventDestroy(sd.done);
    if (sd.stream) cudaStreamDestroy(sd.stream);
  }
  if (fork_) cudaEventDestroy(fork_);
  if (cublas_) cublasDestroy(cublas_);
  if (cublas_ws_) cudaFree(cublas_ws_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaBackend::fork_sides() {
  if (fork_ == nullptr) {
    R1_CUDA_OK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
    for (Side& sd : sides_) {
      R1_CUDA_OK(cudaStreamCreateWithFlags(&sd.stream, cudaStreamNonBlocking));
      R1_CUDA_OK(cudaEventCreateWithFlags(&sd.done, cudaEventDisableTiming));
      R1_CHECK(cublasCreate(&sd.cublas) == CUBLAS_STATUS_SUCCESS, "cublasCreate failed");
      cublasSetStream(sd.cublas, sd.stream);
      cublasSetMathMode(sd.cublas, CUBLAS_DEFAULT_MATH);
      constexpr size_t kSideWorkspace = size_t{8} << 20;
      R1_CUDA_OK(cudaMalloc(&sd.ws, kSideWorkspace));
      R1_CHECK(cublasSetWorkspace(sd.cublas, sd.ws, kSideWorkspace) == CUBLAS_STATUS_SUCCESS,
               "cublasSetWorkspace failed");
    }
  }
  R1_CUDA_OK(cudaEventRecord(fork_, stream_));
  for (Side& sd : sides_) R1_CUDA_OK(cudaStreamWaitEvent(sd.stream, fork_, 0));
}

void CudaBackend::join_sides() {
  for (Side& sd : sides_) {
    R1_CUDA_OK(cudaEventRecord(sd.done, sd.stream));
    R1_CUDA_OK(cudaStreamWaitEvent(stream_, sd.done, 0));
  }
}

std::string CudaBackend::name() const {
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, device_);
  return fmt::format("cuda:{} ({}, {} SMs, {} activations)", device_, prop.name, sm_count_,
                     f32_act_ ? "f32" : "bf16");
}

int64_t CudaBackend::free_bytes() const {
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  const int64_t under_limit =
      static_cast<int64_t>(alloc_->limit()) - static_cast<int64_t>(alloc_->reserved());
  return std::max<int64_t>(0, std::min<int64_t>(under_limit, static_cast<int64_t>(free_b)));
}

Tensor CudaBackend::alloc(const Shape& shape, DType dtype) {
  const size_t bytes = std::max<size_t>(1, static_cast<size_t>(shape.numel()) * dtype_size(dtype));
  void* p = alloc_->get(bytes);
  std::shared_ptr<DeviceAllocator> a = alloc_;
  std::shared_ptr<void> owner(p, [a, bytes](void* q) { a->put(q, bytes); });
  return Tensor::wrap(p, shape, dtype, std::move(owner), Device::kCuda);
}

void CudaBackend::synchronize() {
  flush_route();
  R1_CUDA_OK(cudaStreamSynchronize(stream_));
}

Tensor CudaBackend::upload(const Tensor& host, DType dtype) {
  R1_CHECK(host.device() == Device::kCpu, "upload of a device tensor {}", host.describe());
  // Matrices are stored BF16 on the GPU (cuBLAS and the kernels read BF16);
  // vectors (norm weights, biases) keep the requested dtype.
  DType target = dtype;
  if (is_float(dtype) && host.rank() >= 2) target = DType::kBF16;
  Tensor src = host;
  if (src.dtype() != target) {
    R1_CHECK(is_float(src.dtype()) && is_float(target), "upload {} as {}", host.describe(),
             dtype_name(target));
    Tensor f = src.dtype() == DType::kF32 ? src : to_f32(src);
    src = target == DType::kF32 ? f : convert_f32(f, target);
  }
  Tensor out = alloc(host.shape(), target);
  // On our stream: the buffer may have been freed by a step whose kernels are still queued.
  R1_CUDA_OK(cudaMemcpyAsync(out.raw(), src.raw(), src.nbytes(), cudaMemcpyHostToDevice, stream_));
  R1_CUDA_OK(cudaStreamSynchronize(stream_));
  return out;
}

Tensor CudaBackend::upload_stacked(const std::vector<Tensor>& parts, DType dtype) {
  R1_CHECK(!parts.empty(), "upload_stacked of nothing");
  std::vector<int64_t> dims = parts[0].shape().to_vector();
  dims.insert(dims.begin(), static_cast<int64_t>(parts.size()));
  const DType target = is_float(dtype) ? DType::kBF16 : dtype;
  Tensor out = alloc(Shape(dims), target);
  char* dst = static_cast<char*>(out.raw());
  for (const Tensor& p : parts) {
    R1_CHECK(p.shape() == parts[0].shape(), "stacked parts differ: {} vs {}", p.describe(),
             parts[0].describe());
    Tensor c = p;
    if (c.dtype() != target) {
      Tensor f = c.dtype() == DType::kF32 ? c : to_f32(c);
      c = target == DType::kF32 ? f : convert_f32(f, target);
    }
    R1_CUDA_OK(cudaMemcpyAsync(dst, c.raw(), c.nbytes(), cudaMemcpyHostToDevice, stream_));
    R1_CUDA_OK(cudaStreamSynchronize(stream_));
    dst += c.nbytes();
  }
  return out;
}

void CudaBackend::to_host(const Tensor& src, void* dst) {
  R1_CHECK(src.device() == Device::kCuda, "to_host of {}", src.describe());
  flush_route();
  const size_t n = src.nbytes();
  if (n < (size_t{1} << 16) || n > (size_t{64} << 20)) {
    R1_CUDA_OK(cudaMemcpyAsync(dst, src.raw(), n, cudaMemcpyDeviceToHost, stream_));
    R1_CUDA_OK(cudaStreamSynchronize(stream_));
    return;
  }
  // Logits-sized downloads go through pinned memory (a pageable copy is staged in small pieces).
  if (download_bytes_ < n) {
    if (download_) R1_CUDA_OK(cudaFreeHost(download_));
    download_ = nullptr;
    R1_CUDA_OK(cudaMallocHost(&download_, n));
    download_bytes_ = n;
  }
  R1_CUDA_OK(cudaMemcpyAsync(download_, src.raw(), n, cudaMemcpyDeviceToHost, stream_));
  R1_CUDA_OK(cudaStreamSynchronize(stream_));
  std::memcpy(dst, download_, n);
}

KvCache CudaBackend::alloc_kv_cache(const KvCacheSpec& spec, int64_t num_blocks,
                                    int64_t block_size) {
  KvCache c;
  c.spec = spec;
  // The serving cache is BF16 whatever the request; the F32 validation mode keeps it F32.
  const DType dt = f32_act_ ? DType::kF32 : DType::kBF16;
  c.spec.dtype = dt;
  c.num_blocks = num_blocks;
  c.block_size = block_size;
  auto make = [&](int64_t width) {
    Tensor t = alloc({num_blocks, block_size, width}, dt);
    R1_CUDA_OK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), stream_));
    return t;
  };
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    if (spec.mla) {
      c.latent.push_back(make(spec.kv_lora_rank + spec.rope_dim));
    } else {
      c.k.push_back(make(spec.num_kv_heads * spec.head_dim));
      c.v.push_back(make(spec.num_kv_heads * spec.head_dim));
    }
  }
  synchronize();
  return c;
}

Tensor CudaBackend::as_bf16(const Tensor& x, int slot) {
  if (is_bf16(x)) return x;
  Tensor xb = Tensor::wrap(workspace(slot, static_cast<size_t>(x.numel()) * 2), x.shape(),
                           DType::kBF16, nullptr, Device::kCuda);
  launch_convert(x.raw(), false, xb.raw(), true, x.numel(), stream_);
  return xb;
}

void* CudaBackend::workspace(int slot, size_t bytes) {
  Tensor& w = ws_[static_cast<size_t>(slot)];
  if (!w.defined() || w.nbytes() < bytes) {
    if (!recordings_.empty() && w.defined()) retired_.push_back(w);
    w = Tensor();
    w = alloc({static_cast<int64_t>(std::max<size_t>(bytes + bytes / 4, 4096))}, DType::kU8);
  }
  return w.raw();
}

int32_t* CudaBackend::zeroed_counters(size_t n) {
  if (!counters_.defined() || static_cast<size_t>(counters_.numel()) < n) {
    if (!recordings_.empty() && counters_.defined()) retired_.push_back(counters_);
    counters_ = alloc({static_cast<int64_t>(std::max<size_t>(n * 2, 1024))}, DType::kI32);
    R1_CUDA_OK(cudaMemsetAsync(counters_.raw(), 0, counters_.nbytes(), stream_));
  }
  return counters_.data<int32_t>();
}

int32_t* CudaBackend::route_ready_word() {
  if (!route_ready_.defined()) {
    route_ready_ = alloc({4}, DType::kI32);
    R1_CUDA_OK(cudaMemsetAsync(route_ready_.raw(), 0, route_ready_.nbytes(), stream_));
  }
  return route_ready_.data<int32_t>();
}

const int32_t* CudaBackend::dev_ints(const std::vector<int32_t>& v) {
  if (cur_ != nullptr) {
    // A recorded step's inputs live in its fixed buffers.
    if (&v == &cur_src_->token_ids) return cur_->token_ids;
    if (&v == &cur_src_->positions) return cur_->db.positions;
    if (&v == &cur_src_->logits_indices) return cur_->logits_rows;
  }
  for (auto& e : ints_)
    if (e.host.size() == v.size() && std::equal(v.begin(), v.end(), e.host.begin()))
      return e.dev.data<int32_t>();
  if (capturing_) {  // an upload cannot be recorded: give up this capture
    capture_broken_ = true;
    return nullptr;
  }
  if (ints_.size() < 8) ints_.emplace_back();
  IntEntry& e = ints_[ints_next_ % ints_.size()];
  ++ints_next_;
  e.host = v;
  if (!e.dev.defined() || e.dev.numel() < static_cast<int64_t>(v.size()))
    e.dev = alloc({std::max<int64_t>(64, static_cast<int64_t>(v.size()) * 2)}, DType::kI32);
  if (!v.empty())
    R1_CUDA_OK(
        cudaMemcpyAsync(e.dev.raw(), v.data(), v.size() * 4, cudaMemcpyHostToDevice, stream_));
  return e.dev.data<int32_t>();
}

const float* CudaBackend::dev_floats(const std::vector<float>& v) {
  for (auto& e : floats_)
    if (e.host == v) return e.dev.data<float>();
  if (capturing_) {
    capture_broken_ = true;
    return nullptr;
  }
  FloatEntry e;
  e.host = v;
  e.dev = alloc({std::max<int64_t>(1, static_cast<int64_t>(v.size()))}, DType::kF32);
  R1_CUDA_OK(cudaMemcpyAsync(e.dev.raw(), v.data(), v.size() * 4, cudaMemcpyHostToDevice, stream_));
  floats_.push_back(std::move(e));
  return floats_.back().dev.data<float>();
}

DevBatch& CudaBackend::dev_batch(const BatchInfo& b) {
  if (cur_ != nullptr && &b == cur_src_) return cur_->db;
  auto same = [&](const BatchInfo& h) {
    return h.max_blocks_per_seq == b.max_blocks_per_seq && h.slot_mapping == b.slot_mapping &&
           h.positions == b.positions && h.query_start == b.query_start &&
           h.block_tables == b.block_tables;
  };
  for (auto& d : batches_)
    if (same(d->host)) return *d;
  if (capturing_) capture_broken_ = true;
  if (batches_.size() < 4) batches_.push_back(std::make_unique<DevBatch>());
  DevBatch& d = *batches_[batches_next_ % batches_.size()];
  ++batches_next_;
  d.tiles.clear();
  d.mla_ctx = MlaContextPlan{};
  d.host.slot_mapping = b.slot_mapping;
  d.host.positions = b.positions;
  d.host.query_start = b.query_start;
  d.host.block_tables = b.block_tables;
  d.host.context_lens = b.context_lens;
  d.host.max_blocks_per_seq = b.max_blocks_per_seq;
  R1_CHECK(b.query_start.size() == b.context_lens.size() + 1 && b.num_seqs() > 0,
           "malformed batch");
  R1_CHECK(b.block_tables.size() == static_cast<size_t>(b.num_seqs()) * b.max_blocks_per_seq,
           "batch: {} block-table entries for {} sequences x {}", b.block_tables.size(),
           b.num_seqs(), b.max_blocks_per_seq);
  std::vector<int32_t> packed;
  packed.insert(packed.end(), b.slot_mapping.begin(), b.slot_mapping.end());
  packed.insert(packed.end(), b.positions.begin(), b.positions.end());
  packed.insert(packed.end(), b.query_start.begin(), b.query_start.end());
  packed.insert(packed.end(), b.block_tables.begin(), b.block_tables.end());
  if (!d.storage.defined() || d.storage.numel() < static_cast<int64_t>(packed.size()))
    d.storage = alloc({static_cast<int64_t>(packed.size()) * 2 + 64}, DType::kI32);
  R1_CUDA_OK(cudaMemcpyAsync(d.storage.raw(), packed.data(), packed.size() * 4,
                             cudaMemcpyHostToDevice, stream_));
  int32_t* base = d.storage.data<int32_t>();
  d.slot_mapping = base;
  d.positions = base + b.slot_mapping.size();
  d.query_start = d.positions + b.positions.size();
  d.block_tables = d.query_start + b.query_start.size();
  d.max_position =
      b.positions.empty() ? 0 : *std::max_element(b.positions.begin(), b.positions.end());
  return d;
}

// ---- elementwise ----

void CudaBackend::embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) {
  OpTimer timer(*this, "embedding");
  const int64_t H = table.dim(1), V = table.dim(0);
  R1_CHECK(out.dim(0) == static_cast<int64_t>(ids.size()) && out.row_size() == H,
           "embedding out {}", out.describe());
  for (int32_t id : ids) R1_CHECK(id >= 0 && id < V, "token id {} outside vocabulary {}", id, V);
  if (cur_ != nullptr) cur_->vocab = V;
  launch_embedding(table.raw(), is_bf16(table), V, dev_ints(ids), out.dim(0), H, out.raw(),
                   is_bf16(out), stream_);
}

void CudaBackend::rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) {
  OpTimer timer(*this, "rms_norm");
  R1_CHECK(w.dtype() == DType::kF32 && x.dim(0) == out.dim(0), "rms_norm x {} w {} out {}",
           x.describe(), w.describe(), out.describe());
  const bool early = early_input(x);
  launch_rms_norm(x.raw(), is_bf16(x), x.row_size(), nullptr, false, 0, w.data<float>(), w.numel(),
                  eps, x.dim(0), out.raw(), is_bf16(out), out.row_size(), stream_, early);
  note_early(early);
  note_write(out);
}

void CudaBackend::note_write(const Tensor& out) {
  const uint64_t n = pdl_launches(stream_);
  for (RecentWrite& r : recent_)
    if (r.p == out.raw()) {
      r.after = n;
      return;
    }
  recent_[static_cast<size_t>(recent_next_)] = {out.raw(), n};
  recent_next_ = (recent_next_ + 1) % static_cast<int>(recent_.size());
}

// R1SERVE_CUDA_EARLY_INPUT=0: every kernel waits for the one before it (side-by-side runs).
bool CudaBackend::early_input(const Tensor& x) const {
  static const bool on = [] {
    const char* e = std::getenv("R1SERVE_CUDA_EARLY_INPUT");
    return e == nullptr || e[0] != '0';
  }();
  if (!on) return false;
  for (const RecentWrite& r : recent_)
    if (r.p == x.raw()) return settled_since(r.after);
  return false;
}

void CudaBackend::note_early(bool early) {
  if (!early) return;
  const uint64_t n = pdl_launches(stream_);
  early_run_ = early_end_ + 1 == n ? early_run_ + 1 : 1;
  early_end_ = n;
}

bool CudaBackend::settled_since(uint64_t after) const {
  const uint64_t n = pdl_launches(stream_);
  const uint64_t early_tail = early_end_ == n ? early_run_ : 0;  // the last launches, all early
  return n > after + early_tail;
}

void CudaBackend::add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                               Tensor& out) {
  OpTimer timer(*this, "add_rms_norm");
  R1_CHECK(
      w.dtype() == DType::kF32 && residual.numel() == x.numel() && residual.row_size() == w.numel(),
      "add_rms_norm residual {} x {} w {}", residual.describe(), x.describe(), w.describe());
  launch_rms_norm(residual.raw(), is_bf16(residual), residual.row_size(), x.raw(), is_bf16(x),
                  x.row_size(), w.data<float>(), w.numel(), eps, residual.dim(0), out.raw(),
                  is_bf16(out), out.row_size(), stream_);
}

void CudaBackend::gather_rows(const Tensor& src, const std::vector<int32_t>& rows, Tensor& out) {
  OpTimer timer(*this, "gather_rows");
  R1_CHECK(out.dim(0) == static_cast<int64_t>(rows.size()) && out.row_size() == src.row_size() &&
               out.dtype() == src.dtype(),
           "gather_rows src {} out {}", src.describe(), out.describe());
  for (int32_t r : rows)
    R1_CHECK(r >= 0 && r < src.dim(0), "gather_rows row {} of {}", r, src.dim(0));
  launch_gather_rows(src.raw(), dev_ints(rows), out.dim(0),
                     src.row_size() * static_cast<int64_t>(dtype_size(src.dtype())), out.raw(),
                     stream_);
}

void CudaBackend::argmax_rows(const Tensor& x, Tensor& ids) {
  OpTimer timer(*this, "argmax_rows");
  R1_CHECK(x.dtype() == DType::kF32 && ids.dtype() == DType::kI32 && ids.numel() == x.dim(0),
           "argmax_rows x {} ids {}", x.describe(), ids.describe());
  const int64_t n = x.dim(0), V = x.row_size();
  // Layout: counters [cap] I32 (first: they stay zero between launches whatever
  // the chunking) | values [cap, 64] F32 | indices [cap, 64] I32 (at most 64 chunks).
  constexpr int64_t kMaxChunks = 64;
  if (n > argmax_rows_cap_ && !capturing_) {
    const int64_t cap = std::max<int64_t>(n, 256);
    if (!recordings_.empty() && argmax_ws_.defined()) retired_.push_back(argmax_ws_);
    argmax_ws_ = alloc({cap * (2 * kMaxChunks + 1)}, DType::kI32);
    R1_CUDA_OK(cudaMemsetAsync(argmax_ws_.raw(), 0, argmax_ws_.nbytes(), stream_));
    argmax_rows_cap_ = cap;
  }
  // R1SERVE_CUDA_ARGMAX_CHUNKS=0: one block a row (side-by-side runs). Else (a
  // capture that cannot grow the buffer) also one block a row.
  static const bool chunks_on = [] {
    const char* e = std::getenv("R1SERVE_CUDA_ARGMAX_CHUNKS");
    return e == nullptr || e[0] != '0';
  }();
  const bool chunked = chunks_on && n <= argmax_rows_cap_ && argmax_chunks(V) <= kMaxChunks;
  int32_t* base = chunked ? argmax_ws_.data<int32_t>() : nullptr;
  const int64_t cap = argmax_rows_cap_;
  launch_argmax_rows(x.data<float>(), n, V, ids.data<int32_t>(),
                     chunked ? reinterpret_cast<float*>(base + cap) : nullptr,
                     chunked ? base + cap + cap * kMaxChunks : nullptr, chunked ? base : nullptr,
                     stream_);
}

void CudaBackend::add(const Tensor& a, const Tensor& b, Tensor& out) {
  OpTimer timer(*this, "add");
  R1_CHECK(a.numel() == b.numel() && a.numel() == out.numel(), "add {} {} {}", a.describe(),
           b.describe(), out.describe());
  launch_add(a.raw(), is_bf16(a), b.raw(), is_bf16(b), out.raw(), is_bf16(out), a.numel(), stream_);
}

void CudaBackend::silu_mul(const Tensor& gate_up, Tensor& out) {
  OpTimer timer(*this, "silu_mul");
  const int64_t rows = gate_up.dim(0), inter = gate_up.dim(1) / 2;
  R1_CHECK(out.dim(0) == rows && out.dim(1) == inter, "silu_mul out {}", out.describe());
  launch_silu_mul(gate_up.raw(), is_bf16(gate_up), rows, inter, out.raw(), is_bf16(out), stream_);
}

void CudaBackend::copy_heads(const Tensor& src, int64_t src_stride, int64_t src_offset, Tensor& dst,
                             int64_t dst_stride, int64_t dst_offset, int64_t width,
                             int64_t num_heads) {
  OpTimer timer(*this, "copy_heads");
  R1_CHECK(src.dim(0) == dst.dim(0), "copy_heads src {} dst {}", src.describe(), dst.describe());
  R1_CHECK((num_heads - 1) * src_stride + src_offset + width <= src.row_size() &&
               (num_heads - 1) * dst_stride + dst_offset + width <= dst.row_size(),
           "copy_heads windows past the rows");
  launch_copy_heads(src.raw(), is_bf16(src), src.row_size(), src_stride, src_offset, dst.raw(),
                    is_bf16(dst), dst.row_size(), dst_stride, dst_offset, width, num_heads,
                    src.dim(0), stream_);
}

void CudaBackend::rope(Tensor& x, const std::vector<int32_t>& positions, const RopeParams& rope,
                       int64_t num_heads, int64_t head_stride, int64_t offset) {
  OpTimer timer(*this, "rope");
  R1_CHECK(static_cast<int64_t>(positions.size()) == x.dim(0), "rope: {} positions for {} rows",
           positions.size(), x.dim(0));
  launch_rope(x.raw(), is_bf16(x), x.row_size(), dev_ints(positions), x.dim(0),
              dev_floats(rope.inv_freq), static_cast<int64_t>(rope.inv_freq.size()),
              rope.attention_factor, rope.interleaved, num_heads, head_stride, offset, stream_);
}

void CudaBackend::rope_copy(const Tensor& src, int64_t src_stride, int64_t src_offset, Tensor& dst,
                            int64_t dst_stride, int64_t dst_offset, int64_t num_heads,
                            const std::vector<int32_t>& positions, const RopeParams& rope) {
  OpTimer timer(*this, "rope_copy");
  R1_CHECK(static_cast<int64_t>(positions.size()) == src.dim(0) && src.dim(0) == dst.dim(0),
           "rope_copy: {} positions for src {} dst {}", positions.size(), src.describe(),
           dst.describe());
  const bool early = early_input(src);
  launch_rope_copy(src.raw(), is_bf16(src), src.row_size(), src_stride, src_offset, dst.raw(),
                   is_bf16(dst), dst.row_size(), dst_stride, dst_offset, dev_ints(positions),
                   src.dim(0), dev_floats(rope.inv_freq),
                   static_cast<int64_t>(rope.inv_freq.size()), rope.attention_factor,
                   rope.interleaved, num_heads, stream_, early);
  note_early(early);
}

void CudaBackend::mla_latent_write(const Tensor& kv, const Tensor& w, float eps,
                                   const RopeParams& rope, const BatchInfo& batch, Tensor& latent,
                                   Tensor& cache) {
  const int64_t width = kv.row_size(), r = w.numel();
  if (!is_bf16(kv) || !is_bf16(cache) || !rope.interleaved || rope.rot_dim() != width - r ||
      r > 2048) {
    Backend::mla_latent_write(kv, w, eps, rope, batch, latent, cache);
    return;
  }
  OpTimer timer(*this, "mla_latent");
  const int64_t slots = cache.dim(0) * cache.dim(1);
  R1_CHECK(cache.row_size() == cache.dim(1) * width && kv.dim(0) == batch.num_tokens() &&
               w.dtype() == DType::kF32,
           "mla_latent_write: kv {} cache {} w {}", kv.describe(), cache.describe(), w.describe());
  for (int32_t s : batch.slot_mapping)
    R1_CHECK(s >= 0 && s < slots, "slot {} outside cache of {} slots", s, slots);
  if (cur_ != nullptr) cur_->num_slots = slots;
  DevBatch& d = dev_batch(batch);
  const bool early = early_input(kv);
  launch_mla_latent(kv.data<uint16_t>(), kv.dim(0), width, w.data<float>(), r, eps, d.positions,
                    d.slot_mapping, dev_floats(rope.inv_freq), rope.attention_factor,
                    cache.data<uint16_t>(), stream_, early);
  note_early(early);
}

void CudaBackend::qkv_rope_cache_write(const Tensor& qkv, int64_t nh, int64_t nkv, int64_t d,
                                       const RopeParams& rope, const BatchInfo& batch, Tensor& q,
                                       Tensor& k, Tensor& v, Tensor& k_cache, Tensor& v_cache) {
  const int64_t T = qkv.dim(0);
  // One kernel for NeoX rope over whole heads with one dtype throughout; otherwise the plain ops.
  if (rope.interleaved || rope.rot_dim() != d || q.dtype() != qkv.dtype() ||
      k_cache.dtype() != qkv.dtype() || v_cache.dtype() != qkv.dtype()) {
    Backend::qkv_rope_cache_write(qkv, nh, nkv, d, rope, batch, q, k, v, k_cache, v_cache);
    return;
  }
  OpTimer timer(*this, "qkv_rope_cache");
  const int64_t width = nkv * d, slots = k_cache.dim(0) * k_cache.dim(1);
  R1_CHECK(qkv.row_size() == (nh + 2 * nkv) * d && q.dim(0) == T && q.row_size() == nh * d &&
               T == batch.num_tokens() && k_cache.row_size() == k_cache.dim(1) * width &&
               v_cache.shape() == k_cache.shape(),
           "qkv_rope_cache_write: qkv {} q {} caches {} {}", qkv.describe(), q.describe(),
           k_cache.describe(), v_cache.describe());
  for (int32_t s : batch.slot_mapping)
    R1_CHECK(s >= 0 && s < slots, "slot {} outside cache of {} slots", s, slots);
  if (cur_ != nullptr) cur_->num_slots = slots;
  DevBatch& db = dev_batch(batch);
  launch_qkv_rope_cache(qkv.raw(), is_bf16(qkv), T, nh, nkv, d, db.positions, db.slot_mapping,
                        dev_floats(rope.inv_freq), rope.attention_factor, q.raw(), k_cache.raw(),
                        v_cache.raw(), stream_);
}

void CudaBackend::cache_write(const Tensor& src, const BatchInfo& batch, Tensor& cache) {
  OpTimer timer(*this, "cache_write");
  const int64_t width = src.row_size();
  R1_CHECK(cache.row_size() == cache.dim(1) * width && src.dim(0) == batch.num_tokens(),
           "cache_write: src {} cache {}", src.describe(), cache.describe());
  const int64_t slots = cache.dim(0) * cache.dim(1);
  for (int32_t s : batch.slot_mapping)
    R1_CHECK(s >= 0 && s < slots, "slot {} outside cache of {} slots", s, slots);
  if (cur_ != nullptr) cur_->num_slots = slots;
  DevBatch& d = dev_batch(batch);
  launch_cache_write(src.raw(), is_bf16(src), src.dim(0), width, d.slot_mapping, slots, cache.raw(),
                     is_bf16(cache), stream_);
}

}  // namespace cuda
}  // namespace r1::backend
