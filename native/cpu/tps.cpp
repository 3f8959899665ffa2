// TPS grid generator, CPU: the host setup (fiducial points, system matrix, its Gauss-Jordan
// inverse, the precomputed M of Note [TPS as one matrix]) and the CPU grid forward/backward.
// Backward writes dcontrol_points (=). See native/ops/tps.h for the notes this file follows.
#include "ops/tps.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"
#include "ops/sampler_math.h"

namespace safl {
namespace {

void check_fiducial_count(const char* op, int64_t K) {
  SAFL_CHECK_RANGE(K >= 4 && K % 2 == 0, op, ": expected an even K >= 4 but received ", K);
}

// Inverts the n×n row-major matrix `a` (destroyed) into `inverse` by Gauss-Jordan elimination
// with partial pivoting, in double. A pivot below 1e-12 of the largest entry means singular.
void invert_matrix(double* a /* (n, n) */, double* inverse /* (n, n) */, int64_t n, const char* op) {
  std::fill(inverse, inverse + n * n, 0.0);
  for (int64_t i = 0; i < n; ++i) inverse[i * n + i] = 1.0;
  double largest = 0.0;
  for (int64_t i = 0; i < n * n; ++i) largest = std::max(largest, std::fabs(a[i]));
  const double tiny = 1e-12 * largest;
  for (int64_t col = 0; col < n; ++col) {
    int64_t pivot = col;
    for (int64_t r = col + 1; r < n; ++r)
      if (std::fabs(a[r * n + col]) > std::fabs(a[pivot * n + col])) pivot = r;
    const double pivot_value = a[pivot * n + col];
    SAFL_CHECK(std::fabs(pivot_value) > tiny, op,
               ": the target control points give a singular TPS system matrix (repeated or collinear "
               "points, or non-finite values)");
    if (pivot != col) {
      std::swap_ranges(a + pivot * n, a + (pivot + 1) * n, a + col * n);
      std::swap_ranges(inverse + pivot * n, inverse + (pivot + 1) * n, inverse + col * n);
    }
    const double scale = 1.0 / pivot_value;
    for (int64_t j = 0; j < n; ++j) {
      a[col * n + j] *= scale;
      inverse[col * n + j] *= scale;
    }
    for (int64_t r = 0; r < n; ++r) {
      const double factor = a[r * n + col];
      if (r == col || factor == 0.0) continue;
      for (int64_t j = 0; j < n; ++j) {
        a[r * n + j] -= factor * a[col * n + j];
        inverse[r * n + j] -= factor * inverse[col * n + j];
      }
    }
  }
}

double squared_distance(double ax, double ay, double bx, double by) {
  return (ax - bx) * (ax - bx) + (ay - by) * (ay - by);
}

// Coordinate of grid line i of n along one axis: i/(n-1), and 0 when n == 1.
double grid_line(int64_t i, int64_t n) { return n > 1 ? double(i) / double(n - 1) : 0.0; }

}  // namespace

void fiducial_points(float* points, int64_t K, double margin) {
  check_fiducial_count("fiducial_points", K);
  SAFL_CHECK_RANGE(margin >= 0.0 && margin < 0.5, "fiducial_points: expected 0 <= margin < 0.5 but received ",
                   margin);
  const int64_t per_row = K / 2;
  for (int64_t i = 0; i < per_row; ++i) {
    const double x = margin + (1.0 - 2.0 * margin) * double(i) / double(per_row - 1);
    points[2 * i] = float(x);
    points[2 * i + 1] = float(margin);
    points[2 * (per_row + i)] = float(x);
    points[2 * (per_row + i) + 1] = float(1.0 - margin);
  }
}

int64_t tps_grid_matrix_size(int64_t K, int64_t H, int64_t W) {
  check_fiducial_count("tps_grid_matrix_size", K);
  SAFL_CHECK_RANGE(H >= 0, "tps_grid_matrix_size: expected H >= 0 but received ", H);
  SAFL_CHECK_RANGE(W >= 0, "tps_grid_matrix_size: expected W >= 0 but received ", W);
  return H * W * K;
}

void tps_grid_matrix_for_points(float* M, const float* target_points, int64_t K, int64_t H, int64_t W) {
  const char* op = "tps_grid_matrix_for_points";
  check_fiducial_count(op, K);
  SAFL_CHECK_RANGE(H >= 0, op, ": expected H >= 0 but received ", H);
  SAFL_CHECK_RANGE(W >= 0, op, ": expected W >= 0 but received ", W);
  const int64_t n = K + 3;
  const std::vector<double> target(target_points, target_points + 2 * K);
  const double* c = target.data();  // (K, 2)

  // L = [[U(C,C), 1, C], [1ᵀ, 0, 0], [Cᵀ, 0, 0]], row-major (K+3)×(K+3); L is symmetric.
  std::vector<double> system(static_cast<size_t>(n * n), 0.0), inverse(static_cast<size_t>(n * n));
  double* L = system.data();
  for (int64_t i = 0; i < K; ++i) {
    for (int64_t j = 0; j < K; ++j)
      L[i * n + j] = tps_kernel_from_squared(squared_distance(c[2 * i], c[2 * i + 1], c[2 * j], c[2 * j + 1]));
    const double affine[3] = {1.0, c[2 * i], c[2 * i + 1]};
    for (int64_t t = 0; t < 3; ++t) L[i * n + K + t] = L[(K + t) * n + i] = affine[t];
  }
  invert_matrix(L, inverse.data(), n, op);
  const double* L_inv = inverse.data();

  // M[p, k] = Σ_t R[p, t] · L⁻¹[t, k] for k < K, with R_p = [U(p,C), 1, p].
  std::vector<double> r(static_cast<size_t>(n));
  for (int64_t i = 0; i < H; ++i) {
    for (int64_t j = 0; j < W; ++j) {
      const double px = grid_line(j, W), py = grid_line(i, H);
      for (int64_t k = 0; k < K; ++k) r[k] = tps_kernel_from_squared(squared_distance(px, py, c[2 * k], c[2 * k + 1]));
      r[K] = 1.0;
      r[K + 1] = px;
      r[K + 2] = py;
      float* m_row = M + (i * W + j) * K;
      for (int64_t k = 0; k < K; ++k) {
        double acc = 0.0;
        for (int64_t t = 0; t < n; ++t) acc += r[t] * L_inv[t * n + k];
        m_row[k] = float(acc);
      }
    }
  }
}

void tps_grid_matrix(float* M, int64_t K, int64_t H, int64_t W) {
  check_fiducial_count("tps_grid_matrix", K);
  SAFL_CHECK_RANGE(H >= 0, "tps_grid_matrix: expected H >= 0 but received ", H);
  SAFL_CHECK_RANGE(W >= 0, "tps_grid_matrix: expected W >= 0 but received ", W);
  std::vector<float> target(static_cast<size_t>(2 * K));
  fiducial_points(target.data(), K, kTpsTargetMargin);
  tps_grid_matrix_for_points(M, target.data(), K, H, W);
}

namespace detail {
void check_tps_grid_sizes(const char* op, int64_t B, int64_t K, int64_t H, int64_t W) {
  SAFL_CHECK_RANGE(B >= 0, op, ": expected B >= 0 but received ", B);
  check_fiducial_count(op, K);
  SAFL_CHECK_RANGE(H >= 0, op, ": expected H >= 0 but received ", H);
  SAFL_CHECK_RANGE(W >= 0, op, ": expected W >= 0 but received ", W);
}
}  // namespace detail

namespace cpu {

void tps_grid_forward(float* grid, const float* control_points, const float* grid_matrix, int64_t B, int64_t K,
                      int64_t H, int64_t W) {
  detail::check_tps_grid_sizes("tps_grid_forward", B, K, H, W);
  const int64_t pixels = H * W;
  // One task per (image, pixel): both coordinates from one row of M (Note [TPS products as plain loops]).
  parallel_for(0, B * pixels, 1024, [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const float* m_row = grid_matrix + (n % pixels) * K;
      const float* points = control_points + (n / pixels) * K * 2;
      grid[2 * n] = tps_grid_value(tps_raw_coordinate(m_row, points, K, 0));
      grid[2 * n + 1] = tps_grid_value(tps_raw_coordinate(m_row, points, K, 1));
    }
  });
}

void tps_grid_backward(float* dcontrol_points, const float* dgrid, const float* control_points,
                       const float* grid_matrix, int64_t B, int64_t K, int64_t H, int64_t W) {
  detail::check_tps_grid_sizes("tps_grid_backward", B, K, H, W);
  const int64_t pixels = H * W;
  // One task per image: it owns dcontrol_points[b]; the clamp decision is recomputed from M · C′.
  // The H·W-term sums run in double, so that this reference is accurate to float rounding.
  parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<double> sums(static_cast<size_t>(2 * K));
    for (int64_t b = lo; b < hi; ++b) {
      const float* points = control_points + b * K * 2;
      std::fill(sums.begin(), sums.end(), 0.0);
      for (int64_t p = 0; p < pixels; ++p) {
        const float* m_row = grid_matrix + p * K;
        const float* dg = dgrid + (b * pixels + p) * 2;
        const double gx = tps_grid_backprop(tps_raw_coordinate(m_row, points, K, 0), dg[0]);
        const double gy = tps_grid_backprop(tps_raw_coordinate(m_row, points, K, 1), dg[1]);
        for (int64_t k = 0; k < K; ++k) {
          sums[2 * k] += m_row[k] * gx;
          sums[2 * k + 1] += m_row[k] * gy;
        }
      }
      for (int64_t i = 0; i < 2 * K; ++i) dcontrol_points[b * K * 2 + i] = float(sums[i]);
    }
  });
}

}  // namespace cpu
}  // namespace safl
