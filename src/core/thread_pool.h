// ThreadPool: a fixed set of workers for data-parallel loops. The calling
// thread takes part, so a pool of N threads starts N-1 workers and never puts
// more busy threads than N on the machine. Work is handed out in chunks from
// an atomic cursor, and the caller only waits for chunks a worker actually
// took: a worker that is asleep or descheduled (a busy 2-core machine) never
// holds the caller up. Idle workers spin for a few microseconds (back-to-back
// ops of a forward pass) and then sleep, so an idle server burns no CPU.
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
  // least `grain` items, and returns when all are done. Which thread runs a
  // chunk is not specified. Not reentrant: fn must not call parallel_for on
  // the same pool. Safe to call from several threads (calls are serialized).
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Calls fn(thread_index) once on each of the num_threads() threads and waits
  // for all of them (benchmarks that must load every core).
  void run_on_all(const std::function<void(int)>& fn);

  static int hardware_threads();

 private:
  struct Job {
    const std::function<void(int64_t, int64_t)>* range = nullptr;
    const std::function<void(int)>* all = nullptr;
    int64_t n = 0;
    int64_t chunk = 1;
    int64_t num_chunks = 0;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::atomic<int> all_pending{0};
  };

  void worker_loop(int index);
  void run_chunks(Job& job);
  void publish(Job& job);
  void retire(Job& job);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::atomic<Job*> job_{nullptr};
  std::atomic<int> inside_{0};  // workers that may be touching *job_
  std::mutex caller_mu_;        // one job at a time
};

}  // namespace r1
