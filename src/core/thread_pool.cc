// ThreadPool implementation. A job lives on the caller's stack; workers find
// it through job_ and announce themselves in inside_ before touching it, so
// the caller can retire the job (job_ = null, then wait for inside_ == 0)
// without waiting for workers that never woke up.
#include "core/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#define R1_PAUSE() _mm_pause()
#else
#define R1_PAUSE() std::this_thread::yield()
#endif

namespace r1 {

namespace {
constexpr int kSpinIterations = 20000;  // roughly 0.1-0.5 ms before sleeping

// Spins briefly, then yields, until pred() holds.
template <typename Pred>
void wait_until(Pred pred) {
  int spins = 0;
  while (!pred()) {
    if (++spins < kSpinIterations) {
      R1_PAUSE();
    } else {
      std::this_thread::yield();
    }
  }
}
}  // namespace

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

void ThreadPool::run_chunks(Job& job) {
  for (;;) {
    const int64_t c = job.next.fetch_add(1);
    if (c >= job.num_chunks) return;
    const int64_t begin = c * job.chunk;
    (*job.range)(begin, std::min(job.n, begin + job.chunk));
    job.done.fetch_add(1, std::memory_order_release);
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spins = 0; gen == seen && spins < kSpinIterations; ++spins) {
      R1_PAUSE();
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load() != seen; });
      gen = generation_.load();
    }
    seen = gen;
    if (stop_.load()) return;
    inside_.fetch_add(1);  // seq_cst: pairs with retire()'s store and load
    Job* job = job_.load();
    if (job != nullptr) {
      if (job->all != nullptr) {
        (*job->all)(index);
        job->all_pending.fetch_sub(1, std::memory_order_release);
      } else {
        run_chunks(*job);
      }
    }
    inside_.fetch_sub(1);
  }
}

void ThreadPool::publish(Job& job) {
  job_.store(&job);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
}

void ThreadPool::retire(Job& job) {
  job_.store(nullptr);  // seq_cst: a worker that now enters sees no job
  wait_until([&] { return inside_.load() == 0; });
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
  Job job;
  job.range = &fn;
  job.n = n;
  // About 4 chunks per thread for balance, never below the grain.
  job.chunk = std::max<int64_t>(grain, (n + threads * 4 - 1) / (threads * 4));
  job.num_chunks = (n + job.chunk - 1) / job.chunk;
  publish(job);
  run_chunks(job);
  wait_until([&] { return job.done.load(std::memory_order_acquire) == job.num_chunks; });
  retire(job);
}

void ThreadPool::run_on_all(const std::function<void(int)>& fn) {
  if (workers_.empty()) {
    fn(0);
    return;
  }
  std::lock_guard<std::mutex> caller(caller_mu_);
  Job job;
  job.all = &fn;
  job.all_pending.store(static_cast<int>(workers_.size()));
  publish(job);
  fn(0);
  wait_until([&] { return job.all_pending.load(std::memory_order_acquire) == 0; });
  retire(job);
}

}  // namespace r1
