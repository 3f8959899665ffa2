// CUDA focal loss fused with the log-softmax gradient (see ops/focal_loss.h; the per-token math is
// ops/focal_math.h, shared with the CPU). Three kernels:
//   check_targets_kernel  one block: counts the non-pad rows and finds the first bad target
//                         (copied to the host, Note [CUDA focal loss syncs once]).
//   focal_rows_kernel     one block per row: the row max, log Σ exp, the token loss and the gradient
//                         row, with shared-memory reductions; threads stride over C, so C need not
//                         be a multiple of the block.
//   mean_loss_kernel      one block: the row losses summed in double in a fixed order, / count.
#include <cstdint>

#include "cuda/cuda_check.h"
#include "ops/focal_loss.h"
#include "ops/focal_math.h"

namespace safl::cuda {
namespace {

constexpr int kRowBlock = 128;     // threads per logits row (C = 97 for the ASCII charset)
constexpr int kReduceBlock = 256;  // threads of the single-block kernels
constexpr int kWarp = 32;

struct MaxOp {
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};
struct MinOp {
  __device__ int64_t operator()(int64_t a, int64_t b) const { return a < b ? a : b; }
};
struct SumOp {
  template <class T>
  __device__ T operator()(T a, T b) const { return a + b; }
};

// Reduces one value per thread over the block (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. `scratch` holds one T per warp. The order of the reduction is fixed by
// the block size, so the result is deterministic.
template <class T, class Op>
__device__ T block_reduce(T value, Op op, T* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = blockDim.x / kWarp;
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    value = op(value, __shfl_down_sync(0xffffffffu, value, offset));
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < warps ? scratch[lane] : scratch[0];
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      const T other = __shfl_down_sync(0xffffffffu, value, offset);
      if (lane + offset < warps) value = op(value, other);
    }
    if (lane == 0) scratch[0] = value;
  }
  __syncthreads();
  return scratch[0];
}

// status[0] = number of non-pad rows, status[1] = first bad position (N when none).
__global__ void check_targets_kernel(int64_t* status, const int32_t* targets, int64_t N, int64_t C,
                                     int32_t pad_index) {
  __shared__ int64_t scratch[kReduceBlock / kWarp];
  int64_t count = 0, first_bad = N;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const int32_t t = targets[n];
    if (t == pad_index) continue;
    if (t < 0 || t >= C) first_bad = first_bad < n ? first_bad : n;
    else ++count;
  }
  count = block_reduce(count, SumOp(), scratch);
  first_bad = block_reduce(first_bad, MinOp(), scratch);
  if (threadIdx.x == 0) {
    status[0] = count;
    status[1] = first_bad;
  }
}

__global__ void focal_rows_kernel(float* row_loss, float* dlogits, const float* logits,
                                  const int32_t* targets, int64_t C, int32_t pad_index,
                                  float gamma, float alpha, float row_grad_scale) {
  __shared__ float scratch[kRowBlock / kWarp];
  __shared__ int count_scratch[kRowBlock / kWarp];
  const int64_t n = blockIdx.x;
  const int32_t t = targets[n];
  float* grad_row = dlogits ? dlogits + n * C : nullptr;
  if (t == pad_index) {  // the same branch for the whole block
    if (threadIdx.x == 0) row_loss[n] = 0.0f;
    if (grad_row)
      for (int64_t c = threadIdx.x; c < C; c += blockDim.x) grad_row[c] = 0.0f;
    return;
  }
  const float* z = logits + n * C;
  float max = -INFINITY;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) max = z[c] > max ? z[c] : max;
  max = block_reduce(max, MaxOp(), scratch);
  // Note [log-sum-exp near p_t = 1] (ops/focal_loss.h): the logits equal to the max are counted,
  // the others' exponentials summed.
  float rest = 0.0f;
  int ties = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    if (z[c] == max) ++ties;
    else rest += expf(z[c] - max);
  }
  rest = block_reduce(rest, SumOp(), scratch);
  ties = block_reduce(ties, SumOp(), count_scratch);
  const float log_sum = log1pf(float(ties - 1) + rest);
  const float log_p = (z[t] - max) - log_sum;
  if (threadIdx.x == 0) row_loss[n] = focal_loss_term(log_p, gamma, alpha);
  if (!grad_row) return;
  const float coefficient = row_grad_scale * focal_grad_factor(log_p, gamma, alpha);
  const float one_minus_p_t = focal_one_minus_p(log_p);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    grad_row[c] = coefficient * (c == t ? one_minus_p_t : -expf((z[c] - max) - log_sum));
}

__global__ void mean_loss_kernel(float* loss, const float* row_loss, int64_t N, int64_t count) {
  __shared__ double scratch[kReduceBlock / kWarp];
  double sum = 0.0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) sum += row_loss[n];
  sum = block_reduce(sum, SumOp(), scratch);
  if (threadIdx.x == 0) *loss = count > 0 ? float(sum / double(count)) : 0.0f;
}

}  // namespace

void focal_loss(float* loss, float* token_loss, float* dlogits, const float* logits,
                const int32_t* targets, int64_t N, int64_t C, int32_t pad_index, float gamma,
                float alpha, float grad_scale) {
  check_focal_loss_arguments(N, C, gamma, alpha, grad_scale);
  SAFL_CHECK_RANGE(N <= INT32_MAX, "focal_loss: expected N <= ", INT32_MAX, " on CUDA but received ", N);
  DeviceBuffer<int64_t> status(2);
  check_targets_kernel<<<1, kReduceBlock>>>(status.data(), targets, N, C, pad_index);
  SAFL_CUDA_CHECK_LAUNCH();
  int64_t host_status[2];
  status.download(host_status);
  const int64_t count = host_status[0], first_bad = host_status[1];
  if (first_bad < N) {
    int32_t bad_target = 0;
    SAFL_CUDA_CHECK(cudaMemcpy(&bad_target, targets + first_bad, sizeof bad_target, cudaMemcpyDeviceToHost));
    SAFL_CHECK_RANGE(false, "focal_loss: expected targets in [0, ", C, ") or the pad index ", pad_index,
                     " but received ", bad_target, " at position ", first_bad);
  }
  if (N == 0) {
    SAFL_CUDA_CHECK(cudaMemset(loss, 0, sizeof(float)));
    return;
  }
  DeviceBuffer<float> scratch(token_loss ? 0 : N);
  float* row_loss = token_loss ? token_loss : scratch.data();
  const float row_grad_scale = count > 0 ? grad_scale / float(count) : 0.0f;
  focal_rows_kernel<<<static_cast<unsigned>(N), kRowBlock>>>(row_loss, dlogits, logits, targets, C, pad_index,
                                                              gamma, alpha, row_grad_scale);
  SAFL_CUDA_CHECK_LAUNCH();
  mean_loss_kernel<<<1, kReduceBlock>>>(loss, row_loss, N, count);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace safl::cuda
