// CUDA batch normalisation (see ops/batchnorm.h): training forward and backward run one block per
// channel (the threads stride over its B·H·W values, sums in double combined by a fixed tree, so
// results are deterministic); inference forward is elementwise. The float arithmetic after the
// sums repeats the CPU op's operations in its order, with __fmul_rn / __fadd_rn where nvcc would
// otherwise fuse a multiply and an add (Note [no contraction]).
//
// Note [no contraction]: nvcc contracts a·b + c into one fma by default; the CPU build (x86-64
// without -mfma) rounds the product first. The intrinsics pin the rounding to the CPU's, so the
// saved statistics, running statistics and outputs match the CPU up to the order of the double
// sums (which almost always rounds to the same float).
//
// Backward: dgamma and dbeta ACCUMULATE (+=); dx is WRITTEN (=) and may be dout: a block reads
// all of its channel's dout in the reduction before any thread writes, and then each thread
// reads the dout element it overwrites.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "ops/batchnorm.h"

namespace safl::cuda {
namespace {

constexpr int kChannelBlock = 512;  // threads per channel (a power of two)

// Sums the per-thread values of the block by a fixed tree; every thread gets the total. `shared`
// holds kChannelBlock doubles.
__device__ double block_sum(double value, double* shared) {
  __syncthreads();  // shared may still be read from a previous sum
  shared[threadIdx.x] = value;
  for (int half = kChannelBlock / 2; half > 0; half /= 2) {
    __syncthreads();
    if (int(threadIdx.x) < half) shared[threadIdx.x] += shared[threadIdx.x + half];
  }
  __syncthreads();
  return shared[0];
}

// Element i of channel c, i in [0, B·HW): image i / HW, position i % HW.
__device__ int64_t channel_index(int64_t i, int64_t c, int64_t C, int64_t HW) {
  const int64_t b = i / HW;
  return (b * C + c) * HW + (i - b * HW);
}

__global__ void forward_train_kernel(float* out, float* saved_mean, float* saved_inv_std, float* running_mean,
                                     float* running_var, const float* x, const float* gamma, const float* beta,
                                     int64_t C, int64_t HW, int64_t n, float eps, float momentum) {
  __shared__ double shared[kChannelBlock];
  const int64_t c = blockIdx.x;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kChannelBlock) sum += x[channel_index(i, c, C, HW)];
  const double mean = block_sum(sum, shared) / double(n);
  double squares = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kChannelBlock) {
    const double d = x[channel_index(i, c, C, HW)] - mean;
    squares += d * d;
  }
  squares = block_sum(squares, shared);
  const double var = squares / double(n);
  const float inv_std = float(1.0 / sqrt(var + double(eps)));
  const float mean_f = float(mean), scale = __fmul_rn(gamma[c], inv_std), shift = beta[c];
  if (threadIdx.x == 0) {
    // Note [no contraction]
    saved_mean[c] = mean_f;
    saved_inv_std[c] = inv_std;
    running_mean[c] = __fadd_rn(__fmul_rn(1.0f - momentum, running_mean[c]), __fmul_rn(momentum, mean_f));
    running_var[c] = __fadd_rn(__fmul_rn(1.0f - momentum, running_var[c]),
                               __fmul_rn(momentum, float(squares / double(n - 1))));
  }
  for (int64_t i = threadIdx.x; i < n; i += kChannelBlock) {
    const int64_t index = channel_index(i, c, C, HW);
    out[index] = __fadd_rn(__fmul_rn(x[index] - mean_f, scale), shift);
  }
}

__global__ void forward_inference_kernel(float* out, const float* x, const float* gamma, const float* beta,
                                         const float* running_mean, const float* running_var, int64_t total,
                                         int64_t C, int64_t HW, float eps) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t c = (i / HW) % C;
    const float scale = gamma[c] / sqrtf(running_var[c] + eps);  // IEEE division and sqrt, as the CPU
    out[i] = __fadd_rn(__fmul_rn(x[i] - running_mean[c], scale), beta[c]);
  }
}

// With x̂ = (x − mean)·inv_std: dbeta += Σ dy, dgamma += Σ dy·x̂,
// dx = gamma·inv_std·(dy − Σdy/n − x̂·Σ(dy·x̂)/n). As in the CPU op, x̂ is taken in double inside
// the sum and in float for dx.
__global__ void backward_kernel(float* dx, float* dgamma, float* dbeta, const float* saved_mean,
                                const float* saved_inv_std, const float* dout, const float* x, const float* gamma,
                                int64_t C, int64_t HW, int64_t n) {
  __shared__ double shared[kChannelBlock];
  const int64_t c = blockIdx.x;
  const float mean = saved_mean[c], inv_std = saved_inv_std[c];
  double sum_dy = 0.0, sum_dy_xhat = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kChannelBlock) {
    const int64_t index = channel_index(i, c, C, HW);
    const float dy = dout[index];
    sum_dy += dy;
    sum_dy_xhat += double(dy) * ((double(x[index]) - double(mean)) * double(inv_std));  // x̂ in double here
  }
  sum_dy = block_sum(sum_dy, shared);
  sum_dy_xhat = block_sum(sum_dy_xhat, shared);
  if (threadIdx.x == 0) {
    dbeta[c] += float(sum_dy);
    dgamma[c] += float(sum_dy_xhat);
  }
  const float scale = __fmul_rn(gamma[c], inv_std);
  const float mean_dy = float(sum_dy / double(n)), mean_dy_xhat = float(sum_dy_xhat / double(n));
  for (int64_t i = threadIdx.x; i < n; i += kChannelBlock) {
    const int64_t index = channel_index(i, c, C, HW);
    const float xhat = __fmul_rn(x[index] - mean, inv_std);
    dx[index] = __fmul_rn(scale, (dout[index] - mean_dy) - __fmul_rn(xhat, mean_dy_xhat));
  }
}

// The argument checks of the CPU op, with the same messages.
void check_sizes(const char* op, int64_t B, int64_t C, int64_t H, int64_t W) {
  SAFL_CHECK_RANGE(B >= 0, op, ": expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(C >= 0, op, ": expected C >= 0 but received ", C);
  SAFL_CHECK_RANGE(H >= 0, op, ": expected H >= 0 but received ", H);
  SAFL_CHECK_RANGE(W >= 0, op, ": expected W >= 0 but received ", W);
}

void check_eps(const char* op, float eps) {
  SAFL_CHECK_RANGE(eps > 0.0f && std::isfinite(eps), op, ": expected eps > 0 but received ", eps);
}

void check_channels(const char* op, int64_t C) {
  SAFL_CHECK_RANGE(C <= INT32_MAX, op, ": expected C <= ", INT32_MAX, " on CUDA but received ", C);
}

}  // namespace

void batchnorm_forward_train(float* out, float* saved_mean, float* saved_inv_std, float* running_mean,
                             float* running_var, const float* x, const float* gamma, const float* beta,
                             int64_t B, int64_t C, int64_t H, int64_t W, float eps, float momentum) {
  const char* op = "batchnorm_forward_train";
  check_sizes(op, B, C, H, W);
  check_eps(op, eps);
  SAFL_CHECK_RANGE(momentum >= 0.0f && momentum <= 1.0f, op, ": expected 0 <= momentum <= 1 but received ",
                   momentum);
  const int64_t HW = H * W, n = B * HW;
  SAFL_CHECK_RANGE(n != 1, op, ": expected more than 1 value per channel (B*H*W) but received 1");
  check_channels(op, C);
  if (n == 0 || C == 0) return;
  forward_train_kernel<<<unsigned(C), kChannelBlock>>>(out, saved_mean, saved_inv_std, running_mean, running_var,
                                                        x, gamma, beta, C, HW, n, eps, momentum);
  SAFL_CUDA_CHECK_LAUNCH();
}

void batchnorm_forward_inference(float* out, const float* x, const float* gamma, const float* beta,
                                 const float* running_mean, const float* running_var, int64_t B, int64_t C,
                                 int64_t H, int64_t W, float eps) {
  const char* op = "batchnorm_forward_inference";
  check_sizes(op, B, C, H, W);
  check_eps(op, eps);
  const int64_t HW = H * W, total = B * C * HW;
  if (total == 0) return;
  constexpr size_t kMaxBlocks = 65535;  // the loop strides over the rest
  forward_inference_kernel<<<unsigned(std::min(grid_1d(size_t(total)), unsigned(kMaxBlocks))), kBlock1D>>>(
      out, x, gamma, beta, running_mean, running_var, total, C, HW, eps);
  SAFL_CUDA_CHECK_LAUNCH();
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* saved_mean, const float* saved_inv_std,
                        const float* dout, const float* x, const float* gamma, int64_t B, int64_t C, int64_t H,
                        int64_t W) {
  const char* op = "batchnorm_backward";
  check_sizes(op, B, C, H, W);
  check_channels(op, C);
  const int64_t HW = H * W, n = B * HW;
  if (n == 0 || C == 0) return;
  backward_kernel<<<unsigned(C), kChannelBlock>>>(dx, dgamma, dbeta, saved_mean, saved_inv_std, dout, x, gamma, C,
                                                   HW, n);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace safl::cuda
