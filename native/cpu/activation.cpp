// CPU ReLU and dropout (see ops/activation.h), spread over the thread pool in contiguous chunks.
#include "ops/activation.h"

#include "common/error.h"
#include "common/threadpool.h"

namespace safl::cpu {
namespace {

constexpr int64_t kElementsPerChunk = 16384;

void check_n(const char* op, int64_t n) {
  SAFL_CHECK_RANGE(n >= 0, op, ": expected n >= 0 but received ", n);
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
    for (int64_t i = lo; i < hi; ++i) dx[i] = out[i] > 0.0f ? dout[i] : 0.0f;
  });
}

void dropout_forward(float* out, float* mask, const float* x, int64_t n, float p, uint64_t seed) {
  check_n("dropout_forward", n);
  SAFL_CHECK_RANGE(p >= 0.0f && p < 1.0f, "dropout_forward: expected 0 <= p < 1 but received ", p);
  const float scale = 1.0f / (1.0f - p);
  parallel_for(0, n, kElementsPerChunk, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      mask[i] = dropout_keep(seed, uint64_t(i), p) ? scale : 0.0f;
      out[i] = x[i] * mask[i];
    }
  });
}

void dropout_backward(float* dx, const float* mask, const float* dout, int64_t n) {
  check_n("dropout_backward", n);
  parallel_for(0, n, kElementsPerChunk, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) dx[i] = dout[i] * mask[i];
  });
}

}  // namespace safl::cpu
