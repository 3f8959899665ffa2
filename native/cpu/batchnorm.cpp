// CPU batch normalisation (see ops/batchnorm.h): training and inference forward, backward, and
// folding into the preceding layer. Work is spread over channels (training forward, backward) or
// over (b, c) planes (inference forward); per-channel sums are carried in double (Note [block
// sums]).
//
// Note [block sums]: a channel's sums run over blocks of at most kBlock values. Within a block
// they are eight interleaved float partial sums (value i of the block goes to partial i mod 8,
// the last n mod 8 values to a ninth), two SIMD vectors; each block's partials are then added
// into the channel's total in double. A float partial sums at most kBlock / 8 values, so its
// rounding stays near float precision, and the long sum over a channel (200 000 values for the
// stem at batch 64) is carried in double. One running total in double instead waits a full add
// latency per value. The order is fixed, so results do not depend on the thread count.
#include "ops/batchnorm.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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

constexpr int64_t kBlock = 256;  // Note [block sums]

// Eight float partial sums as two 4-lane vectors (the GCC/Clang vector extension; SSE on every
// x86-64), so that the loops below compile to vector adds whatever the auto-vectoriser decides.
typedef float Lanes4 __attribute__((vector_size(16)));

Lanes4 load4(const float* p) {
  Lanes4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

float total_of(const Lanes4& a, const Lanes4& b, float tail) {
  float lanes[8];
  std::memcpy(lanes, &a, sizeof a);
  std::memcpy(lanes + 4, &b, sizeof b);
  float sum = 0.0f;
  for (const float v : lanes) sum += v;
  return sum + tail;
}

// Σ x[i] over n values.
double sum_of(const float* x, int64_t n) {
  double total = 0.0;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t end = std::min(n, start + kBlock);
    Lanes4 a = {}, b = {};
    int64_t i = start;
    for (; i + 8 <= end; i += 8) {
      a += load4(x + i);
      b += load4(x + i + 4);
    }
    float tail = 0.0f;
    for (; i < end; ++i) tail += x[i];
    total += total_of(a, b, tail);
  }
  return total;
}

// Σ (x[i] − mean)² over n values.
double sum_of_squared_deviations(const float* x, int64_t n, float mean) {
  double total = 0.0;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t end = std::min(n, start + kBlock);
    Lanes4 a = {}, b = {};
    int64_t i = start;
    for (; i + 8 <= end; i += 8) {
      const Lanes4 da = load4(x + i) - mean, db = load4(x + i + 4) - mean;
      a += da * da;
      b += db * db;
    }
    float tail = 0.0f;
    for (; i < end; ++i) tail += (x[i] - mean) * (x[i] - mean);
    total += total_of(a, b, tail);
  }
  return total;
}

// *dy_sum += Σ dy[i], *dy_xhat_sum += Σ dy[i]·x̂[i] with x̂ = (x − mean)·inv_std, over n values.
void add_gradient_sums(double* dy_sum, double* dy_xhat_sum, const float* dy, const float* x, int64_t n, float mean,
                       float inv_std) {
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t end = std::min(n, start + kBlock);
    Lanes4 g_a = {}, g_b = {}, gx_a = {}, gx_b = {};
    int64_t i = start;
    for (; i + 8 <= end; i += 8) {
      const Lanes4 ga = load4(dy + i), gb = load4(dy + i + 4);
      g_a += ga;
      g_b += gb;
      gx_a += ga * ((load4(x + i) - mean) * inv_std);
      gx_b += gb * ((load4(x + i + 4) - mean) * inv_std);
    }
    float g_tail = 0.0f, gx_tail = 0.0f;
    for (; i < end; ++i) {
      g_tail += dy[i];
      gx_tail += dy[i] * ((x[i] - mean) * inv_std);
    }
    *dy_sum += total_of(g_a, g_b, g_tail);
    *dy_xhat_sum += total_of(gx_a, gx_b, gx_tail);
  }
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
      double sum = 0.0, squares = 0.0;  // Note [block sums]
      for (int64_t b = 0; b < B; ++b) sum += sum_of(x + (b * C + c) * HW, HW);
      const double mean = sum / double(n);
      for (int64_t b = 0; b < B; ++b) squares += sum_of_squared_deviations(x + (b * C + c) * HW, HW, float(mean));
      const double var = squares / double(n);
      const float inv_std = float(1.0 / std::sqrt(var + double(eps)));
      saved_mean[c] = float(mean);
      saved_inv_std[c] = inv_std;
      running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * float(mean);
      running_var[c] = (1.0f - momentum) * running_var[c] + momentum * float(squares / double(n - 1));
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
      double sum_dy = 0.0, sum_dy_xhat = 0.0;  // Note [block sums]
      for (int64_t b = 0; b < B; ++b)
        add_gradient_sums(&sum_dy, &sum_dy_xhat, dout + (b * C + c) * HW, x + (b * C + c) * HW, HW, mean, inv_std);
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
