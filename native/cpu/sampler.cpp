// Bilinear grid sampler (align_corners=true, zero padding), CPU. Forward and the dgrid pass run
// one task range over output points (each point's channels in one loop); the dinput pass runs
// over (b, c) planes so that each plane's scatter-adds have one owner (race-free, deterministic).
// Backward writes dgrid and dinput (=). Per-element math: native/ops/sampler_math.h.
#include "ops/sampler.h"

#include <algorithm>

#include "common/error.h"
#include "common/threadpool.h"
#include "ops/sampler_math.h"

namespace safl {

namespace detail {
void check_grid_sample_sizes(const char* op, int64_t B, int64_t C, int64_t Hi, int64_t Wi, int64_t Ho, int64_t Wo) {
  SAFL_CHECK_RANGE(B >= 0, op, ": expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(C >= 0, op, ": expected C >= 0 but received ", C);
  SAFL_CHECK_RANGE(Hi >= 0, op, ": expected Hi >= 0 but received ", Hi);
  SAFL_CHECK_RANGE(Wi >= 0, op, ": expected Wi >= 0 but received ", Wi);
  SAFL_CHECK_RANGE(Ho >= 0, op, ": expected Ho >= 0 but received ", Ho);
  SAFL_CHECK_RANGE(Wo >= 0, op, ": expected Wo >= 0 but received ", Wo);
}
}  // namespace detail

namespace cpu {
namespace {
// Output points per task of the point loops: enough work (× channels) to amortise scheduling.
constexpr int64_t kPointGrain = 512;
}  // namespace

void grid_sample_forward(float* out, const float* input, const float* grid, int64_t B, int64_t C, int64_t Hi,
                         int64_t Wi, int64_t Ho, int64_t Wo) {
  detail::check_grid_sample_sizes("grid_sample_forward", B, C, Hi, Wi, Ho, Wo);
  const int64_t points = Ho * Wo, plane = Hi * Wi;
  parallel_for(0, B * points, kPointGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const int64_t b = n / points, p = n % points;
      const BilinearCorners corners = bilinear_corners(grid[2 * n], grid[2 * n + 1], Wi, Hi);
      for (int64_t c = 0; c < C; ++c) {
        const CornerValues v = corner_values(input + (b * C + c) * plane, corners, Wi, Hi);
        out[(b * C + c) * points + p] = bilinear_interpolate(v, corners);
      }
    }
  });
}

void grid_sample_backward(float* dgrid, float* dinput, const float* dout, const float* input, const float* grid,
                          int64_t B, int64_t C, int64_t Hi, int64_t Wi, int64_t Ho, int64_t Wo) {
  detail::check_grid_sample_sizes("grid_sample_backward", B, C, Hi, Wi, Ho, Wo);
  const int64_t points = Ho * Wo, plane = Hi * Wi;
  const float slope_x = grid_to_pixel_slope(Wi), slope_y = grid_to_pixel_slope(Hi);

  // dgrid: each output point sums its channels' contributions.
  parallel_for(0, B * points, kPointGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const int64_t b = n / points, p = n % points;
      const BilinearCorners corners = bilinear_corners(grid[2 * n], grid[2 * n + 1], Wi, Hi);
      float gx = 0.0f, gy = 0.0f;
      if (corners.any_inside) {
        for (int64_t c = 0; c < C; ++c) {
          const float d = dout[(b * C + c) * points + p];
          const CornerValues v = corner_values(input + (b * C + c) * plane, corners, Wi, Hi);
          gx += d * bilinear_dx(v, corners);
          gy += d * bilinear_dy(v, corners);
        }
      }
      dgrid[2 * n] = gx * slope_x;
      dgrid[2 * n + 1] = gy * slope_y;
    }
  });

  if (!dinput) return;
  // dinput: each (b, c) plane is zeroed and then gathers the scatter-adds of every output point.
  parallel_for(0, B * C, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t bc = lo; bc < hi; ++bc) {
      const int64_t b = bc / C;
      float* dplane = dinput + bc * plane;
      std::fill(dplane, dplane + plane, 0.0f);
      for (int64_t p = 0; p < points; ++p) {
        const float* g = grid + (b * points + p) * 2;
        const BilinearCorners corners = bilinear_corners(g[0], g[1], Wi, Hi);
        if (!corners.any_inside) continue;
        const float d = dout[bc * points + p];
        const CornerValues w = bilinear_weights(corners);
        const int64_t x0 = corners.x0, y0 = corners.y0, x1 = x0 + 1, y1 = y0 + 1;
        if (pixel_inside(x0, y0, Wi, Hi)) dplane[y0 * Wi + x0] += w.nw * d;
        if (pixel_inside(x1, y0, Wi, Hi)) dplane[y0 * Wi + x1] += w.ne * d;
        if (pixel_inside(x0, y1, Wi, Hi)) dplane[y1 * Wi + x0] += w.sw * d;
        if (pixel_inside(x1, y1, Wi, Hi)) dplane[y1 * Wi + x1] += w.se * d;
      }
    }
  });
}

}  // namespace cpu
}  // namespace safl
