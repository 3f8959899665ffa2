// CUDA softmax and log-softmax over rows (see ops/softmax.h): one block of kRowBlock threads per
// row; the threads stride over the C columns (C need not be a multiple of the block) and meet in
// shared-memory reductions for the row maximum and the sums. Reductions run in a fixed tree, so
// results do not change from run to run (they differ from the CPU's index-order float sums in the
// last bits).
//   log_softmax_forward   out = x - max - log Σ exp(x - max)
//   log_softmax_backward  dx = dout - exp(out) · Σ dout  (written, =; dx may be dout itself: every
//                         thread has read its dout elements for the sum before the reduction's
//                         barrier, and afterwards writes only the elements it reads)
//   softmax_forward       probs = exp(x - max - log Σ exp(x - max)), the CPU's formula
#include <cstdint>

#include "cuda/cuda_check.h"
#include "ops/softmax.h"

namespace safl::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kRowBlock = 128;  // threads per row (C = 97 for the ASCII charset)

void check_sizes(const char* op, int64_t N, int64_t C) {
  SAFL_CHECK_RANGE(N >= 0, op, ": expected N >= 0 but received ", N);
  SAFL_CHECK_RANGE(C >= 1, op, ": expected C >= 1 but received ", C);
  SAFL_CHECK_RANGE(N <= INT32_MAX, op, ": expected N <= ", INT32_MAX, " on CUDA but received ", N);
}

struct MaxOp {
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};
struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// The reduction of one value per thread over the block (kRowBlock threads), returned to every
// thread. Xor shuffles within each warp, then the warps' results in order from shared memory.
template <class Op>
__device__ float block_reduce(float value, Op op) {
  __shared__ float warp_results[kRowBlock / kWarp];
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
  __syncthreads();  // warp_results may still be read by a previous reduction
  if (threadIdx.x % kWarp == 0) warp_results[threadIdx.x / kWarp] = value;
  __syncthreads();
  float result = warp_results[0];
#pragma unroll
  for (int w = 1; w < kRowBlock / kWarp; ++w) result = op(result, warp_results[w]);
  return result;
}

// The row's maximum and log Σ exp(x - max), for every thread of the block.
__device__ void row_max_and_log_sum(const float* xr, int64_t C, float* max_out, float* log_sum_out) {
  float max = -INFINITY;
  for (int64_t c = threadIdx.x; c < C; c += kRowBlock) max = xr[c] > max ? xr[c] : max;
  max = block_reduce(max, MaxOp());
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += kRowBlock) sum += expf(xr[c] - max);
  *max_out = max;
  *log_sum_out = logf(block_reduce(sum, SumOp()));
}

__global__ void log_softmax_forward_kernel(float* __restrict__ out, const float* __restrict__ x, int64_t C) {
  const int64_t n = blockIdx.x;
  const float* xr = x + n * C;
  float max, log_sum;
  row_max_and_log_sum(xr, C, &max, &log_sum);
  for (int64_t c = threadIdx.x; c < C; c += kRowBlock) out[n * C + c] = (xr[c] - max) - log_sum;
}

__global__ void log_softmax_backward_kernel(float* dx, const float* dout, const float* __restrict__ out, int64_t C) {
  const int64_t n = blockIdx.x;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += kRowBlock) sum += dout[n * C + c];
  sum = block_reduce(sum, SumOp());
  for (int64_t c = threadIdx.x; c < C; c += kRowBlock) dx[n * C + c] = dout[n * C + c] - expf(out[n * C + c]) * sum;
}

__global__ void softmax_forward_kernel(float* __restrict__ probs, const float* __restrict__ x, int64_t C) {
  const int64_t n = blockIdx.x;
  const float* xr = x + n * C;
  float max, log_sum;
  row_max_and_log_sum(xr, C, &max, &log_sum);
  for (int64_t c = threadIdx.x; c < C; c += kRowBlock) probs[n * C + c] = expf((xr[c] - max) - log_sum);
}

}  // namespace

void log_softmax_forward(float* out, const float* x, int64_t N, int64_t C) {
  check_sizes("log_softmax_forward", N, C);
  if (N == 0) return;
  log_softmax_forward_kernel<<<unsigned(N), kRowBlock>>>(out, x, C);
  SAFL_CUDA_CHECK_LAUNCH();
}

void log_softmax_backward(float* dx, const float* dout, const float* out, int64_t N, int64_t C) {
  check_sizes("log_softmax_backward", N, C);
  if (N == 0) return;
  log_softmax_backward_kernel<<<unsigned(N), kRowBlock>>>(dx, dout, out, C);
  SAFL_CUDA_CHECK_LAUNCH();
}

void softmax_forward(float* probs, const float* x, int64_t N, int64_t C) {
  check_sizes("softmax_forward", N, C);
  if (N == 0) return;
  softmax_forward_kernel<<<unsigned(N), kRowBlock>>>(probs, x, C);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace safl::cuda
