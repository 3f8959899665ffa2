// CUDA attention benchmark: safl::cuda::attention_forward and attention_backward on the shapes the
// tiny (4 heads) and base (8 heads) configs run at batch 64, Dh = 64: encoder self-attention over
// the 25 features and decoder causal self-attention over 26 tokens (q, k, v column blocks of one
// fused QKV projection), cross-attention of 26 tokens over 25 features (k, v from a fused KV
// projection), and one cached decoding step (T = 1 over a full 26-row cache; forward only).
// Each shape is timed with CUDA events over --iters back-to-back launches after a warm-up; the
// table shows the median of --samples such runs in µs per call and the bandwidth that would move
// every input and output once (the kernels are bound by memory and launch latency, not FLOPs).
//
//   safl_bench_cuda_attention [--iters N (200)] [--samples S (5)]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "ops/attention.h"

namespace {

using safl::cuda::DeviceBuffer;

struct Shape {
  const char* label;
  int64_t B, T, S, H, Dh;
  bool causal;
  int64_t q_columns;   // ld_q as a multiple of H·Dh: 3 for fused QKV, 1 alone
  int64_t kv_columns;  // ld_kv as a multiple of H·Dh: 3 fused QKV, 2 fused KV
  bool backward;
};

const Shape kShapes[] = {
    {"tiny encoder self 25x25", 64, 25, 25, 4, 64, false, 3, 3, true},
    {"tiny decoder self 26x26 causal", 64, 26, 26, 4, 64, true, 3, 3, true},
    {"tiny decoder cross 26x25", 64, 26, 25, 4, 64, false, 1, 2, true},
    {"tiny decoding step S=26", 64, 1, 26, 4, 64, true, 3, 2, false},
    {"base encoder self 25x25", 64, 25, 25, 8, 64, false, 3, 3, true},
    {"base decoder self 26x26 causal", 64, 26, 26, 8, 64, true, 3, 3, true},
    {"base decoder cross 26x25", 64, 26, 25, 8, 64, false, 1, 2, true},
    {"base decoding step S=26", 64, 1, 26, 8, 64, true, 3, 2, false},
};

DeviceBuffer<float> random_buffer(size_t n, unsigned seed) {
  std::vector<float> host(n);
  unsigned state = seed * 2654435761u + 1;
  for (float& x : host) {
    state = state * 1664525u + 1013904223u;
    x = float(state >> 8) / float(1u << 24) * 2.0f - 1.0f;
  }
  return DeviceBuffer<float>(host);
}

// Median over `samples` of the mean µs per call of `iters` back-to-back calls.
template <class Call>
double time_us(const Call& call, int iters, int samples) {
  for (int i = 0; i < 10; ++i) call();
  cudaEvent_t start, stop;
  SAFL_CUDA_CHECK(cudaEventCreate(&start));
  SAFL_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> times;
  for (int s = 0; s < samples; ++s) {
    SAFL_CUDA_CHECK(cudaEventRecord(start));
    for (int i = 0; i < iters; ++i) call();
    SAFL_CUDA_CHECK(cudaEventRecord(stop));
    SAFL_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    SAFL_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(1e3 * double(ms) / iters);
  }
  SAFL_CUDA_CHECK(cudaEventDestroy(start));
  SAFL_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void run(const Shape& s, int iters, int samples) {
  const int64_t width = s.H * s.Dh, ld_q = s.q_columns * width, ld_kv = s.kv_columns * width;
  const int64_t s_cap = s.S;
  DeviceBuffer<float> q = random_buffer(size_t(s.B * s.T * ld_q), 1);
  DeviceBuffer<float> kv = random_buffer(size_t(s.B * s_cap * ld_kv), 2);
  DeviceBuffer<float> dout = random_buffer(size_t(s.B * s.T * width), 3);
  DeviceBuffer<float> out(size_t(s.B * s.T * width)), lse(size_t(s.B * s.H * s.T));
  DeviceBuffer<float> dq(size_t(s.B * s.T * ld_q)), dkv(size_t(s.B * s_cap * ld_kv));
  // k and v are the last two column blocks of their buffer (the first one is q when fused).
  const int64_t k_col = (s.kv_columns - 2) * width, v_col = (s.kv_columns - 1) * width;
  const float* k = kv.data() + k_col;
  const float* v = kv.data() + v_col;
  auto forward = [&] {
    safl::cuda::attention_forward(out.data(), lse.data(), q.data(), k, v, s.B, s.T, s.S, s.H, s.Dh,
                                  ld_q, ld_kv, s_cap, s.causal);
  };
  auto backward = [&] {
    safl::cuda::attention_backward(dq.data(), dkv.data() + k_col, dkv.data() + v_col, out.data(),
                                   lse.data(), dout.data(), q.data(), k, v, s.B, s.T, s.S, s.H,
                                   s.Dh, ld_q, ld_kv, s_cap, s.causal);
  };
  const double q_bytes = 4.0 * double(s.B * s.T * width), kv_bytes = 8.0 * double(s.B * s.S * width);
  const double lse_bytes = 4.0 * double(s.B * s.H * s.T);
  const double forward_us = time_us(forward, iters, samples);
  const double forward_gbs = (2 * q_bytes + kv_bytes + lse_bytes) / forward_us * 1e-3;
  if (!s.backward) {
    std::printf("%-32s %10.2f %9.1f %10s %9s\n", s.label, forward_us, forward_gbs, "-", "-");
    return;
  }
  forward();
  const double backward_us = time_us(backward, iters, samples);
  const double backward_gbs = (4 * q_bytes + 2 * kv_bytes + lse_bytes) / backward_us * 1e-3;
  std::printf("%-32s %10.2f %9.1f %10.2f %9.1f\n", s.label, forward_us, forward_gbs, backward_us,
              backward_gbs);
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 200, samples = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--iters" && i + 1 < argc) {
      iters = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--samples" && i + 1 < argc) {
      samples = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--iters N] [--samples S]\n", argv[0]);
      return 2;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("safl_bench_cuda_attention: no GPU, nothing measured\n");
    return 0;
  }
  try {
    cudaDeviceProp prop;
    SAFL_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("CUDA attention on %s, batch 64, Dh 64, %d calls per sample, median of %d\n",
                prop.name, iters, samples);
    std::printf("%-32s %10s %9s %10s %9s\n", "shape", "fwd us", "fwd GB/s", "bwd us", "bwd GB/s");
    for (const Shape& s : kShapes) run(s, iters, samples);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
