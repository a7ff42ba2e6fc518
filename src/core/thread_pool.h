// ThreadPool: a fixed set of workers for data-parallel loops. The calling
// thread takes part, so a pool of N threads starts N-1 workers and never puts
// more busy threads than N on the machine. Idle workers spin for a few
// microseconds (back-to-back ops in a forward pass) and then sleep on a
// condition variable, so an idle server burns no CPU.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace r1 {

class ThreadPool {
 public:
  // threads <= 0 means one per available core.
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint chunks covering [0, n), chunks of at
  // least `grain` items, and returns when all are done. Not reentrant: fn must
  // not call parallel_for on the same pool.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Calls fn(thread_index) once on each of the num_threads() threads.
  void run_on_all(const std::function<void(int)>& fn);

  static int hardware_threads();

 private:
  void worker_loop(int index);
  void run_job(int thread_index);
  void wait_workers();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};

  // The current job.
  const std::function<void(int64_t, int64_t)>* range_fn_ = nullptr;
  const std::function<void(int)>* all_fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 1;
  std::atomic<int64_t> next_{0};
  std::mutex caller_mu_;  // one job at a time
};

}  // namespace r1
