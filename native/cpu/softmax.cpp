// CPU softmax and log-softmax over rows (see ops/softmax.h), one row per iteration, rows spread
// over the thread pool. Sums run in float, in index order.
#include "ops/softmax.h"

#include <cmath>

#include "common/error.h"
#include "common/threadpool.h"

namespace safl::cpu {
namespace {

void check_sizes(const char* op, int64_t N, int64_t C) {
  SAFL_CHECK_RANGE(N >= 0, op, ": expected N >= 0 but received ", N);
  SAFL_CHECK_RANGE(C >= 1, op, ": expected C >= 1 but received ", C);
}

int64_t rows_per_task(int64_t C) { return C >= 4096 ? 1 : 4096 / C; }

// The row's maximum and log Σ exp(x - max).
void row_max_and_log_sum(const float* x, int64_t C, float* max_out, float* log_sum_out) {
  float max = x[0];
  for (int64_t c = 1; c < C; ++c) max = x[c] > max ? x[c] : max;
  float sum = 0.0f;
  for (int64_t c = 0; c < C; ++c) sum += std::exp(x[c] - max);
  *max_out = max;
  *log_sum_out = std::log(sum);
}

}  // namespace

void log_softmax_forward(float* out, const float* x, int64_t N, int64_t C) {
  check_sizes("log_softmax_forward", N, C);
  parallel_for(0, N, rows_per_task(C), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const float* xr = x + n * C;
      float max, log_sum;
      row_max_and_log_sum(xr, C, &max, &log_sum);
      for (int64_t c = 0; c < C; ++c) out[n * C + c] = (xr[c] - max) - log_sum;
    }
  });
}

void log_softmax_backward(float* dx, const float* dout, const float* out, int64_t N, int64_t C) {
  check_sizes("log_softmax_backward", N, C);
  parallel_for(0, N, rows_per_task(C), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      float sum = 0.0f;
      for (int64_t c = 0; c < C; ++c) sum += dout[n * C + c];
      for (int64_t c = 0; c < C; ++c)
        dx[n * C + c] = dout[n * C + c] - std::exp(out[n * C + c]) * sum;
    }
  });
}

void softmax_forward(float* probs, const float* x, int64_t N, int64_t C) {
  check_sizes("softmax_forward", N, C);
  parallel_for(0, N, rows_per_task(C), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const float* xr = x + n * C;
      float max, log_sum;
      row_max_and_log_sum(xr, C, &max, &log_sum);
      for (int64_t c = 0; c < C; ++c) probs[n * C + c] = std::exp((xr[c] - max) - log_sum);
    }
  });
}

}  // namespace safl::cpu
