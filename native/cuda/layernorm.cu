// CUDA layer normalisation (see ops/layernorm.h).
//   layernorm_forward_kernel    one warp per row: the mean, then the variance as the mean of the
//                               squared deviations (two passes over the row, as on the CPU), the
//                               saved statistics and the normalised row.
//   layernorm_param_grad_kernel dgamma += Σ dout · x̂ and dbeta += Σ dout over the rows, one block
//                               per 32 columns (Note [column sums] in cuda/linear.cu): each column
//                               is summed by one block in a fixed order, no atomics.
//   layernorm_dx_kernel         one warp per row: dx = rstd · (g - mean(g) - x̂ · mean(g · x̂)),
//                               g = dout · gamma.
// Warp sums use xor shuffles, which leave the same bits in every lane. Sums run in float (the CPU
// sums in double; rows of a few hundred elements keep the difference near float rounding).
// Backward rule: dx is written (=); dgamma and dbeta accumulate (+=). dx may be dout itself: the
// parameter gradients are reduced first, and a lane reads dout[d] before it writes dx[d] for the
// same d, which no other lane touches.
#include <cstdint>

#include "cuda/cuda_check.h"
#include "ops/layernorm.h"

namespace safl::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // warps (rows) per block of the row kernels
constexpr int kColumns = 32;      // columns per layernorm_param_grad_kernel block
constexpr int kRowLanes = 16;     // rows summed side by side per column

void check_sizes(const char* op, int64_t N, int64_t D) {
  SAFL_CHECK_RANGE(N >= 0, op, ": expected N >= 0 but received ", N);
  SAFL_CHECK_RANGE(D >= 1, op, ": expected D >= 1 but received ", D);
}

__device__ float warp_sum(float value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

__global__ void layernorm_forward_kernel(float* __restrict__ out, float* __restrict__ mean,
                                         float* __restrict__ rstd, const float* __restrict__ x,
                                         const float* __restrict__ gamma, const float* __restrict__ beta,
                                         int64_t N, int64_t D, float eps) {
  const int lane = int(threadIdx.x) % kWarp;
  const int64_t n = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (n >= N) return;  // the whole warp leaves together
  const float* xr = x + n * D;
  float sum = 0.0f;
  for (int64_t d = lane; d < D; d += kWarp) sum += xr[d];
  const float row_mean = warp_sum(sum) / float(D);
  float squares = 0.0f;
  for (int64_t d = lane; d < D; d += kWarp) {
    const float deviation = xr[d] - row_mean;
    squares += deviation * deviation;
  }
  const float row_rstd = 1.0f / sqrtf(warp_sum(squares) / float(D) + eps);
  float* yr = out + n * D;
  for (int64_t d = lane; d < D; d += kWarp) yr[d] = (xr[d] - row_mean) * row_rstd * gamma[d] + beta[d];
  if (lane == 0) {
    mean[n] = row_mean;
    rstd[n] = row_rstd;
  }
}

// Blocks of (kColumns, kRowLanes) threads, one block per kColumns columns.
__global__ void layernorm_param_grad_kernel(float* __restrict__ dgamma, float* __restrict__ dbeta,
                                            const float* dout, const float* __restrict__ x,
                                            const float* __restrict__ mean, const float* __restrict__ rstd,
                                            int64_t N, int64_t D) {
  __shared__ float partial_dy_xhat[kRowLanes][kColumns + 1];
  __shared__ float partial_dy[kRowLanes][kColumns + 1];
  const int column_lane = int(threadIdx.x), row_lane = int(threadIdx.y);
  const int64_t d = int64_t(blockIdx.x) * kColumns + column_lane;
  float sum_dy_xhat = 0.0f, sum_dy = 0.0f;
  if (d < D) {
    for (int64_t n = row_lane; n < N; n += kRowLanes) {
      const float dy = dout[n * D + d];
      sum_dy_xhat += dy * ((x[n * D + d] - mean[n]) * rstd[n]);
      sum_dy += dy;
    }
  }
  partial_dy_xhat[row_lane][column_lane] = sum_dy_xhat;
  partial_dy[row_lane][column_lane] = sum_dy;
  __syncthreads();
  for (int half = kRowLanes / 2; half > 0; half /= 2) {
    if (row_lane < half) {
      partial_dy_xhat[row_lane][column_lane] += partial_dy_xhat[row_lane + half][column_lane];
      partial_dy[row_lane][column_lane] += partial_dy[row_lane + half][column_lane];
    }
    __syncthreads();
  }
  if (row_lane == 0 && d < D) {
    dgamma[d] += partial_dy_xhat[0][column_lane];
    dbeta[d] += partial_dy[0][column_lane];
  }
}

// dx and dout may be the same array (see the file header), hence no __restrict__ on them.
__global__ void layernorm_dx_kernel(float* dx, const float* dout, const float* __restrict__ x,
                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                    const float* __restrict__ gamma, int64_t N, int64_t D) {
  const int lane = int(threadIdx.x) % kWarp;
  const int64_t n = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (n >= N) return;
  const float* xr = x + n * D;
  const float* dyr = dout + n * D;
  const float mu = mean[n], rs = rstd[n];
  float sum_g = 0.0f, sum_g_xhat = 0.0f;
  for (int64_t d = lane; d < D; d += kWarp) {
    const float g = dyr[d] * gamma[d];
    sum_g += g;
    sum_g_xhat += g * ((xr[d] - mu) * rs);
  }
  const float mean_g = warp_sum(sum_g) / float(D);
  const float mean_g_xhat = warp_sum(sum_g_xhat) / float(D);
  float* dxr = dx + n * D;
  for (int64_t d = lane; d < D; d += kWarp) {
    const float xhat = (xr[d] - mu) * rs;
    dxr[d] = rs * (dyr[d] * gamma[d] - mean_g - xhat * mean_g_xhat);
  }
}

unsigned row_blocks(int64_t N) { return unsigned((N + kRowsPerBlock - 1) / kRowsPerBlock); }

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* gamma, const float* beta,
                       int64_t N, int64_t D, float eps) {
  check_sizes("layernorm_forward", N, D);
  SAFL_CHECK_RANGE(eps > 0.0f, "layernorm_forward: expected eps > 0 but received ", eps);
  if (N == 0) return;
  layernorm_forward_kernel<<<row_blocks(N), kRowsPerBlock * kWarp>>>(out, mean, rstd, x, gamma, beta, N, D, eps);
  SAFL_CUDA_CHECK_LAUNCH();
}

void layernorm_backward(float* dx, float* dgamma, float* dbeta, const float* dout, const float* x,
                        const float* mean, const float* rstd, const float* gamma, int64_t N, int64_t D) {
  check_sizes("layernorm_backward", N, D);
  if (N == 0) return;
  const unsigned column_blocks = unsigned((D + kColumns - 1) / kColumns);
  layernorm_param_grad_kernel<<<column_blocks, dim3{kColumns, kRowLanes}>>>(dgamma, dbeta, dout, x, mean, rstd, N,
                                                                            D);
  SAFL_CUDA_CHECK_LAUNCH();
  layernorm_dx_kernel<<<row_blocks(N), kRowsPerBlock * kWarp>>>(dx, dout, x, mean, rstd, gamma, N, D);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace safl::cuda
