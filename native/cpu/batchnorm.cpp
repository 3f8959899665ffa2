// CPU batch normalisation (see ops/batchnorm.h): training and inference forward, backward, and
// folding into the preceding layer. Work is spread over channels (training forward, backward) or
// over (b, c) planes (inference forward); per-channel sums are accumulated in double.
//
// Note [interleaved partial sums]: a sum in double of one running total waits a full add latency
// per element (a channel of the stem holds 200 000 values per batch of 64). The channel sums are
// therefore kept as kPartials interleaved partial sums, element i going to partial i mod
// kPartials, which the compiler turns into independent vector adds; the partials are added at
// the end. The order is fixed, so results still do not depend on the thread count.
#include "ops/batchnorm.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "common/threadpool.h"

namespace safl::cpu {
namespace {

void check_sizes(const char* op, int64_t B, int64_t C, int64_t H, int64_t W) {
  SAFL_CHECK_RANGE(B >= 0, op, ": expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(C >= 0, op, ": expected C >= 0 but received ", C);
  SAFL_CHECK_RANGE(H >= 0, op, ": expected H >= 0 but received ", H);
  SAFL_CHECK_RANGE(W >= 0, op, ": expected W >= 0 but received ", W);
}

void check_eps(const char* op, float eps) {
  SAFL_CHECK_RANGE(eps > 0.0f && std::isfinite(eps), op, ": expected eps > 0 but received ", eps);
}

constexpr int kPartials = 8;  // Note [interleaved partial sums]

// Interleaved partial sums over one channel's values, plane after plane.
struct PartialSums {
  double part[kPartials] = {};
  double total() const {
    double sum = 0.0;
    for (int l = 0; l < kPartials; ++l) sum += part[l];
    return sum;
  }
};

// sum += Σ x[i] over n values.
void add_values(PartialSums& sum, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + kPartials <= n; i += kPartials)
    for (int l = 0; l < kPartials; ++l) sum.part[l] += double(x[i + l]);
  for (; i < n; ++i) sum.part[i % kPartials] += double(x[i]);
}

// sum += Σ (x[i] − mean)² over n values.
void add_squared_deviations(PartialSums& sum, const float* x, int64_t n, double mean) {
  int64_t i = 0;
  for (; i + kPartials <= n; i += kPartials) {
    for (int l = 0; l < kPartials; ++l) {
      const double d = double(x[i + l]) - mean;
      sum.part[l] += d * d;
    }
  }
  for (; i < n; ++i) {
    const double d = double(x[i]) - mean;
    sum.part[i % kPartials] += d * d;
  }
}

// dy_sum += Σ dy[i], dy_xhat_sum += Σ dy[i]·x̂[i] with x̂ = (x − mean)·inv_std, over n values.
void add_gradient_sums(PartialSums& dy_sum, PartialSums& dy_xhat_sum, const float* dy, const float* x,
                       int64_t n, double mean, double inv_std) {
  double dy_part[kPartials], dy_xhat_part[kPartials];  // locals, so that they stay in registers
  std::copy(dy_sum.part, dy_sum.part + kPartials, dy_part);
  std::copy(dy_xhat_sum.part, dy_xhat_sum.part + kPartials, dy_xhat_part);
  int64_t i = 0;
  for (; i + kPartials <= n; i += kPartials) {
    for (int l = 0; l < kPartials; ++l) {
      const double g = dy[i + l];
      dy_part[l] += g;
      dy_xhat_part[l] += g * ((double(x[i + l]) - mean) * inv_std);
    }
  }
  for (; i < n; ++i) {
    const double g = dy[i];
    dy_part[i % kPartials] += g;
    dy_xhat_part[i % kPartials] += g * ((double(x[i]) - mean) * inv_std);
  }
  std::copy(dy_part, dy_part + kPartials, dy_sum.part);
  std::copy(dy_xhat_part, dy_xhat_part + kPartials, dy_xhat_sum.part);
}

// Chunks of channels (or planes) holding about this many values make one task.
int64_t grain_for(int64_t values_per_item) {
  constexpr int64_t kValuesPerChunk = 16384;
  return std::max<int64_t>(1, kValuesPerChunk / std::max<int64_t>(1, values_per_item));
}

}  // namespace

void batchnorm_forward_train(float* out, float* saved_mean, float* saved_inv_std,
                             float* running_mean, float* running_var, const float* x,
                             const float* gamma, const float* beta, int64_t B, int64_t C, int64_t H,
                             int64_t W, float eps, float momentum) {
  const char* op = "batchnorm_forward_train";
  check_sizes(op, B, C, H, W);
  check_eps(op, eps);
  SAFL_CHECK_RANGE(momentum >= 0.0f && momentum <= 1.0f, op,
                   ": expected 0 <= momentum <= 1 but received ", momentum);
  const int64_t HW = H * W, n = B * HW;
  SAFL_CHECK_RANGE(n != 1, op, ": expected more than 1 value per channel (B*H*W) but received 1");
  if (n == 0) return;
  parallel_for(0, C, grain_for(n), [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      PartialSums sum, squares;  // Note [interleaved partial sums]
      for (int64_t b = 0; b < B; ++b) add_values(sum, x + (b * C + c) * HW, HW);
      const double mean = sum.total() / double(n);
      for (int64_t b = 0; b < B; ++b) add_squared_deviations(squares, x + (b * C + c) * HW, HW, mean);
      const double var = squares.total() / double(n);
      const float inv_std = float(1.0 / std::sqrt(var + double(eps)));
      saved_mean[c] = float(mean);
      saved_inv_std[c] = inv_std;
      running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * float(mean);
      running_var[c] = (1.0f - momentum) * running_var[c] + momentum * float(squares.total() / double(n - 1));
      const float mean_f = float(mean), scale = gamma[c] * inv_std, shift = beta[c];
      for (int64_t b = 0; b < B; ++b) {
        const float* src = x + (b * C + c) * HW;
        float* dst = out + (b * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) dst[i] = (src[i] - mean_f) * scale + shift;
      }
    }
  });
}

void batchnorm_forward_inference(float* out, const float* x, const float* gamma, const float* beta,
                                 const float* running_mean, const float* running_var, int64_t B,
                                 int64_t C, int64_t H, int64_t W, float eps) {
  const char* op = "batchnorm_forward_inference";
  check_sizes(op, B, C, H, W);
  check_eps(op, eps);
  const int64_t HW = H * W;
  parallel_for(0, B * C, grain_for(HW), [&](int64_t lo, int64_t hi) {
    for (int64_t plane = lo; plane < hi; ++plane) {
      const int64_t c = plane % C;
      const float mean = running_mean[c], scale = gamma[c] / std::sqrt(running_var[c] + eps);
      const float shift = beta[c];
      const float* src = x + plane * HW;
      float* dst = out + plane * HW;
      for (int64_t i = 0; i < HW; ++i) dst[i] = (src[i] - mean) * scale + shift;
    }
  });
}

// With x̂ = (x − mean)·inv_std and n values per channel:
//     dbeta = Σ dy,  dgamma = Σ dy·x̂,  dx = gamma·inv_std·(dy − dbeta/n − x̂·dgamma/n).
// The sums are complete before any dx is written, so dx may overwrite dout.
void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* saved_mean,
                        const float* saved_inv_std, const float* dout, const float* x,
                        const float* gamma, int64_t B, int64_t C, int64_t H, int64_t W) {
  check_sizes("batchnorm_backward", B, C, H, W);
  const int64_t HW = H * W, n = B * HW;
  if (n == 0) return;
  parallel_for(0, C, grain_for(n), [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      const float mean = saved_mean[c], inv_std = saved_inv_std[c];
      PartialSums dy_sum, dy_xhat_sum;  // Note [interleaved partial sums]
      for (int64_t b = 0; b < B; ++b)
        add_gradient_sums(dy_sum, dy_xhat_sum, dout + (b * C + c) * HW, x + (b * C + c) * HW, HW, mean, inv_std);
      const double sum_dy = dy_sum.total(), sum_dy_xhat = dy_xhat_sum.total();
      dbeta[c] += float(sum_dy);
      dgamma[c] += float(sum_dy_xhat);
      const float scale = gamma[c] * inv_std;
      const float mean_dy = float(sum_dy / double(n));
      const float mean_dy_xhat = float(sum_dy_xhat / double(n));
      for (int64_t b = 0; b < B; ++b) {
        const float* dy = dout + (b * C + c) * HW;
        const float* xs = x + (b * C + c) * HW;
        float* dst = dx + (b * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) {
          const float xhat = (xs[i] - mean) * inv_std;
          dst[i] = scale * (dy[i] - mean_dy - xhat * mean_dy_xhat);
        }
      }
    }
  });
}

void batchnorm_fold(float* folded_weight, float* folded_bias, const float* weight, const float* bias,
                    const float* gamma, const float* beta, const float* running_mean,
                    const float* running_var, int64_t Co, int64_t weights_per_channel, float eps) {
  const char* op = "batchnorm_fold";
  SAFL_CHECK_RANGE(Co >= 0, op, ": expected Co >= 0 but received ", Co);
  SAFL_CHECK_RANGE(weights_per_channel >= 0, op,
                   ": expected weights_per_channel >= 0 but received ", weights_per_channel);
  check_eps(op, eps);
  for (int64_t co = 0; co < Co; ++co) {
    const float scale = gamma[co] / std::sqrt(running_var[co] + eps);
    for (int64_t i = 0; i < weights_per_channel; ++i)
      folded_weight[co * weights_per_channel + i] = weight[co * weights_per_channel + i] * scale;
    const float b = bias ? bias[co] : 0.0f;
    folded_bias[co] = (b - running_mean[co]) * scale + beta[co];
  }
}

}  // namespace safl::cpu
