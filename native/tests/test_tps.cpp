// TPS grid generator (native/ops/tps.h): fiducial layout, the identity and affine transforms
// reproduced exactly, clamping, gradient checks w.r.t. the control points (inside the image and
// with clamped entries, which must get zero gradient), 1×1 and zero-size shapes, argument errors,
// and CUDA-vs-CPU parity.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "ops/tps.h"
#include "tests/harness.h"

#ifdef SAFL_WITH_CUDA
#include "cuda/cuda_check.h"
#endif

namespace {

using safl::test::Guarded;
using safl::test::Rng;

// Coordinate i of n of the identity grid in [-1,1] (-1 for a size of 1).
double identity_coordinate(int64_t i, int64_t n) { return n > 1 ? 2.0 * double(i) / double(n - 1) - 1.0 : -1.0; }

// B copies of the fiducial points with `margin`, each mapped by v → 0.5 + (v − 0.5)·scale and
// moved by uniform noise in [-noise, noise).
std::vector<float> control_points(int64_t B, int64_t K, double margin, double scale, float noise, Rng& rng) {
  std::vector<float> base(size_t(2 * K));
  safl::fiducial_points(base.data(), K, margin);
  std::vector<float> points(size_t(B * 2 * K));
  for (size_t i = 0; i < points.size(); ++i)
    points[i] = float(0.5 + (base[i % base.size()] - 0.5) * scale) + (noise > 0 ? rng.uniform(-noise, noise) : 0.0f);
  return points;
}

std::vector<float> grid_matrix(int64_t K, int64_t H, int64_t W) {
  std::vector<float> M(size_t(safl::tps_grid_matrix_size(K, H, W)));
  safl::tps_grid_matrix(M.data(), K, H, W);
  return M;
}

// The raw grid M · C′ in double, (B, H·W, 2).
std::vector<double> raw_grid(const std::vector<float>& M, const std::vector<float>& points, int64_t B, int64_t K,
                             int64_t pixels) {
  std::vector<double> raw(size_t(B * pixels * 2), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t p = 0; p < pixels; ++p)
      for (int64_t c = 0; c < 2; ++c)
        for (int64_t k = 0; k < K; ++k)
          raw[size_t((b * pixels + p) * 2 + c)] += double(M[size_t(p * K + k)]) * points[size_t((b * K + k) * 2 + c)];
  return raw;
}

// The smallest distance of a raw grid value from the clamp edges 0 and 1, and how many are clamped.
double distance_to_clamp_edges(const std::vector<double>& raw, int64_t* clamped) {
  double nearest = 1.0;
  *clamped = 0;
  for (double v : raw) {
    nearest = std::min({nearest, std::fabs(v), std::fabs(v - 1.0)});
    *clamped += (v < 0.0 || v > 1.0);
  }
  return nearest;
}

// Gradient check of tps_grid_forward/backward w.r.t. the control points, loss = dot(grid, w).
// One step in C′ moves every pixel's raw value, so the float forward's rounding (~1e-7 per grid
// value, K-term sums) leaves ~1e-4 of noise in the central differences: the floor is raised to
// 5e-2 to keep small gradient entries from failing on noise alone. The grid is linear in C′
// between clamp kinks, so the step can be large as long as no raw value is within a step's
// reach, eps · max|M|, of 0 or 1: the check expects that first.
void check_tps_gradient(const char* name, std::vector<float>& points, const std::vector<float>& M, int64_t B,
                        int64_t K, int64_t H, int64_t W, Rng& rng) {
  safl::test::GradCheckOptions options;
  options.eps = 5e-3;
  options.floor = 5e-2;
  float largest_m = 0.0f;
  for (float m : M) largest_m = std::max(largest_m, std::fabs(m));
  int64_t clamped = 0;
  EXPECT(distance_to_clamp_edges(raw_grid(M, points, B, K, H * W), &clamped) > 1.5 * options.eps * largest_m);

  const size_t grid_size = size_t(B * H * W * 2);
  Guarded grid(grid_size), dpoints(points.size());
  std::vector<float> w(grid_size);
  rng.fill_uniform(w.data(), w.size());
  auto loss = [&] {
    safl::cpu::tps_grid_forward(grid.data(), points.data(), M.data(), B, K, H, W);
    return safl::test::dot(grid.data(), w.data(), grid_size);
  };
  auto backward = [&] {
    safl::cpu::tps_grid_backward(dpoints.data(), w.data(), points.data(), M.data(), B, K, H, W);
  };
  safl::test::gradcheck(name, {{"control_points", points.data(), dpoints.data(), points.size()}}, loss, backward,
                        options);
  EXPECT_GUARDS(grid, "grid");
  EXPECT_GUARDS(dpoints, "dcontrol_points");
  EXPECT_FINITE(dpoints.data(), dpoints.size());
}

}  // namespace

SAFL_TEST(tps_fiducial_points_layout) {
  std::vector<float> p(40);
  safl::fiducial_points(p.data(), 20, safl::kTpsTargetMargin);
  EXPECT_NEAR(p[0], 0.05, 1e-7);   // top row, first: (0.05, 0.05)
  EXPECT_NEAR(p[1], 0.05, 1e-7);
  EXPECT_NEAR(p[2], 0.15, 1e-7);   // x step 0.9 / 9
  EXPECT_NEAR(p[18], 0.95, 1e-7);  // top row, last: (0.95, 0.05)
  EXPECT_NEAR(p[19], 0.05, 1e-7);
  EXPECT_NEAR(p[20], 0.05, 1e-7);  // bottom row, first: (0.05, 0.95)
  EXPECT_NEAR(p[21], 0.95, 1e-7);
  EXPECT_NEAR(p[38], 0.95, 1e-7);
  EXPECT_NEAR(p[39], 0.95, 1e-7);
  std::vector<float> q(8);
  safl::fiducial_points(q.data(), 4, 0.0);
  const float expected[8] = {0, 0, 1, 0, 0, 1, 1, 1};
  EXPECT(std::equal(q.begin(), q.end(), expected));
}

SAFL_TEST(tps_identity_control_points_give_identity_grid) {
  Rng rng(1);
  struct Shape { int64_t K, H, W; };
  for (const Shape s : {Shape{20, 32, 100}, Shape{4, 5, 7}, Shape{6, 1, 1}, Shape{20, 3, 2}, Shape{8, 2, 9}}) {
    const int64_t B = 2, pixels = s.H * s.W;
    Guarded M(size_t(safl::tps_grid_matrix_size(s.K, s.H, s.W)));
    safl::tps_grid_matrix(M.data(), s.K, s.H, s.W);
    EXPECT_GUARDS(M, "M");
    EXPECT_FINITE(M.data(), M.size());
    // Each row of M sums to 1: the TPS reproduces constant maps.
    double worst_row_sum = 0.0;
    for (int64_t p = 0; p < pixels; ++p) {
      double sum = 0.0;
      for (int64_t k = 0; k < s.K; ++k) sum += M[size_t(p * s.K + k)];
      worst_row_sum = std::max(worst_row_sum, std::fabs(sum - 1.0));
    }
    EXPECT(worst_row_sum < 1e-5);

    const std::vector<float> points = control_points(B, s.K, safl::kTpsTargetMargin, 1.0, 0.0f, rng);
    Guarded grid(size_t(B * pixels * 2));
    safl::cpu::tps_grid_forward(grid.data(), points.data(), M.data(), B, s.K, s.H, s.W);
    EXPECT_GUARDS(grid, "grid");
    double worst = 0.0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < s.H; ++i)
        for (int64_t j = 0; j < s.W; ++j) {
          const float* g = grid.data() + ((b * s.H + i) * s.W + j) * 2;
          worst = std::max({worst, std::fabs(g[0] - identity_coordinate(j, s.W)),
                            std::fabs(g[1] - identity_coordinate(i, s.H))});
        }
    if (!(worst < 1e-5))
      std::printf("    K=%lld %lldx%lld: worst %.3g\n", (long long)s.K, (long long)s.H, (long long)s.W, worst);
    EXPECT(worst < 1e-5);
  }
}

// The localisation network starts from the fiducials with margin 0.01: an affine stretch of the
// targets (margin 0.05) about the centre, which a TPS reproduces exactly: a near-identity grid.
SAFL_TEST(tps_initial_control_points_give_near_identity_grid) {
  Rng rng(2);
  const int64_t B = 1, K = 20, H = 32, W = 100;
  const std::vector<float> M = grid_matrix(K, H, W);
  const std::vector<float> points = control_points(B, K, safl::kTpsInitialMargin, 1.0, 0.0f, rng);
  Guarded grid(size_t(H * W * 2));
  safl::cpu::tps_grid_forward(grid.data(), points.data(), M.data(), B, K, H, W);
  const double stretch = (1.0 - 2 * safl::kTpsInitialMargin) / (1.0 - 2 * safl::kTpsTargetMargin);
  double worst_affine = 0.0, worst_identity = 0.0;
  for (int64_t i = 0; i < H; ++i)
    for (int64_t j = 0; j < W; ++j)
      for (int c = 0; c < 2; ++c) {
        const double identity = c == 0 ? identity_coordinate(j, W) : identity_coordinate(i, H);
        const double expected = std::clamp(identity * stretch, -1.0, 1.0);
        const double g = grid[size_t((i * W + j) * 2 + c)];
        worst_affine = std::max(worst_affine, std::fabs(g - expected));
        worst_identity = std::max(worst_identity, std::fabs(g - identity));
      }
  EXPECT(worst_affine < 2e-5);
  EXPECT(worst_identity < 0.09);
}

SAFL_TEST(tps_grid_is_clamped_to_the_image) {
  Rng rng(3);
  const int64_t B = 2, K = 20, H = 8, W = 13;
  const std::vector<float> M = grid_matrix(K, H, W);
  const std::vector<float> points = control_points(B, K, safl::kTpsTargetMargin, 1.5, 0.0f, rng);
  Guarded grid(size_t(B * H * W * 2));
  safl::cpu::tps_grid_forward(grid.data(), points.data(), M.data(), B, K, H, W);
  EXPECT_GUARDS(grid, "grid");
  double worst = 0.0;
  int64_t at_edge = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j)
        for (int c = 0; c < 2; ++c) {
          const double identity = c == 0 ? identity_coordinate(j, W) : identity_coordinate(i, H);
          const float g = grid[size_t(((b * H + i) * W + j) * 2 + c)];
          worst = std::max(worst, std::fabs(g - std::clamp(identity * 1.5, -1.0, 1.0)));
          at_edge += (g == -1.0f || g == 1.0f);
          EXPECT(g >= -1.0f && g <= 1.0f);
        }
  EXPECT(worst < 2e-5);
  EXPECT(at_edge > 0);
}

SAFL_TEST(tps_gradcheck_inside_the_image) {
  Rng rng(4);
  struct Shape { int64_t B, K, H, W; };
  for (const Shape s : {Shape{2, 20, 6, 9}, Shape{3, 4, 3, 5}, Shape{1, 6, 1, 1}}) {
    std::vector<float> points = control_points(s.B, s.K, safl::kTpsTargetMargin, 0.8, 0.02f, rng);
    const std::vector<float> M = grid_matrix(s.K, s.H, s.W);
    int64_t clamped = 0;
    EXPECT(distance_to_clamp_edges(raw_grid(M, points, s.B, s.K, s.H * s.W), &clamped) > 0.02);
    EXPECT(clamped == 0);
    check_tps_gradient("tps_grid", points, M, s.B, s.K, s.H, s.W, rng);
  }
}

SAFL_TEST(tps_gradcheck_with_clamped_entries) {
  Rng rng(5);
  const int64_t B = 2, K = 20, H = 7, W = 11, pixels = H * W;
  std::vector<float> points = control_points(B, K, safl::kTpsTargetMargin, 1.3, 0.01f, rng);
  const std::vector<float> M = grid_matrix(K, H, W);
  const std::vector<double> raw = raw_grid(M, points, B, K, pixels);
  int64_t clamped = 0;
  distance_to_clamp_edges(raw, &clamped);
  EXPECT(clamped > 0);
  check_tps_gradient("tps_grid_clamped", points, M, B, K, H, W, rng);

  // A gradient only on the clamped entries (NaN included: it must not leak) reaches no control point.
  std::vector<float> dgrid(raw.size());
  for (size_t i = 0; i < raw.size(); ++i)
    dgrid[i] = (raw[i] < 0.0 || raw[i] > 1.0) ? (i % 2 ? std::nanf("") : 1.0f + float(i)) : 0.0f;
  Guarded dpoints(points.size());
  safl::cpu::tps_grid_backward(dpoints.data(), dgrid.data(), points.data(), M.data(), B, K, H, W);
  EXPECT_GUARDS(dpoints, "dcontrol_points");
  EXPECT(std::all_of(dpoints.data(), dpoints.data() + dpoints.size(), [](float v) { return v == 0.0f; }));
}

// The exact clamp boundary passes the gradient (as PyTorch's clamp). With M = identity (4 pixels,
// K = 4) the raw grid is C′ itself, so control points at exactly 0 and 1 sit on the boundary.
SAFL_TEST(tps_gradient_passes_at_the_exact_clamp_boundary) {
  const int64_t K = 4, H = 2, W = 2;
  std::vector<float> M(16, 0.0f);
  for (int k = 0; k < 4; ++k) M[size_t(k * 4 + k)] = 1.0f;
  const std::vector<float> points = {0, 0, 1, 0, 0, 1, 1, 1};
  std::vector<float> grid(8), dpoints(8);
  safl::cpu::tps_grid_forward(grid.data(), points.data(), M.data(), 1, K, H, W);
  const float expected_grid[8] = {-1, -1, 1, -1, -1, 1, 1, 1};
  EXPECT(std::equal(grid.begin(), grid.end(), expected_grid));
  const std::vector<float> dgrid = {1, 2, 3, 4, 5, 6, 7, 8};
  safl::cpu::tps_grid_backward(dpoints.data(), dgrid.data(), points.data(), M.data(), 1, K, H, W);
  for (size_t i = 0; i < 8; ++i) EXPECT(dpoints[i] == 2.0f * dgrid[i]);
  // Just past the boundary the clamp is active and the gradient is zero.
  const std::vector<float> outside = {-1e-6f, 0, 1, 1.000001f, 0, 1, 1, 1};
  safl::cpu::tps_grid_backward(dpoints.data(), dgrid.data(), outside.data(), M.data(), 1, K, H, W);
  EXPECT(dpoints[0] == 0.0f && dpoints[3] == 0.0f && dpoints[1] == 4.0f && dpoints[2] == 6.0f);
}

SAFL_TEST(tps_backward_writes_rather_than_accumulates) {
  Rng rng(6);
  const int64_t B = 3, K = 6, H = 4, W = 5;
  const std::vector<float> M = grid_matrix(K, H, W);
  const std::vector<float> points = control_points(B, K, safl::kTpsTargetMargin, 1.0, 0.02f, rng);
  std::vector<float> dgrid(size_t(B * H * W * 2));
  rng.fill_uniform(dgrid.data(), dgrid.size());
  Guarded first(points.size()), second(points.size(), 123.0f);
  safl::cpu::tps_grid_backward(first.data(), dgrid.data(), points.data(), M.data(), B, K, H, W);
  safl::cpu::tps_grid_backward(second.data(), dgrid.data(), points.data(), M.data(), B, K, H, W);
  EXPECT_FINITE(first.data(), first.size());
  EXPECT(std::equal(first.data(), first.data() + first.size(), second.data()));
  EXPECT_GUARDS(first, "first");
  EXPECT_GUARDS(second, "second");
}

SAFL_TEST(tps_one_by_one_and_zero_sizes) {
  Rng rng(7);
  const int64_t K = 20;
  // 1×1 grid: the single pixel is (0, 0), the top-left corner.
  const std::vector<float> M1 = grid_matrix(K, 1, 1);
  const std::vector<float> identity = control_points(1, K, safl::kTpsTargetMargin, 1.0, 0.0f, rng);
  Guarded grid1(2);
  safl::cpu::tps_grid_forward(grid1.data(), identity.data(), M1.data(), 1, K, 1, 1);
  EXPECT_NEAR(grid1[0], -1.0, 1e-5);
  EXPECT_NEAR(grid1[1], -1.0, 1e-5);
  EXPECT_GUARDS(grid1, "grid1");

  // Empty grids: M is empty, forward writes nothing, backward writes zeros.
  EXPECT(safl::tps_grid_matrix_size(K, 0, 5) == 0);
  EXPECT(safl::tps_grid_matrix_size(K, 4, 0) == 0);
  Guarded M0(0), grid0(0);
  safl::tps_grid_matrix(M0.data(), K, 0, 5);
  EXPECT_GUARDS(M0, "M0");
  const std::vector<float> points = control_points(2, K, safl::kTpsTargetMargin, 1.0, 0.01f, rng);
  for (const auto& hw : {std::pair<int64_t, int64_t>{0, 5}, std::pair<int64_t, int64_t>{4, 0}}) {
    safl::cpu::tps_grid_forward(grid0.data(), points.data(), M0.data(), 2, K, hw.first, hw.second);
    Guarded dpoints(points.size());
    safl::cpu::tps_grid_backward(dpoints.data(), grid0.data(), points.data(), M0.data(), 2, K, hw.first, hw.second);
    EXPECT(std::all_of(dpoints.data(), dpoints.data() + dpoints.size(), [](float v) { return v == 0.0f; }));
    EXPECT_GUARDS(dpoints, "dpoints");
  }
  EXPECT_GUARDS(grid0, "grid0");

  // B = 0: nothing read or written.
  const std::vector<float> M = grid_matrix(K, 3, 4);
  safl::cpu::tps_grid_forward(grid0.data(), nullptr, M.data(), 0, K, 3, 4);
  safl::cpu::tps_grid_backward(grid0.data(), nullptr, nullptr, M.data(), 0, K, 3, 4);
  EXPECT_GUARDS(grid0, "grid0 after B = 0");
}

SAFL_TEST(tps_argument_errors) {
  std::vector<float> buffer(4096, 0.5f);
  float* p = buffer.data();
  EXPECT_THROWS(safl::fiducial_points(p, 3, 0.05),
                safl::Error, "fiducial_points: expected an even K >= 4 but received 3");
  EXPECT_THROWS(safl::fiducial_points(p, 2, 0.05),
                safl::Error, "fiducial_points: expected an even K >= 4 but received 2");
  EXPECT_THROWS(safl::fiducial_points(p, 20, 0.5),
                safl::Error, "fiducial_points: expected 0 <= margin < 0.5 but received 0.5");
  EXPECT_THROWS(safl::fiducial_points(p, 20, -0.1),
                safl::Error, "fiducial_points: expected 0 <= margin < 0.5 but received -0.1");
  EXPECT_THROWS(safl::tps_grid_matrix_size(5, 2, 2),
                safl::Error, "tps_grid_matrix_size: expected an even K >= 4 but received 5");
  EXPECT_THROWS(safl::tps_grid_matrix_size(4, -1, 2),
                safl::Error, "tps_grid_matrix_size: expected H >= 0 but received -1");
  EXPECT_THROWS(safl::tps_grid_matrix(p, 0, 2, 2),
                safl::Error, "tps_grid_matrix: expected an even K >= 4 but received 0");
  EXPECT_THROWS(safl::tps_grid_matrix(p, 4, 2, -3),
                safl::Error, "tps_grid_matrix: expected W >= 0 but received -3");
  EXPECT_THROWS(safl::tps_grid_matrix_for_points(p, p, 4, -1, 2),
                safl::Error, "tps_grid_matrix_for_points: expected H >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::tps_grid_forward(p, p, p, -1, 20, 2, 2),
                safl::Error, "tps_grid_forward: expected B >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::tps_grid_forward(p, p, p, 1, 7, 2, 2),
                safl::Error, "tps_grid_forward: expected an even K >= 4 but received 7");
  EXPECT_THROWS(safl::cpu::tps_grid_forward(p, p, p, 1, 20, 2, -2),
                safl::Error, "tps_grid_forward: expected W >= 0 but received -2");
  EXPECT_THROWS(safl::cpu::tps_grid_backward(p, p, p, p, 1, 20, -1, 2),
                safl::Error, "tps_grid_backward: expected H >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::tps_grid_backward(p, p, p, p, -2, 20, 1, 2),
                safl::Error, "tps_grid_backward: expected B >= 0 but received -2");

  try {
    safl::cpu::tps_grid_forward(p, p, p, 1, 5, 2, 2);
    EXPECT(false);
  } catch (const safl::Error& e) {
    EXPECT(e.kind() == safl::ErrorKind::Range);
  }

  // Singular system matrices: collinear targets, a repeated target, a non-finite target.
  std::vector<float> collinear(8);
  for (int k = 0; k < 4; ++k) {
    collinear[size_t(2 * k)] = 0.2f * float(k + 1);
    collinear[size_t(2 * k + 1)] = 0.5f;
  }
  EXPECT_THROWS(safl::tps_grid_matrix_for_points(p, collinear.data(), 4, 2, 2),
                safl::Error, "tps_grid_matrix_for_points: the target control points give a singular TPS system matrix");
  std::vector<float> repeated(8);
  safl::fiducial_points(repeated.data(), 4, 0.1);
  repeated[2] = repeated[0];
  repeated[3] = repeated[1];
  EXPECT_THROWS(safl::tps_grid_matrix_for_points(p, repeated.data(), 4, 2, 2),
                safl::Error, "tps_grid_matrix_for_points: the target control points give a singular TPS system matrix");
  std::vector<float> non_finite(8);
  safl::fiducial_points(non_finite.data(), 4, 0.1);
  non_finite[5] = std::nanf("");
  EXPECT_THROWS(safl::tps_grid_matrix_for_points(p, non_finite.data(), 4, 2, 2),
                safl::Error, "tps_grid_matrix_for_points: the target control points give a singular TPS system matrix");
}

#ifdef SAFL_WITH_CUDA
SAFL_CUDA_TEST(tps_cuda_parity) {
  Rng rng(8);
  struct Shape { int64_t B, K, H, W; };
  for (const Shape s :
       {Shape{5, 20, 32, 100}, Shape{3, 4, 5, 7}, Shape{2, 6, 1, 1}, Shape{2, 20, 0, 4}, Shape{0, 20, 3, 4}}) {
    const int64_t pixels = s.H * s.W;
    const std::vector<float> M = grid_matrix(s.K, s.H, s.W);
    // Noise large enough that some entries are clamped.
    const std::vector<float> points = control_points(s.B, s.K, safl::kTpsTargetMargin, 1.0, 0.06f, rng);
    std::vector<float> dgrid(size_t(s.B * pixels * 2));
    rng.fill_uniform(dgrid.data(), dgrid.size());

    std::vector<float> grid_cpu(dgrid.size()), dpoints_cpu(points.size());
    safl::cpu::tps_grid_forward(grid_cpu.data(), points.data(), M.data(), s.B, s.K, s.H, s.W);
    safl::cpu::tps_grid_backward(dpoints_cpu.data(), dgrid.data(), points.data(), M.data(), s.B, s.K, s.H, s.W);

    safl::cuda::DeviceBuffer<float> d_M(M), d_points(points), d_dgrid(dgrid), d_grid(dgrid.size()),
        d_dpoints(points.size());
    safl::cuda::tps_grid_forward(d_grid.data(), d_points.data(), d_M.data(), s.B, s.K, s.H, s.W);
    safl::cuda::tps_grid_backward(d_dpoints.data(), d_dgrid.data(), d_points.data(), d_M.data(), s.B, s.K, s.H, s.W);
    const std::vector<float> grid_cuda = d_grid.to_host(), dpoints_cuda = d_dpoints.to_host();

    std::printf("    B=%lld K=%lld %lldx%lld\n", (long long)s.B, (long long)s.K, (long long)s.H, (long long)s.W);
    EXPECT_ALL_CLOSE(grid_cuda.data(), grid_cpu.data(), grid_cpu.size(), 0.0, 1e-6);
    EXPECT_ALL_CLOSE(dpoints_cuda.data(), dpoints_cpu.data(), dpoints_cpu.size(), 1e-4, 1e-4);
  }
}
#endif
