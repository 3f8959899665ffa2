// CPU linear layer (see ops/linear.h): two or three sgemm calls and a bias pass.
#include "ops/linear.h"

#include <vector>

#include "common/error.h"
#include "common/threadpool.h"
#include "ops/gemm.h"

namespace safl::cpu {
namespace {

void check_sizes(const char* op, int64_t N, int64_t in_features, int64_t out_features) {
  SAFL_CHECK_RANGE(N >= 0, op, ": expected N >= 0 but received ", N);
  SAFL_CHECK_RANGE(in_features >= 0, op, ": expected in_features >= 0 but received ", in_features);
  SAFL_CHECK_RANGE(out_features >= 0, op, ": expected out_features >= 0 but received ", out_features);
}

}  // namespace

void linear_forward(float* out, const float* x, const float* weight, const float* bias, int64_t N,
                    int64_t in_features, int64_t out_features) {
  check_sizes("linear_forward", N, in_features, out_features);
  if (N == 0 || out_features == 0) return;
  if (bias) {
    parallel_for(0, N, 256, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n)
        for (int64_t o = 0; o < out_features; ++o) out[n * out_features + o] = bias[o];
    });
  }
  sgemm(out, out_features, x, in_features, false, weight, in_features, true, N, out_features,
        in_features, 1.0f, bias ? 1.0f : 0.0f);
}

void linear_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, int64_t N, int64_t in_features, int64_t out_features) {
  check_sizes("linear_backward", N, in_features, out_features);
  if (dx && N > 0 && in_features > 0)  // dx = dout · W
    sgemm(dx, in_features, dout, out_features, false, weight, in_features, false, N, in_features,
          out_features, 1.0f, 0.0f);
  if (N == 0 || out_features == 0) return;
  if (in_features > 0)  // dW += doutᵀ · x
    sgemm(dweight, in_features, dout, out_features, true, x, in_features, false, out_features,
          in_features, N, 1.0f, 1.0f);
  if (dbias) {  // db += column sums of dout, in double, each column by one task
    parallel_for(0, out_features, 64, [&](int64_t lo, int64_t hi) {
      std::vector<double> sums(hi - lo, 0.0);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t o = lo; o < hi; ++o) sums[o - lo] += dout[n * out_features + o];
      for (int64_t o = lo; o < hi; ++o) dbias[o] += float(sums[o - lo]);
    });
  }
}

}  // namespace safl::cpu
