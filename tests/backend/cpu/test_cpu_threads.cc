// The CPU backend's threads: an idle pool sleeps (the server shares the
// machine with its HTTP layer), a pool as large as the machine keeps making
// progress when it shares the cores, and one fork-join over several gemms
// (head_linear, the MoE experts) gives the same bits as the gemms one by one.
#include <time.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "core/dtype.h"
#include "core/thread_pool.h"

namespace r1::backend::cpu {
namespace {

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// CPU time, not wall time: a spinning worker burns a core for the whole idle
// window whatever else runs on the machine; a sleeping one burns nothing.
TEST(CpuThreads, IdlePoolDoesNotSpin) {
  ThreadPool pool(std::max(2, ThreadPool::hardware_threads()));
  std::vector<int64_t> sums(1000);
  for (int rep = 0; rep < 50; ++rep)
    pool.parallel_for(1000, 10, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sums[static_cast<size_t>(i)] += i;
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // past the short spin
  const double c0 = process_cpu_seconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const double burned = process_cpu_seconds() - c0;
  EXPECT_LT(burned, 0.03) << "an idle pool used " << burned << " s of CPU in 0.3 s";
}

// As many pool threads as cores plus a competing busy thread per core: every
// job still finishes (the caller never waits for chunks nobody took), and
// finishes in bounded time (generous: this is about collapse, not speed).
TEST(CpuThreads, PoolOfCoreCountSurvivesCompetingLoad) {
  const int cores = ThreadPool::hardware_threads();
  ThreadPool pool(cores);
  std::atomic<bool> stop{false};
  std::vector<std::thread> hogs;
  for (int i = 0; i < cores; ++i)
    hogs.emplace_back([&] {
      volatile uint64_t x = 0;
      while (!stop.load(std::memory_order_relaxed)) x = x + 1;
    });
  std::vector<int64_t> v(4096, 0);
  const auto t0 = std::chrono::steady_clock::now();
  for (int rep = 0; rep < 2000; ++rep)
    pool.parallel_for(4096, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) v[static_cast<size_t>(i)] += 1;
    });
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop = true;
  for (auto& h : hogs) h.join();
  for (int64_t x : v) ASSERT_EQ(x, 2000);
  EXPECT_LT(dt, 20.0) << "2000 small jobs took " << dt << " s next to competing threads";
}

TEST(CpuThreads, GemmBatchMatchesSeparateGemms) {
  CpuBackend be(3);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  const int64_t E = 5, N = 40, K = 72;
  Tensor w = Tensor::empty({E * N, K}, DType::kBF16);
  for (int64_t i = 0; i < E * N * K; ++i) w.data<uint16_t>()[i] = f32_to_bf16(nd(rng));
  std::vector<int64_t> rows = {1, 3, 0, 7, 2};  // tokens per expert, one with none
  std::vector<std::vector<float>> x(E), sep(E), bat(E);
  std::vector<CpuBackend::GemmJob> jobs;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t M = rows[static_cast<size_t>(e)];
    x[e].resize(static_cast<size_t>(M * K));
    for (float& f : x[e]) f = nd(rng);
    sep[e].assign(static_cast<size_t>(M * N), 0.0f);
    bat[e].assign(static_cast<size_t>(M * N), 1.0f);
    if (M == 0) continue;
    be.gemm(x[e].data(), K, M, w, e * N, N, nullptr, sep[e].data(), N);
    jobs.push_back({x[e].data(), K, M, &w, e * N, N, nullptr, bat[e].data(), N, nullptr});
  }
  be.gemm_batch(jobs);
  for (int64_t e = 0; e < E; ++e) EXPECT_EQ(sep[e], bat[e]) << "expert " << e;
}

}  // namespace
}  // namespace r1::backend::cpu
