// CUDA 2×2 stride-2 max-pooling (see ops/pool.h). Forward: one thread per output, comparing the
// window in the CPU op's order with its tie and NaN rules, so values and argmax match bit for
// bit. Backward: one thread per input pixel, a gather — the pixel lies in at most one window
// (stride = window), so it reads that window's argmax and takes its dout when the argmax names it,
// else 0. dx is WRITTEN (=) once per element: no zeroing pass and no atomics.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "cuda/cuda_check.h"
#include "ops/pool.h"

namespace safl::cuda {
namespace {

constexpr unsigned kMaxBlocks = 65535;  // the loops stride over the rest

unsigned blocks_for(int64_t n) { return std::min(grid_1d(size_t(n)), kMaxBlocks); }

__global__ void maxpool_forward_kernel(float* out, int32_t* argmax, const float* x, int64_t total, int64_t H,
                                       int64_t W, int64_t Ho, int64_t Wo) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    const int64_t plane = o / (Ho * Wo), r = o - plane * Ho * Wo, oh = r / Wo, ow = r - oh * Wo;
    const float* src = x + plane * H * W;
    const int64_t top_left = (2 * oh) * W + 2 * ow;
    const int64_t candidates[3] = {top_left + 1, top_left + W, top_left + W + 1};
    int64_t best = top_left;
    for (const int64_t candidate : candidates) {
      if (src[candidate] > src[best] || (isnan(src[candidate]) && !isnan(src[best]))) best = candidate;
    }
    out[o] = src[best];
    argmax[o] = int32_t(best);
  }
}

__global__ void maxpool_backward_kernel(float* dx, const int32_t* argmax, const float* dout, int64_t total, int64_t H,
                                        int64_t W, int64_t Ho, int64_t Wo) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t plane = i / (H * W), pixel = i - plane * H * W, ih = pixel / W, iw = pixel - ih * W;
    const int64_t oh = ih / 2, ow = iw / 2;
    float value = 0.0f;
    if (oh < Ho && ow < Wo) {  // an odd last row or column belongs to no window
      const int64_t o = plane * Ho * Wo + oh * Wo + ow;
      if (argmax[o] == pixel) value = dout[o];
    }
    dx[i] = value;
  }
}

// The argument checks of the CPU op, with the same messages.
void check_sizes(const char* op, int64_t B, int64_t C, int64_t H, int64_t W) {
  SAFL_CHECK_RANGE(B >= 0, op, ": expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(C >= 0, op, ": expected C >= 0 but received ", C);
  SAFL_CHECK_RANGE(H >= 0, op, ": expected H >= 0 but received ", H);
  SAFL_CHECK_RANGE(W >= 0, op, ": expected W >= 0 but received ", W);
  SAFL_CHECK_RANGE(H * W <= std::numeric_limits<int32_t>::max(), op,
                   ": expected H*W <= 2147483647 (int32 indices) but received ", H * W);
}

}  // namespace

void maxpool2x2_forward(float* out, int32_t* argmax, const float* x, int64_t B, int64_t C, int64_t H, int64_t W) {
  check_sizes("maxpool2x2_forward", B, C, H, W);
  const int64_t Ho = H / 2, Wo = W / 2, total = B * C * Ho * Wo;
  if (total == 0) return;
  maxpool_forward_kernel<<<blocks_for(total), kBlock1D>>>(out, argmax, x, total, H, W, Ho, Wo);
  SAFL_CUDA_CHECK_LAUNCH();
}

void maxpool2x2_backward(float* dx, const int32_t* argmax, const float* dout, int64_t B, int64_t C, int64_t H,
                         int64_t W) {
  check_sizes("maxpool2x2_backward", B, C, H, W);
  const int64_t total = B * C * H * W;
  if (total == 0) return;
  maxpool_backward_kernel<<<blocks_for(total), kBlock1D>>>(dx, argmax, dout, total, H, W, H / 2, W / 2);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace safl::cuda
