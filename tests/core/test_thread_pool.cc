// ThreadPool: every index is visited exactly once, whatever the thread count,
// grain, or number of concurrent callers; run_on_all reaches every thread.
#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/thread_pool.h"

namespace r1 {
namespace {

TEST(ThreadPool, ParallelForCoversEachIndexOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 64, 1000, 12345}) {
      for (int64_t grain : {1, 5, 100}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
          ASSERT_LE(0, b);
          ASSERT_LT(b, e);
          ASSERT_LE(e, n);
          for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << threads << " " << n << " " << i;
      }
    }
  }
}

TEST(ThreadPool, ManyBackToBackJobsAndConcurrentCallers) {
  ThreadPool pool(4);
  std::atomic<int64_t> total{0};
  auto caller = [&] {
    for (int rep = 0; rep < 300; ++rep)
      pool.parallel_for(100, 1, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
  };
  std::thread a(caller), b(caller);
  caller();
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 3 * 300 * 100);
}

TEST(ThreadPool, RunOnAllReachesEveryThread) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> seen(3);
  for (int rep = 0; rep < 50; ++rep)
    pool.run_on_all([&](int i) { seen[static_cast<size_t>(i)].fetch_add(1); });
  for (auto& s : seen) EXPECT_EQ(s.load(), 50);
}

}  // namespace
}  // namespace r1
