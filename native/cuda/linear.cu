// CUDA linear layer (see ops/linear.h): the products go through cuda::sgemm (TF32 tensor cores,
// Note [TF32 precision] in cuda/gemm.cu), plus two small kernels:
//   fill_bias_kernel   out[n, o] = bias[o], before the forward product accumulates onto it;
//   bias_grad_kernel   dbias += column sums of dout, deterministically (Note [column sums]).
// Backward: dx written (=), dweight and dbias accumulated (+=); dx, bias and dbias may be nullptr.
//
// Note [column sums]: a block owns kColumns = 32 neighbouring columns and every row. Its
// kRowLanes × 32 threads sum rows r, r + kRowLanes, r + 2·kRowLanes, ... of their column (a warp
// reads 32 neighbouring floats of one row: one 128-byte transaction), then a fixed tree in shared
// memory adds the row lanes. Each column is summed by one block in one order, so the result does
// not depend on scheduling and needs no atomics or scratch memory.
#include <cstdint>

#include "cuda/cuda_check.h"
#include "ops/gemm.h"
#include "ops/linear.h"

namespace safl::cuda {
namespace {

constexpr int kColumns = 32;   // columns per bias_grad_kernel block
constexpr int kRowLanes = 16;  // rows summed side by side per column

void check_sizes(const char* op, int64_t N, int64_t in_features, int64_t out_features) {
  SAFL_CHECK_RANGE(N >= 0, op, ": expected N >= 0 but received ", N);
  SAFL_CHECK_RANGE(in_features >= 0, op, ": expected in_features >= 0 but received ", in_features);
  SAFL_CHECK_RANGE(out_features >= 0, op, ": expected out_features >= 0 but received ", out_features);
}

__global__ void fill_bias_kernel(float* __restrict__ out, const float* __restrict__ bias, int64_t total,
                                 int64_t out_features) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) out[i] = bias[i % out_features];
}

// Note [column sums]. Blocks of (kColumns, kRowLanes) threads, one block per kColumns columns.
__global__ void bias_grad_kernel(float* __restrict__ dbias, const float* __restrict__ dout, int64_t N,
                                 int64_t out_features) {
  __shared__ float partial[kRowLanes][kColumns + 1];
  const int column_lane = int(threadIdx.x), row_lane = int(threadIdx.y);
  const int64_t o = int64_t(blockIdx.x) * kColumns + column_lane;
  float sum = 0.0f;
  if (o < out_features)
    for (int64_t n = row_lane; n < N; n += kRowLanes) sum += dout[n * out_features + o];
  partial[row_lane][column_lane] = sum;
  __syncthreads();
  for (int half = kRowLanes / 2; half > 0; half /= 2) {
    if (row_lane < half) partial[row_lane][column_lane] += partial[row_lane + half][column_lane];
    __syncthreads();
  }
  if (row_lane == 0 && o < out_features) dbias[o] += partial[0][column_lane];
}

}  // namespace

void linear_forward(float* out, const float* x, const float* weight, const float* bias, int64_t N,
                    int64_t in_features, int64_t out_features) {
  check_sizes("linear_forward", N, in_features, out_features);
  if (N == 0 || out_features == 0) return;
  if (bias) {
    const int64_t total = N * out_features;
    fill_bias_kernel<<<grid_1d(size_t(total)), kBlock1D>>>(out, bias, total, out_features);
    SAFL_CUDA_CHECK_LAUNCH();
  }
  sgemm(out, out_features, x, in_features, false, weight, in_features, true, N, out_features, in_features, 1.0f,
        bias ? 1.0f : 0.0f);
}

void linear_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, int64_t N, int64_t in_features, int64_t out_features) {
  check_sizes("linear_backward", N, in_features, out_features);
  if (dx && N > 0 && in_features > 0)  // dx = dout · W
    sgemm(dx, in_features, dout, out_features, false, weight, in_features, false, N, in_features, out_features,
          1.0f, 0.0f);
  if (N == 0 || out_features == 0) return;
  if (in_features > 0)  // dW += doutᵀ · x
    sgemm(dweight, in_features, dout, out_features, true, x, in_features, false, out_features, in_features, N,
          1.0f, 1.0f);
  if (dbias) {
    const unsigned blocks = unsigned((out_features + kColumns - 1) / kColumns);
    bias_grad_kernel<<<blocks, dim3{kColumns, kRowLanes}>>>(dbias, dout, N, out_features);
    SAFL_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace safl::cuda
