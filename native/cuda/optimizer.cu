// CUDA Adam/AdamW step and global gradient norm (see ops/optimizer.h). The step is elementwise
// (adam_update_element, shared with the CPU). The norm is a deterministic two-pass reduction:
// Note [deterministic gradient norm].
#include <algorithm>
#include <cmath>

#include "cuda/cuda_check.h"
#include "ops/optimizer.h"

namespace safl::cuda {
namespace {

constexpr int kNormBlock = 256;          // threads per block of both passes (a power of two)
constexpr int64_t kMaxNormBlocks = 1024;  // partial sums of the first pass, at most
constexpr int64_t kMaxStepBlocks = 65535;  // enough to fill any GPU; the step's loop strides on

// Sums the kNormBlock values of `shared` by halving; the result is in shared[0]. A fixed tree:
// the same inputs give the same bits.
__device__ void tree_sum(double* shared) {
  for (int half = kNormBlock / 2; half > 0; half /= 2) {
    __syncthreads();
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
  }
  __syncthreads();
}

// Pass 1: block b sums the squares of elements b·kNormBlock + tid, stepping by the grid.
__global__ void sum_squares_kernel(double* partial, const float* grads, int64_t P) {
  __shared__ double shared[kNormBlock];
  double sum = 0.0;
  const int64_t stride = int64_t(gridDim.x) * kNormBlock;
  for (int64_t i = int64_t(blockIdx.x) * kNormBlock + threadIdx.x; i < P; i += stride)
    sum += double(grads[i]) * double(grads[i]);
  shared[threadIdx.x] = sum;
  tree_sum(shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = shared[0];
}

// Pass 2: one block adds the partial sums.
__global__ void sum_partials_kernel(double* total, const double* partial, int64_t blocks) {
  __shared__ double shared[kNormBlock];
  double sum = 0.0;
  for (int64_t b = threadIdx.x; b < blocks; b += kNormBlock) sum += partial[b];
  shared[threadIdx.x] = sum;
  tree_sum(shared);
  if (threadIdx.x == 0) *total = shared[0];
}

__global__ void adam_kernel(float* params, float* m, float* v, const float* grads, int64_t P,
                            float grad_scale, float beta1, float beta2, float eps,
                            AdamStepConstants k) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < P; i += stride)
    adam_update_element(params[i], m[i], v[i], grads[i], grad_scale, beta1, beta2, eps, k);
}

}  // namespace

double grad_norm(const float* grads, int64_t P) {
  SAFL_CHECK_RANGE(P >= 0, "grad_norm: expected P >= 0 but received ", P);
  if (P == 0) return 0.0;
  // Note [deterministic gradient norm]: the grid depends on P only.
  const int64_t blocks = std::min(kMaxNormBlocks, (P + kNormBlock - 1) / kNormBlock);
  DeviceBuffer<double> partial(blocks), total(1);
  sum_squares_kernel<<<static_cast<unsigned>(blocks), kNormBlock>>>(partial.data(), grads, P);
  SAFL_CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, kNormBlock>>>(total.data(), partial.data(), blocks);
  SAFL_CUDA_CHECK_LAUNCH();
  double host_total = 0.0;
  total.download(&host_total);
  return std::sqrt(host_total);
}

void adam_step(float* params, float* m, float* v, const float* grads, int64_t P, int64_t step,
               float grad_scale, const AdamOptions& options) {
  check_adam_arguments(P, step, grad_scale, options);
  if (P == 0) return;
  const AdamStepConstants k = adam_step_constants(options, step);
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>((P + kBlock1D - 1) / kBlock1D, kMaxStepBlocks));
  adam_kernel<<<blocks, kBlock1D>>>(params, m, v, grads, P, grad_scale, options.beta1,
                                    options.beta2, options.eps, k);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace safl::cuda
