// TPS grid generator, CUDA: the grid forward and backward of native/ops/tps.h on device pointers
// (M uploaded once from the host setup, e.g. into a DeviceBuffer). The raw coordinates are summed
// exactly as on the CPU (tps_raw_coordinate), so both backends make the same clamp decisions.
// Backward writes dcontrol_points (=), deterministically (a fixed-order block reduction, no atomics).
#include "cuda/cuda_check.h"
#include "ops/sampler_math.h"
#include "ops/tps.h"

namespace safl::cuda {
namespace {

constexpr int kReduceBlock = 256;  // threads per (image, control point) block of the backward

// One thread per (image, pixel): grid[b, p] = clamp(M[p] · C′[b]) · 2 − 1.
__global__ void tps_grid_forward_kernel(float* __restrict__ grid, const float* __restrict__ control_points,
                                        const float* __restrict__ grid_matrix, int64_t total, int64_t pixels,
                                        int64_t K) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= total) return;
  const float* m_row = grid_matrix + (n % pixels) * K;
  const float* points = control_points + (n / pixels) * K * 2;
  grid[2 * n] = tps_grid_value(tps_raw_coordinate(m_row, points, K, 0));
  grid[2 * n + 1] = tps_grid_value(tps_raw_coordinate(m_row, points, K, 1));
}

// One block per (image b = blockIdx.x, control point k = blockIdx.y): the threads stride over the
// pixels, recompute the clamp decision from M · C′ (K multiply-adds per coordinate, cheap at
// K = 20) and sum M[p, k] · backprop(dgrid[b, p]); a fixed tree in shared memory finishes the sum.
__global__ void tps_grid_backward_kernel(float* __restrict__ dcontrol_points, const float* __restrict__ dgrid,
                                         const float* __restrict__ control_points,
                                         const float* __restrict__ grid_matrix, int64_t pixels, int64_t K) {
  const int64_t b = blockIdx.x, k = blockIdx.y;
  const float* points = control_points + b * K * 2;
  const float* dg = dgrid + b * pixels * 2;
  float sum_x = 0.0f, sum_y = 0.0f;
  for (int64_t p = threadIdx.x; p < pixels; p += blockDim.x) {
    const float* m_row = grid_matrix + p * K;
    sum_x += m_row[k] * tps_grid_backprop(tps_raw_coordinate(m_row, points, K, 0), dg[2 * p]);
    sum_y += m_row[k] * tps_grid_backprop(tps_raw_coordinate(m_row, points, K, 1), dg[2 * p + 1]);
  }
  __shared__ float partial_x[kReduceBlock], partial_y[kReduceBlock];
  partial_x[threadIdx.x] = sum_x;
  partial_y[threadIdx.x] = sum_y;
  __syncthreads();
  for (int stride = kReduceBlock / 2; stride > 0; stride /= 2) {
    if (int(threadIdx.x) < stride) {
      partial_x[threadIdx.x] += partial_x[threadIdx.x + stride];
      partial_y[threadIdx.x] += partial_y[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    dcontrol_points[(b * K + k) * 2] = partial_x[0];
    dcontrol_points[(b * K + k) * 2 + 1] = partial_y[0];
  }
}

}  // namespace

void tps_grid_forward(float* grid, const float* control_points, const float* grid_matrix, int64_t B, int64_t K,
                      int64_t H, int64_t W) {
  detail::check_tps_grid_sizes("tps_grid_forward", B, K, H, W);
  const int64_t pixels = H * W, total = B * pixels;
  if (total == 0) return;
  tps_grid_forward_kernel<<<grid_1d(size_t(total)), kBlock1D>>>(grid, control_points, grid_matrix, total, pixels, K);
  SAFL_CUDA_CHECK_LAUNCH();
}

void tps_grid_backward(float* dcontrol_points, const float* dgrid, const float* control_points,
                       const float* grid_matrix, int64_t B, int64_t K, int64_t H, int64_t W) {
  detail::check_tps_grid_sizes("tps_grid_backward", B, K, H, W);
  if (B == 0) return;
  SAFL_CHECK_RANGE(K <= 65535, "tps_grid_backward: expected K <= 65535 on CUDA but received ", K);
  const dim3 blocks{unsigned(B), unsigned(K)};
  tps_grid_backward_kernel<<<blocks, kReduceBlock>>>(dcontrol_points, dgrid, control_points, grid_matrix,
                                                      H * W, K);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace safl::cuda
