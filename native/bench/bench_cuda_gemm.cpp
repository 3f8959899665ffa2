// CUDA SGEMM benchmark: safl::cuda::sgemm (TF32 tensor cores, native/cuda/gemm.cu) on the
// products the tiny and base configs run at batch 64 — the shapes of bench_gemm.cpp — plus square
// matrices. Each sample times back-to-back calls with CUDA events for at least 20 ms; the table
// shows the median GFLOP/s over the samples and its share of the GPU's dense TF32 peak
// (Note [TF32 peak]).
//
// Note [TF32 peak]: peak = SMs × dense TF32 tensor-core FLOP per SM per clock × clock. An SM does
// 1024 such FLOP per clock on sm_80 (A100: 4 tensor cores × 128 TF32 multiply-adds) and 2048 on
// sm_90 (H100/H200: 4 × 256); other architectures print no share. The clock is
// cudaDevAttrClockRate, the highest boost clock (1980 MHz on an H100 or H200 SXM), so this peak
// is an upper bound the GPU reaches only while its power allows. NVIDIA's datasheet figure for
// the H100/H200 SXM, 494.7 TFLOP/s dense TF32, corresponds to 132 SMs × 2048 × 1.83 GHz; on such
// a GPU (sm_90 with 132 SMs) the share of that figure is printed too. The kernels use wmma
// (mma.sync), not Hopper's wgmma, which bounds what they can reach on sm_90 well below either.
//
// Without CUDA in the build, or without a usable GPU, the benchmark prints "no GPU: <reason>" and
// exits with status 0.
//
//   safl_bench_cuda_gemm [--samples S (7)] [--only substring]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#ifdef SAFL_WITH_CUDA
#include "cuda/cuda_check.h"
#include "ops/gemm.h"
#endif

namespace {

#ifdef SAFL_WITH_CUDA

struct Shape {
  const char* label;
  int64_t M, N, K;
  bool trans_a, trans_b;
};

// The shapes of bench_gemm.cpp: batch 64; convolutions by im2col (forward W · col, weight
// gradient dout · colᵀ, column gradient Wᵀ · dout); linear layers on 64 × 25 = 1600 tokens with
// weights stored (out, in).
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
    {"square 1024", 1024, 1024, 1024, false, false},
    {"square 2048", 2048, 2048, 2048, false, false},
    {"square 4096", 4096, 4096, 4096, false, false},
};

// Dense TF32 tensor-core FLOP per SM per clock (Note [TF32 peak]); 0 when unknown.
int tf32_flops_per_sm_clock(int major, int minor) {
  if (major == 8 && minor == 0) return 1024;
  if (major == 9 && minor == 0) return 2048;
  return 0;
}

// Seconds per call of fn, timed with CUDA events over enough calls to last at least 20 ms.
template <class Fn>
double seconds_per_call(Fn fn) {
  cudaEvent_t start, stop;
  SAFL_CUDA_CHECK(cudaEventCreate(&start));
  SAFL_CUDA_CHECK(cudaEventCreate(&stop));
  int calls = 1;
  double result = 0.0;
  for (;;) {
    SAFL_CUDA_CHECK(cudaEventRecord(start));
    for (int i = 0; i < calls; ++i) fn();
    SAFL_CUDA_CHECK(cudaEventRecord(stop));
    SAFL_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    SAFL_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (ms >= 20.0f) {
      result = double(ms) * 1e-3 / calls;
      break;
    }
    calls = ms <= 0.0f ? calls * 8 : std::max(calls * 2, int(calls * 25.0f / ms) + 1);
  }
  SAFL_CUDA_CHECK(cudaEventDestroy(start));
  SAFL_CUDA_CHECK(cudaEventDestroy(stop));
  return result;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int run(int samples, const std::string& only) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    std::printf("no GPU: %s\n", cudaGetErrorString(status));
    return 0;
  }
  if (count == 0) {
    std::printf("no GPU: no CUDA device found\n");
    return 0;
  }
  int device = 0;
  SAFL_CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  SAFL_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  int clock_khz = 0;
  SAFL_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device));
  const int per_sm_clock = tf32_flops_per_sm_clock(prop.major, prop.minor);
  const double peak_gflops = double(prop.multiProcessorCount) * per_sm_clock * double(clock_khz) * 1e3 / 1e9;
  const bool h100_class_sxm = prop.major == 9 && prop.minor == 0 && prop.multiProcessorCount == 132;
  const double datasheet_gflops = 494.7e3;

  std::printf("cuda::sgemm (TF32 tensor cores, FP32 accumulation) on %s: sm_%d%d, %d SMs, max clock %d MHz\n",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount, clock_khz / 1000);
  if (per_sm_clock > 0) {
    std::printf("dense TF32 peak %.1f TFLOP/s = %d SMs x %d FLOP/SM/clock x %.2f GHz (the reported max clock)\n",
                peak_gflops / 1e3, prop.multiProcessorCount, per_sm_clock, clock_khz / 1e6);
  } else {
    std::printf("dense TF32 peak: unknown for sm_%d%d, no share printed\n", prop.major, prop.minor);
  }
  if (h100_class_sxm) std::printf("datasheet: 494.7 TFLOP/s dense TF32 (H100/H200 SXM, 1.83 GHz)\n");
  std::printf("GFLOP/s: median of %d samples, each >= 20 ms of back-to-back calls timed with CUDA events\n\n",
              samples);
  std::printf("%-34s %5s %6s %5s %2s | %9s %7s%s\n", "shape (batch 64)", "M", "N", "K", "tr", "GFLOP/s",
              per_sm_clock > 0 ? "%peak" : "", h100_class_sxm ? " %datasheet" : "");

  for (const Shape& s : kShapes) {
    if (!only.empty() && std::string(s.label).find(only) == std::string::npos) continue;
    const int64_t lda = s.trans_a ? s.M : s.K, ldb = s.trans_b ? s.K : s.N;
    std::vector<float> A(size_t(s.M * s.K)), B(size_t(s.K * s.N));
    for (size_t i = 0; i < A.size(); ++i) A[i] = float(int(i % 17) - 8) * 0.01f;
    for (size_t i = 0; i < B.size(); ++i) B[i] = float(int(i % 13) - 6) * 0.01f;
    safl::cuda::DeviceBuffer<float> d_A(A), d_B(B), d_C(size_t(s.M * s.N));
    auto call = [&] {
      safl::cuda::sgemm(d_C.data(), s.N, d_A.data(), lda, s.trans_a, d_B.data(), ldb, s.trans_b, s.M, s.N, s.K,
                        1.0f, 0.0f);
    };
    call();  // warm-up: module load, shared-memory attribute
    SAFL_CUDA_CHECK(cudaDeviceSynchronize());
    const double flops = 2.0 * double(s.M) * double(s.N) * double(s.K);
    std::vector<double> gflops;
    for (int r = 0; r < samples; ++r) gflops.push_back(flops / seconds_per_call(call) / 1e9);
    const double g = median(gflops);
    std::printf("%-34s %5lld %6lld %5lld %c%c | %9.0f", s.label, (long long)s.M, (long long)s.N, (long long)s.K,
                s.trans_a ? 'T' : 'N', s.trans_b ? 'T' : 'N', g);
    if (per_sm_clock > 0) std::printf(" %6.1f%%", 100.0 * g / peak_gflops);
    if (h100_class_sxm) std::printf(" %10.1f%%", 100.0 * g / datasheet_gflops);
    std::printf("\n");
  }
  return 0;
}

#endif  // SAFL_WITH_CUDA

}  // namespace

int main(int argc, char** argv) {
  int samples = 7;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--samples" && has_value) {
      samples = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--only" && has_value) {
      only = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--samples S] [--only substring]\n", argv[0]);
      return 2;
    }
  }
#ifdef SAFL_WITH_CUDA
  try {
    return run(samples, only);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
#else
  static_cast<void>(samples);  // nothing to time without CUDA
  std::printf("no GPU: safl_bench_cuda_gemm was built without CUDA (link it to safl_core_cuda)\n");
  return 0;
#endif
}
