// CPU layer normalisation (see ops/layernorm.h). Rows are spread over the thread pool; the
// statistics and the per-row reductions of the backward are accumulated in double. The parameter
// gradients are reduced column by column (each column by one task, rows in order), so they are
// deterministic whatever the number of threads.
//
// Note [interleaved row sums]: a row's sums in double are kept as kPartials interleaved partial
// sums (element d goes to partial d mod kPartials) added at the end, so that the adds do not wait
// for each other (one running total costs a full add latency per element) and vectorise.
#include "ops/layernorm.h"

#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"

namespace safl::cpu {
namespace {

void check_sizes(const char* op, int64_t N, int64_t D) {
  SAFL_CHECK_RANGE(N >= 0, op, ": expected N >= 0 but received ", N);
  SAFL_CHECK_RANGE(D >= 1, op, ": expected D >= 1 but received ", D);
}

int64_t rows_per_task(int64_t D) { return D >= 4096 ? 1 : 4096 / D; }

constexpr int kPartials = 8;  // Note [interleaved row sums]

double total(const double* part) {
  double sum = 0.0;
  for (int l = 0; l < kPartials; ++l) sum += part[l];
  return sum;
}

// Σ x[d] over a row, in double.
double row_sum(const float* x, int64_t D) {
  double part[kPartials] = {};
  int64_t d = 0;
  for (; d + kPartials <= D; d += kPartials)
    for (int l = 0; l < kPartials; ++l) part[l] += double(x[d + l]);
  for (; d < D; ++d) part[d % kPartials] += double(x[d]);
  return total(part);
}

// Σ (x[d] − mu)² over a row.
double row_squared_deviations(const float* x, int64_t D, double mu) {
  double part[kPartials] = {};
  int64_t d = 0;
  for (; d + kPartials <= D; d += kPartials) {
    for (int l = 0; l < kPartials; ++l) {
      const double v = double(x[d + l]) - mu;
      part[l] += v * v;
    }
  }
  for (; d < D; ++d) {
    const double v = double(x[d]) - mu;
    part[d % kPartials] += v * v;
  }
  return total(part);
}

// *sum_g = Σ g[d], *sum_g_xhat = Σ g[d]·x̂[d] over a row, with g = dy·gamma and x̂ = (x − mu)·rs.
void row_gradient_sums(const float* dy, const float* x, const float* gamma, int64_t D, float mu, float rs,
                       double* sum_g, double* sum_g_xhat) {
  double g_part[kPartials] = {}, g_xhat_part[kPartials] = {};
  int64_t d = 0;
  for (; d + kPartials <= D; d += kPartials) {
    for (int l = 0; l < kPartials; ++l) {
      const float g = dy[d + l] * gamma[d + l];
      g_part[l] += g;
      g_xhat_part[l] += double(g) * ((x[d + l] - mu) * rs);
    }
  }
  for (; d < D; ++d) {
    const float g = dy[d] * gamma[d];
    g_part[d % kPartials] += g;
    g_xhat_part[d % kPartials] += double(g) * ((x[d] - mu) * rs);
  }
  *sum_g = total(g_part);
  *sum_g_xhat = total(g_xhat_part);
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* gamma,
                       const float* beta, int64_t N, int64_t D, float eps) {
  check_sizes("layernorm_forward", N, D);
  SAFL_CHECK_RANGE(eps > 0.0f, "layernorm_forward: expected eps > 0 but received ", eps);
  parallel_for(0, N, rows_per_task(D), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const float* xr = x + n * D;
      const double mu = row_sum(xr, D) / double(D);
      const double squares = row_squared_deviations(xr, D, mu);
      const float row_mean = float(mu);
      const float row_rstd = float(1.0 / std::sqrt(squares / double(D) + double(eps)));
      float* yr = out + n * D;
      for (int64_t d = 0; d < D; ++d) yr[d] = (xr[d] - row_mean) * row_rstd * gamma[d] + beta[d];
      mean[n] = row_mean;
      rstd[n] = row_rstd;
    }
  });
}

// With x̂ = (x - mean) · rstd and g = dout · gamma:
//   dx = rstd · (g - mean(g) - x̂ · mean(g · x̂)),  dgamma += Σ_rows dout · x̂,  dbeta += Σ_rows dout.
// The parameter gradients are reduced first, so dx may be dout itself.
void layernorm_backward(float* dx, float* dgamma, float* dbeta, const float* dout, const float* x,
                        const float* mean, const float* rstd, const float* gamma, int64_t N,
                        int64_t D) {
  check_sizes("layernorm_backward", N, D);
  parallel_for(0, D, 64, [&](int64_t lo, int64_t hi) {
    std::vector<double> sum_dy_xhat(hi - lo, 0.0), sum_dy(hi - lo, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      const float mu = mean[n], rs = rstd[n];
      for (int64_t d = lo; d < hi; ++d) {
        const float dy = dout[n * D + d];
        sum_dy_xhat[d - lo] += double(dy) * ((x[n * D + d] - mu) * rs);
        sum_dy[d - lo] += dy;
      }
    }
    for (int64_t d = lo; d < hi; ++d) {
      dgamma[d] += float(sum_dy_xhat[d - lo]);
      dbeta[d] += float(sum_dy[d - lo]);
    }
  });
  parallel_for(0, N, rows_per_task(D), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const float* xr = x + n * D;
      const float* dyr = dout + n * D;
      const float mu = mean[n], rs = rstd[n];
      double sum_g, sum_g_xhat;
      row_gradient_sums(dyr, xr, gamma, D, mu, rs, &sum_g, &sum_g_xhat);
      const float mean_g = float(sum_g / double(D));
      const float mean_g_xhat = float(sum_g_xhat / double(D));
      float* dxr = dx + n * D;
      for (int64_t d = 0; d < D; ++d) {
        const float xhat = (xr[d] - mu) * rs;
        dxr[d] = rs * (dyr[d] * gamma[d] - mean_g - xhat * mean_g_xhat);
      }
    }
  });
}

}  // namespace safl::cpu
