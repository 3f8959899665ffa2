// Bilinear grid sampler (align_corners=true, zero padding), CUDA: one thread per output point
// (b, i, j) looping over the channels, forward and backward. The backward thread owns its dgrid
// entry (summed over channels, no atomics) and, when dinput is wanted, scatter-adds its four
// corner contributions per channel with bounds-checked atomicAdd into dinput, zeroed first.
// Backward writes dgrid and dinput (=). Per-element math: native/ops/sampler_math.h.
#include "cuda/cuda_check.h"
#include "ops/sampler.h"
#include "ops/sampler_math.h"

namespace safl::cuda {
namespace {

__global__ void grid_sample_forward_kernel(float* __restrict__ out, const float* __restrict__ input,
                                           const float* __restrict__ grid, int64_t total, int64_t C, int64_t Hi,
                                           int64_t Wi, int64_t points) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= total) return;
  const int64_t b = n / points, p = n % points, plane = Hi * Wi;
  const BilinearCorners corners = bilinear_corners(grid[2 * n], grid[2 * n + 1], Wi, Hi);
  for (int64_t c = 0; c < C; ++c) {
    const CornerValues v = corner_values(input + (b * C + c) * plane, corners, Wi, Hi);
    out[(b * C + c) * points + p] = bilinear_interpolate(v, corners);
  }
}

// Adds `value` to plane[y, x] when (x, y) lies inside the plane.
__device__ void add_if_inside(float* plane, int64_t x, int64_t y, int64_t width, int64_t height, float value) {
  if (pixel_inside(x, y, width, height)) atomicAdd(plane + y * width + x, value);
}

__global__ void grid_sample_backward_kernel(float* __restrict__ dgrid, float* __restrict__ dinput,
                                            const float* __restrict__ dout, const float* __restrict__ input,
                                            const float* __restrict__ grid, int64_t total, int64_t C, int64_t Hi,
                                            int64_t Wi, int64_t points) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= total) return;
  const int64_t b = n / points, p = n % points, plane = Hi * Wi;
  const BilinearCorners corners = bilinear_corners(grid[2 * n], grid[2 * n + 1], Wi, Hi);
  float gx = 0.0f, gy = 0.0f;
  if (corners.any_inside) {
    const CornerValues w = bilinear_weights(corners);
    const int64_t x0 = corners.x0, y0 = corners.y0;
    for (int64_t c = 0; c < C; ++c) {
      const float d = dout[(b * C + c) * points + p];
      const CornerValues v = corner_values(input + (b * C + c) * plane, corners, Wi, Hi);
      gx += d * bilinear_dx(v, corners);
      gy += d * bilinear_dy(v, corners);
      if (dinput) {
        float* dplane = dinput + (b * C + c) * plane;
        add_if_inside(dplane, x0, y0, Wi, Hi, w.nw * d);
        add_if_inside(dplane, x0 + 1, y0, Wi, Hi, w.ne * d);
        add_if_inside(dplane, x0, y0 + 1, Wi, Hi, w.sw * d);
        add_if_inside(dplane, x0 + 1, y0 + 1, Wi, Hi, w.se * d);
      }
    }
  }
  dgrid[2 * n] = gx * grid_to_pixel_slope(Wi);
  dgrid[2 * n + 1] = gy * grid_to_pixel_slope(Hi);
}

}  // namespace

void grid_sample_forward(float* out, const float* input, const float* grid, int64_t B, int64_t C, int64_t Hi,
                         int64_t Wi, int64_t Ho, int64_t Wo) {
  detail::check_grid_sample_sizes("grid_sample_forward", B, C, Hi, Wi, Ho, Wo);
  const int64_t points = Ho * Wo, total = B * points;
  if (total == 0 || C == 0) return;
  grid_sample_forward_kernel<<<grid_1d(size_t(total)), kBlock1D>>>(out, input, grid, total, C, Hi, Wi, points);
  SAFL_CUDA_CHECK_LAUNCH();
}

void grid_sample_backward(float* dgrid, float* dinput, const float* dout, const float* input, const float* grid,
                          int64_t B, int64_t C, int64_t Hi, int64_t Wi, int64_t Ho, int64_t Wo) {
  detail::check_grid_sample_sizes("grid_sample_backward", B, C, Hi, Wi, Ho, Wo);
  if (dinput && B * C * Hi * Wi > 0)
    SAFL_CUDA_CHECK(cudaMemsetAsync(dinput, 0, size_t(B * C * Hi * Wi) * sizeof(float)));
  const int64_t points = Ho * Wo, total = B * points;
  if (total == 0) return;
  grid_sample_backward_kernel<<<grid_1d(size_t(total)), kBlock1D>>>(dgrid, dinput, dout, input, grid, total, C, Hi,
                                                                    Wi, points);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace safl::cuda
