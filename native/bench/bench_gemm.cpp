// SGEMM benchmark: safl::cpu::sgemm on the products the tiny and base configs run at batch 64,
// plus square matrices, side by side with OpenBLAS (when built with SAFL_BENCH_OPENBLAS) in the
// same run. Each sample times ours, then OpenBLAS, back to back (each for >= 20 ms); the table
// shows the median GFLOP/s of each, the median of the per-sample ratios ours / OpenBLAS (a
// shared machine's load drifts less within one pair than across the run), and our share of the
// machine's peak.
//
// The peak is measured, not assumed: every thread runs a tight loop of independent FMAs at the
// active SIMD width (12 accumulators, enough to cover FMA latency × 2 ports) and the sum of
// their rates is the peak for that thread count. It is measured three times at the start and
// once before every shape, and the best rate is kept: other load only ever lowers it. It
// includes the clock the cores really run at under that load.
//
// Note [OpenBLAS threads spin]: after a call, OpenBLAS's worker threads busy-wait for a while
// (OPENBLAS_THREAD_TIMEOUT, about 0.1 s by default) before they sleep. Timed right after, our
// threads would share the cores with them, so the benchmark pauses after every OpenBLAS sample.
//
//   safl_bench_gemm [--threads N (2)] [--samples S (7)] [--simd generic|avx2|avx512]
//                   [--precision float32|bfloat16] [--only substring]
//
// --precision bfloat16 times safl's products under MatmulPrecision::BFloat16 (AMX tiles or
// VDPBF16PS, where the CPU has them) against OpenBLAS's float32 ones; %peak stays relative to the
// float32 FMA rate.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "common/cpu_features.h"
#include "common/matmul_precision.h"
#include "common/threadpool.h"
#include "ops/gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#ifdef SAFL_BENCH_OPENBLAS
#include <cblas.h>
#endif

namespace {

struct Shape {
  const char* label;
  int64_t M, N, K;
  bool trans_a, trans_b;
};

// Batch 64. Convolutions by im2col: forward out[Co, B·H·W] = W[Co, Ci·k·k] · col[Ci·k·k, B·H·W];
// weight gradient dW[Co, Ci·k·k] = dout[Co, B·H·W] · colᵀ (trans_b); column gradient
// dcol[Ci·k·k, B·H·W] = Wᵀ · dout (trans_a). Linear layers on 64 × 25 = 1600 tokens with weights
// stored (out, in): y = x · Wᵀ (trans_b); weight gradient dW[out, in] = dyᵀ · x (trans_a).
const Shape kShapes[] = {
    {"tiny  loc conv2 3x3 16->32 @16x32", 32, 64 * 16 * 32, 16 * 9, false, false},
    {"tiny  stem 3x3 3->16 @32x100", 16, 64 * 32 * 100, 3 * 9, false, false},
    {"tiny  res1 3x3 16->16 @16x50", 16, 64 * 16 * 50, 16 * 9, false, false},
    {"tiny  res2 3x3 32->32 @8x25", 32, 64 * 8 * 25, 32 * 9, false, false},
    {"tiny  res3 3x3 64->64 @4x25", 64, 64 * 4 * 25, 64 * 9, false, false},
    {"tiny  res4 3x3 128->128 @2x25", 128, 64 * 2 * 25, 128 * 9, false, false},
    {"tiny  res3 3x3 dW", 64, 64 * 9, 64 * 4 * 25, false, true},
    {"tiny  res3 3x3 dcol", 64 * 9, 64 * 4 * 25, 64, true, false},
    {"tiny  qkv 256->768", 1600, 768, 256, false, true},
    {"tiny  ffn2 1024->256", 1600, 256, 1024, false, true},
    {"tiny  classifier 256->97", 1600, 97, 256, false, true},
    {"base  res2 3x3 64->64 @8x25", 64, 64 * 8 * 25, 64 * 9, false, false},
    {"base  res4 3x3 256->256 @2x25", 256, 64 * 2 * 25, 256 * 9, false, false},
    {"base  res5 3x3 512->512 @1x25", 512, 64 * 1 * 25, 512 * 9, false, false},
    {"base  res4 3x3 dW", 256, 256 * 9, 64 * 2 * 25, false, true},
    {"base  res4 3x3 dcol", 256 * 9, 64 * 2 * 25, 256, true, false},
    {"base  ffn1 512->2048", 1600, 2048, 512, false, true},
    {"base  ffn2 2048->512", 1600, 512, 2048, false, true},
    {"base  ffn1 dW", 2048, 512, 1600, true, false},
    {"base  decode step qkv 512->1536", 64, 1536, 512, false, true},
    {"base  decode step out 512->512", 64, 512, 512, false, true},
    {"base  decode step ffn1 512->2048", 64, 2048, 512, false, true},
    {"base  decode step ffn2 2048->512", 64, 512, 2048, false, true},
    {"square 1024", 1024, 1024, 1024, false, false},
    {"square 2048", 2048, 2048, 2048, false, false},
};

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds per call of fn, timed over enough calls to last at least 20 ms.
template <class Fn>
double time_per_call(Fn fn) {
  int calls = 1;
  for (;;) {
    const double start = now_seconds();
    for (int i = 0; i < calls; ++i) fn();
    const double elapsed = now_seconds() - start;
    if (elapsed >= 0.02) return elapsed / calls;
    calls = elapsed <= 0.0 ? calls * 8 : std::max(calls * 2, int(calls * 0.025 / elapsed) + 1);
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// ---- peak: independent FMAs at the active SIMD width, on every thread ------------------------
constexpr int kPeakAccumulators = 12;
constexpr long kPeakIterations = 20'000'000;
volatile float peak_sink;  // keeps the loops' results alive

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f"))) float fma_loop_avx512(long iterations) {
  __m512 acc[kPeakAccumulators];
  for (int i = 0; i < kPeakAccumulators; ++i) acc[i] = _mm512_set1_ps(0.001f * float(i));
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(0.0001f);
  for (long it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kPeakAccumulators; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kPeakAccumulators; ++i) sum = _mm512_add_ps(sum, acc[i]);
  float lanes[16];
  _mm512_storeu_ps(lanes, sum);
  return lanes[0] + lanes[15];
}

__attribute__((target("avx2,fma"))) float fma_loop_avx2(long iterations) {
  __m256 acc[kPeakAccumulators];
  for (int i = 0; i < kPeakAccumulators; ++i) acc[i] = _mm256_set1_ps(0.001f * float(i));
  const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(0.0001f);
  for (long it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kPeakAccumulators; ++i) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
  }
  __m256 sum = acc[0];
  for (int i = 1; i < kPeakAccumulators; ++i) sum = _mm256_add_ps(sum, acc[i]);
  float lanes[8];
  _mm256_storeu_ps(lanes, sum);
  return lanes[0] + lanes[7];
}
#endif

// Peak GFLOP/s of all pool threads together, or 0 at the generic level (no fixed width).
double measure_peak_gflops() {
  const int threads = safl::num_threads();
  std::vector<double> rate(size_t(threads), 0.0);
  safl::parallel_run(threads, [&](int t, int) {
    const double start = now_seconds();
    switch (safl::simd_level()) {
#if defined(__x86_64__) || defined(__i386__)
      case safl::SimdLevel::Avx512:
        peak_sink = fma_loop_avx512(kPeakIterations);
        rate[size_t(t)] = 2.0 * 16 * kPeakAccumulators * double(kPeakIterations) / (now_seconds() - start);
        break;
      case safl::SimdLevel::Avx2:
        peak_sink = fma_loop_avx2(kPeakIterations);
        rate[size_t(t)] = 2.0 * 8 * kPeakAccumulators * double(kPeakIterations) / (now_seconds() - start);
        break;
#endif
      default: break;
    }
  });
  double total = 0.0;
  for (int t = 0; t < threads; ++t) total += rate[size_t(t)];
  return total / 1e9;
}

double best_peak_gflops() {
  double best = 0.0;
  for (int attempt = 0; attempt < 3; ++attempt) best = std::max(best, measure_peak_gflops());
  return best;
}

struct Result {
  const Shape* shape;
  double ours_gflops, theirs_gflops, ratio;
};

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, samples = 7;
  std::string only, simd;
  safl::MatmulPrecision precision = safl::MatmulPrecision::Float32;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--threads" && has_value) {
      threads = std::atoi(argv[++i]);
    } else if (arg == "--samples" && has_value) {
      samples = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--only" && has_value) {
      only = argv[++i];
    } else if (arg == "--simd" && has_value && (std::string(argv[i + 1]) == "generic" ||
                                                 std::string(argv[i + 1]) == "avx2" ||
                                                 std::string(argv[i + 1]) == "avx512")) {
      simd = argv[++i];
    } else if (arg == "--precision" && has_value && (std::string(argv[i + 1]) == "float32" ||
                                                      std::string(argv[i + 1]) == "bfloat16")) {
      precision = std::string(argv[++i]) == "bfloat16" ? safl::MatmulPrecision::BFloat16 : safl::MatmulPrecision::Float32;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--threads N] [--samples S] [--simd generic|avx2|avx512] [--precision float32|bfloat16] "
                   "[--only substring]\n",
                   argv[0]);
      return 2;
    }
  }
  try {
    safl::set_num_threads(threads);
    if (!simd.empty()) {
      const safl::SimdLevel level = simd == "generic" ? safl::SimdLevel::Generic
                                    : simd == "avx2"  ? safl::SimdLevel::Avx2
                                                      : safl::SimdLevel::Avx512;
      safl::set_simd_level(level);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
#ifdef SAFL_BENCH_OPENBLAS
  openblas_set_num_threads(threads);
  const bool with_openblas = true;
#else
  const bool with_openblas = false;
#endif
  // The peak is re-measured before every shape and the best value kept: a loaded machine only
  // ever makes it look lower.
  double peak = best_peak_gflops();
  const safl::MatmulPrecisionScope precision_scope(precision);
  const bool bfloat16_used = safl::bfloat16_products_this_call();

  std::vector<Result> results;
  for (const Shape& s : kShapes) {
    if (!only.empty() && std::string(s.label).find(only) == std::string::npos) continue;
    peak = std::max(peak, measure_peak_gflops());
    const int64_t lda = s.trans_a ? s.M : s.K, ldb = s.trans_b ? s.K : s.N;
    std::vector<float> A(size_t(s.M * s.K)), B(size_t(s.K * s.N)), C(size_t(s.M * s.N));
    for (size_t i = 0; i < A.size(); ++i) A[i] = float(int(i % 17) - 8) * 0.01f;
    for (size_t i = 0; i < B.size(); ++i) B[i] = float(int(i % 13) - 6) * 0.01f;
    const double flops = 2.0 * double(s.M) * double(s.N) * double(s.K);
    auto ours = [&] {
      safl::cpu::sgemm(C.data(), s.N, A.data(), lda, s.trans_a, B.data(), ldb, s.trans_b, s.M, s.N,
                       s.K, 1.0f, 0.0f);
    };
    std::vector<double> ours_gf, theirs_gf, ratios;
    for (int r = 0; r < samples; ++r) {
      ours_gf.push_back(flops / time_per_call(ours) / 1e9);
#ifdef SAFL_BENCH_OPENBLAS
      theirs_gf.push_back(flops / time_per_call([&] {
                            cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans,
                                        s.trans_b ? CblasTrans : CblasNoTrans, int(s.M), int(s.N),
                                        int(s.K), 1.0f, A.data(), int(lda), B.data(), int(ldb),
                                        0.0f, C.data(), int(s.N));
                          }) / 1e9);
      ratios.push_back(ours_gf.back() / theirs_gf.back());
      std::this_thread::sleep_for(std::chrono::milliseconds(150));  // Note [OpenBLAS threads spin]
#endif
    }
    results.push_back({&s, median(ours_gf), with_openblas ? median(theirs_gf) : 0.0,
                       with_openblas ? median(ratios) : 0.0});
  }

  std::printf("sgemm, %d threads, SIMD %s, safl's products in %s, %d alternating samples per shape (each >= 20 ms)\n",
              threads, safl::simd_level_name(safl::simd_level()),
              bfloat16_used ? (std::string("bfloat16 (") + safl::bfloat16_matmul_unit() + ")").c_str() : "float32", samples);
  std::printf("GFLOP/s: median over samples; ratio: median of the per-sample ratios safl / OpenBLAS\n");
  if (peak > 0.0) {
    std::printf("peak %.0f GFLOP/s: best FMA-loop rate at this SIMD width on %d threads\n", peak, threads);
  }
  if (!with_openblas) std::printf("OpenBLAS: not built in (install libopenblas-dev and rebuild)\n");
  std::printf("\n%-34s %5s %6s %5s %2s | %7s %8s %6s %6s\n", "shape (batch 64)", "M", "N", "K", "tr",
              "safl", "OpenBLAS", "ratio", "%peak");
  for (const Result& r : results) {
    const Shape& s = *r.shape;
    std::printf("%-34s %5lld %6lld %5lld %c%c | %7.1f", s.label, (long long)s.M, (long long)s.N,
                (long long)s.K, s.trans_a ? 'T' : 'N', s.trans_b ? 'T' : 'N', r.ours_gflops);
    if (with_openblas) {
      std::printf(" %8.1f %6.2f", r.theirs_gflops, r.ratio);
    } else {
      std::printf(" %8s %6s", "-", "-");
    }
    if (peak > 0.0) std::printf(" %5.0f%%", 100.0 * r.ours_gflops / peak);
    std::printf("\n");
  }
  if (with_openblas && !results.empty()) {
    double log_sum = 0.0, lowest = results[0].ratio;
    for (const Result& r : results) {
      log_sum += std::log(r.ratio);
      lowest = std::min(lowest, r.ratio);
    }
    std::printf("\nratio: geometric mean %.2f, lowest %.2f\n", std::exp(log_sum / double(results.size())), lowest);
  }
  return 0;
}
