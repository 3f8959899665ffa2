// CUDA ReLU and dropout (see ops/activation.h): elementwise grid-stride kernels. Dropout draws
// its mask with dropout_keep (ops/activation.h), the counter-based hash the CPU uses, so both
// backends keep the same elements and write the same bits. Every op may run in place.
//
// Backward: dx is WRITTEN (=); there are no parameters.
#include <algorithm>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "ops/activation.h"

namespace safl::cuda {
namespace {

constexpr unsigned kMaxBlocks = 65535;  // the loops stride over the rest

unsigned blocks_for(int64_t n) { return std::min(grid_1d(size_t(n)), kMaxBlocks); }

__global__ void relu_forward_kernel(float* out, const float* x, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = x[i] < 0.0f ? 0.0f : x[i];  // NaN passes through
}

__global__ void relu_backward_kernel(float* dx, const float* dout, const float* out, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dx[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}

__global__ void dropout_forward_kernel(float* out, float* mask, const float* x, int64_t n, float p, float scale,
                                       uint64_t seed) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float m = dropout_keep(seed, uint64_t(i), p) ? scale : 0.0f;
    mask[i] = m;
    out[i] = x[i] * m;
  }
}

__global__ void dropout_backward_kernel(float* dx, const float* mask, const float* dout, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) dx[i] = dout[i] * mask[i];
}

void check_n(const char* op, int64_t n) { SAFL_CHECK_RANGE(n >= 0, op, ": expected n >= 0 but received ", n); }

}  // namespace

void relu_forward(float* out, const float* x, int64_t n) {
  check_n("relu_forward", n);
  if (n == 0) return;
  relu_forward_kernel<<<blocks_for(n), kBlock1D>>>(out, x, n);
  SAFL_CUDA_CHECK_LAUNCH();
}

void relu_backward(float* dx, const float* dout, const float* out, int64_t n) {
  check_n("relu_backward", n);
  if (n == 0) return;
  relu_backward_kernel<<<blocks_for(n), kBlock1D>>>(dx, dout, out, n);
  SAFL_CUDA_CHECK_LAUNCH();
}

void dropout_forward(float* out, float* mask, const float* x, int64_t n, float p, uint64_t seed) {
  check_n("dropout_forward", n);
  SAFL_CHECK_RANGE(p >= 0.0f && p < 1.0f, "dropout_forward: expected 0 <= p < 1 but received ", p);
  if (n == 0) return;
  const float scale = 1.0f / (1.0f - p);  // computed on the host, as the CPU op does
  dropout_forward_kernel<<<blocks_for(n), kBlock1D>>>(out, mask, x, n, p, scale, seed);
  SAFL_CUDA_CHECK_LAUNCH();
}

void dropout_backward(float* dx, const float* mask, const float* dout, int64_t n) {
  check_n("dropout_backward", n);
  if (n == 0) return;
  dropout_backward_kernel<<<blocks_for(n), kBlock1D>>>(dx, mask, dout, n);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace safl::cuda
