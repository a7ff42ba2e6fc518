// ThreadPool implementation: a generation counter wakes workers; chunks are
// handed out through an atomic cursor; completion is an atomic countdown.
#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#define R1_PAUSE() _mm_pause()
#else
#define R1_PAUSE() std::this_thread::yield()
#endif

namespace r1 {

namespace {
constexpr int kSpinIterations = 20000;  // roughly 50-100 us before sleeping
}

int ThreadPool::hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = hardware_threads();
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_job(int thread_index) {
  if (all_fn_ != nullptr) {
    (*all_fn_)(thread_index);
    return;
  }
  for (;;) {
    int64_t begin = next_.fetch_add(chunk_);
    if (begin >= n_) break;
    (*range_fn_)(begin, std::min(n_, begin + chunk_));
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    int spins = 0;
    while (gen == seen && spins < kSpinIterations) {
      R1_PAUSE();
      ++spins;
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load() != seen; });
      gen = generation_.load();
    }
    seen = gen;
    if (stop_.load()) return;
    run_job(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::wait_workers() {
  // Spin briefly, then yield: a worker may have been descheduled by another
  // process on a small machine, and burning its core would only delay it.
  int spins = 0;
  while (pending_.load(std::memory_order_acquire) != 0) {
    if (++spins < kSpinIterations) {
      R1_PAUSE();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int threads = num_threads();
  if (threads == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> caller(caller_mu_);
  // About 4 chunks per thread for balance, never below the grain.
  int64_t chunk = std::max<int64_t>(grain, (n + threads * 4 - 1) / (threads * 4));
  range_fn_ = &fn;
  all_fn_ = nullptr;
  n_ = n;
  chunk_ = chunk;
  next_.store(0);
  pending_.store(static_cast<int>(workers_.size()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  run_job(0);
  wait_workers();
  range_fn_ = nullptr;
}

void ThreadPool::run_on_all(const std::function<void(int)>& fn) {
  if (workers_.empty()) {
    fn(0);
    return;
  }
  std::lock_guard<std::mutex> caller(caller_mu_);
  all_fn_ = &fn;
  range_fn_ = nullptr;
  pending_.store(static_cast<int>(workers_.size()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  run_job(0);
  wait_workers();
  all_fn_ = nullptr;
}

}  // namespace r1
