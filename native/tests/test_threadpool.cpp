// Thread pool and SIMD dispatch: coverage of parallel_for ranges, exceptions crossing threads,
// nesting, resizing, the SIMD level override, and the matrix precision that follows a caller's
// work into the pool.
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/cpu_features.h"
#include "common/error.h"
#include "common/matmul_precision.h"
#include "common/threadpool.h"
#include "tests/harness.h"

SAFL_TEST(threadpool_covers_range_once) {
  for (int threads : {1, 2, 3, 8}) {
    safl::set_num_threads(threads);
    for (int64_t n : {0, 1, 7, 1000, 100003}) {
      std::vector<std::atomic<int>> hits(n);
      safl::parallel_for(0, n, 13, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) hits[i]++;
      });
      bool once = true;
      for (auto& h : hits) once = once && h.load() == 1;
      EXPECT(once);
    }
  }
  safl::set_num_threads(safl::hardware_threads());
}

SAFL_TEST(threadpool_rethrows_and_nests) {
  safl::set_num_threads(4);
  EXPECT_THROWS(safl::parallel_for(0, 100, 1, [](int64_t lo, int64_t) {
                  if (lo >= 50) throw safl::Error(safl::ErrorKind::Range, "chunk failed");
                }),
                safl::Error, "chunk failed");
  std::atomic<int64_t> total{0};
  safl::parallel_for(0, 8, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      safl::parallel_for(0, 10, 1, [&](int64_t a, int64_t b) { total += b - a; });
  });
  EXPECT(total.load() == 80);
  std::atomic<int> tasks{0};
  safl::parallel_run(3, [&](int t, int n) { tasks += 1; EXPECT(n == 3 && t >= 0 && t < n); });
  EXPECT(tasks.load() == 3);
  EXPECT_THROWS(safl::set_num_threads(0), safl::Error, "expected 1 <= threads <= 1024 but received 0");
  safl::set_num_threads(safl::hardware_threads());
}

SAFL_TEST(simd_level_override) {
  const safl::SimdLevel best = safl::simd_level_supported();
  safl::set_simd_level(safl::SimdLevel::Generic);
  EXPECT(safl::simd_level() == safl::SimdLevel::Generic);
  safl::set_simd_level(best);
  EXPECT(safl::simd_level() == best);
  if (best != safl::SimdLevel::Avx512)
    EXPECT_THROWS(safl::set_simd_level(safl::SimdLevel::Avx512), safl::Error, "expected a level up to");
}

// A resize between runs must not let new workers replay an old run (they once started from
// generation 0, took part in a finished run and left the pool waiting forever). A stress test:
// the race needs unlucky timing, so it caught the bug in only some runs.
SAFL_TEST(threadpool_resize_between_runs) {
  for (int round = 0; round < 5000; ++round) {
    safl::set_num_threads(2 + round % 2);
    // A varying pause lets the new workers start before, during or after the next run.
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(round % 120);
    while (std::chrono::steady_clock::now() < until) {
    }
    std::atomic<int64_t> sum{0};
    safl::parallel_for(0, 8, 1, [&](int64_t lo, int64_t hi) { sum += hi - lo; });
    EXPECT(sum.load() == 8);
  }
  safl::set_num_threads(safl::hardware_threads());
}

// Note [join before working]: back-to-back runs on more threads than cores, where some workers
// join a run late or not at all, still run every task exactly once and never hang.
SAFL_TEST(threadpool_back_to_back_runs_with_late_workers) {
  safl::set_num_threads(6);
  int64_t total = 0;
  for (int run = 0; run < 20000; ++run) {
    std::atomic<int64_t> sum{0};
    const int64_t n = 1 + run % 9;
    safl::parallel_for(0, n, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) sum += i + 1;
    });
    total += sum.load() == n * (n + 1) / 2 ? 1 : 0;
  }
  EXPECT(total == 20000);
  safl::set_num_threads(safl::hardware_threads());
}

SAFL_TEST(matmul_precision_follows_the_caller_into_the_pool) {
  // Every task, on whichever thread, runs under the precision of the thread that issued it; the
  // workers go back to their own (float32) afterwards, and a scope restores what it replaced.
  safl::set_num_threads(3);
  for (safl::MatmulPrecision precision : {safl::MatmulPrecision::BFloat16, safl::MatmulPrecision::Float32}) {
    const safl::MatmulPrecisionScope scope(precision);
    std::atomic<int> mismatches{0};
    safl::parallel_for(0, 64, 1, [&](int64_t, int64_t) {
      if (safl::matmul_precision() != precision) mismatches++;
      std::this_thread::sleep_for(std::chrono::microseconds(200));  // let every worker take some
    });
    safl::parallel_run(3, [&](int, int) {
      if (safl::matmul_precision() != precision) mismatches++;
    });
    EXPECT(mismatches.load() == 0);
  }
  EXPECT(safl::matmul_precision() == safl::MatmulPrecision::Float32);
  std::atomic<int> bfloat16_after{0};
  safl::parallel_for(0, 64, 1, [&](int64_t, int64_t) {
    if (safl::matmul_precision() != safl::MatmulPrecision::Float32) bfloat16_after++;
  });
  EXPECT(bfloat16_after.load() == 0);
  EXPECT(std::string(safl::matmul_precision_name(safl::MatmulPrecision::BFloat16)) == "bfloat16");
  safl::set_num_threads(safl::hardware_threads());
}
