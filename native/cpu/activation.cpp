// CPU ReLU and dropout (see ops/activation.h), spread over the thread pool in contiguous chunks.
//
// Note [vectorised dropout mask]: the keep decision hashes each element's index with 64-bit
// integer multiplies (dropout_keep); the compiler vectorises that loop only where SIMD lanes
// multiply 64-bit integers (AVX-512 DQ). The same loop is therefore compiled a second time for
// that level and chosen at run time (as in Note [SIMD variants] of attention.cpp); it computes
// dropout_keep exactly, so the mask is the same bits either way.
#include "ops/activation.h"

#include "common/cpu_features.h"
#include "common/error.h"
#include "common/threadpool.h"

namespace safl::cpu {
namespace {

constexpr int64_t kElementsPerChunk = 16384;

void check_n(const char* op, int64_t n) {
  SAFL_CHECK_RANGE(n >= 0, op, ": expected n >= 0 but received ", n);
}

// Elements [lo, hi) of dropout_forward.
inline void dropout_range(float* out, float* mask, const float* x, int64_t lo, int64_t hi, float p, uint64_t seed,
                          float scale) {
  for (int64_t i = lo; i < hi; ++i) {
    mask[i] = dropout_keep(seed, uint64_t(i), p) ? scale : 0.0f;
    out[i] = x[i] * mask[i];
  }
}

using DropoutRangeFn = void (*)(float*, float*, const float*, int64_t, int64_t, float, uint64_t, float);

void dropout_range_generic(float* out, float* mask, const float* x, int64_t lo, int64_t hi, float p, uint64_t seed,
                           float scale) {
  dropout_range(out, mask, x, lo, hi, p, seed, scale);
}

#if defined(__x86_64__) || defined(__i386__)
#define SAFL_DROPOUT_AVX512DQ 1
__attribute__((target("avx512f,avx512dq,avx512vl"), flatten)) void dropout_range_avx512dq(
    float* out, float* mask, const float* x, int64_t lo, int64_t hi, float p, uint64_t seed, float scale) {
  dropout_range(out, mask, x, lo, hi, p, seed, scale);
}
#endif

// Note [vectorised dropout mask].
DropoutRangeFn dropout_kernel() {
#ifdef SAFL_DROPOUT_AVX512DQ
  static const bool has_dq = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  }();
  if (simd_level() == SimdLevel::Avx512 && has_dq) return dropout_range_avx512dq;
#endif
  return dropout_range_generic;
}

}  // namespace

void relu_forward(float* out, const float* x, int64_t n) {
  check_n("relu_forward", n);
  parallel_for(0, n, kElementsPerChunk, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) out[i] = x[i] < 0.0f ? 0.0f : x[i];  // NaN passes through
  });
}

void relu_backward(float* dx, const float* dout, const float* out, int64_t n) {
  check_n("relu_backward", n);
  parallel_for(0, n, kElementsPerChunk, [&](int64_t lo, int64_t hi) {
    // dout is read whatever the sign, so that the select vectorises (a load under the condition
    // would be a branch per element, mispredicted half the time).
    for (int64_t i = lo; i < hi; ++i) {
      const float d = dout[i];
      dx[i] = out[i] > 0.0f ? d : 0.0f;
    }
  });
}

void dropout_forward(float* out, float* mask, const float* x, int64_t n, float p, uint64_t seed) {
  check_n("dropout_forward", n);
  SAFL_CHECK_RANGE(p >= 0.0f && p < 1.0f, "dropout_forward: expected 0 <= p < 1 but received ", p);
  const float scale = 1.0f / (1.0f - p);
  const DropoutRangeFn kernel = dropout_kernel();
  parallel_for(0, n, kElementsPerChunk, [&](int64_t lo, int64_t hi) { kernel(out, mask, x, lo, hi, p, seed, scale); });
}

void dropout_backward(float* dx, const float* mask, const float* dout, int64_t n) {
  check_n("dropout_backward", n);
  parallel_for(0, n, kElementsPerChunk, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) dx[i] = dout[i] * mask[i];
  });
}

}  // namespace safl::cpu
