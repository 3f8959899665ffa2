// CUDA bilinear resize with align_corners = true (see ops/resize.h); the taps come from
// align_corners_tap, shared with the CPU. Forward: one thread per output pixel. Backward: one
// thread per input pixel gathering the dout values whose taps reach it (Note [resize backward as
// a gather]); dx is WRITTEN (=) once per element, deterministically, without atomics.
//
// The float arithmetic repeats the CPU op's products and sums in its order, with __fmul_rn /
// __fadd_rn so that nvcc does not fuse them into fma (the CPU build rounds every product), and
// the results match the CPU's bit for bit.
//
// Note [resize backward as a gather]: the CPU scatters each dout[oh, ow] to its four taps, in the
// order (oh, ow) ascending and, within one output, (i0, j0), (i0, j1), (i1, j0), (i1, j1). Input
// row h receives from the output rows whose tap i0 or i1 is h; i0 = floor(oh·scale) rises with oh,
// so those rows form one run around (h ± 1)/scale. The thread scans that run widened by one row on
// each side (the float rounding of oh·scale moves i0 by less than one row), recomputes each tap
// and keeps the rows that name h, and likewise for columns; it then adds the contributions in the
// CPU's order. An output extent of 1 has the single candidate 0; an input extent of 1 (scale 0)
// receives from every output index.
#include <algorithm>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "ops/resize.h"

namespace safl::cuda {
namespace {

constexpr unsigned kMaxBlocks = 65535;  // the loops stride over the rest

unsigned blocks_for(int64_t n) { return std::min(grid_1d(size_t(n)), kMaxBlocks); }

__global__ void resize_forward_kernel(float* out, const float* x, int64_t total, int64_t H, int64_t W, int64_t Ho,
                                      int64_t Wo) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < total; o += stride) {
    const int64_t plane = o / (Ho * Wo), r = o - plane * Ho * Wo, oh = r / Wo, ow = r - oh * Wo;
    const LinearTap th = align_corners_tap(oh, H, Ho), tw = align_corners_tap(ow, W, Wo);
    const float* row0 = x + plane * H * W + th.i0 * W;
    const float* row1 = x + plane * H * W + th.i1 * W;
    const float top = __fadd_rn(__fmul_rn(tw.w0, row0[tw.i0]), __fmul_rn(tw.w1, row0[tw.i1]));
    const float bottom = __fadd_rn(__fmul_rn(tw.w0, row1[tw.i0]), __fmul_rn(tw.w1, row1[tw.i1]));
    out[o] = __fadd_rn(__fmul_rn(th.w0, top), __fmul_rn(th.w1, bottom));
  }
}

// The candidate output indices [first, last] whose taps may reach input index `i` (Note [resize
// backward as a gather]).
struct Candidates {
  int64_t first, last;
};
__device__ Candidates candidates_for(int64_t i, int64_t in_size, int64_t out_size) {
  if (out_size == 1) return {0, 0};
  if (in_size == 1) return {0, out_size - 1};  // scale 0: every output taps index 0
  const double scale = double(in_size - 1) / double(out_size - 1);
  const int64_t first = int64_t(floor(double(i - 1) / scale)) - 1;
  const int64_t last = int64_t(floor(double(i + 1) / scale)) + 1;
  return {first < 0 ? 0 : first, last > out_size - 1 ? out_size - 1 : last};
}

__global__ void resize_backward_kernel(float* dx, const float* dout, int64_t total, int64_t H, int64_t W, int64_t Ho,
                                       int64_t Wo) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t plane = i / (H * W), pixel = i - plane * H * W, h = pixel / W, w = pixel - h * W;
    const float* src = dout + plane * Ho * Wo;
    const Candidates rows = candidates_for(h, H, Ho), cols = candidates_for(w, W, Wo);
    float sum = 0.0f;
    for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
      const LinearTap th = align_corners_tap(oh, H, Ho);
      if (th.i0 != h && th.i1 != h) continue;
      for (int64_t ow = cols.first; ow <= cols.last; ++ow) {
        const LinearTap tw = align_corners_tap(ow, W, Wo);
        if (tw.i0 != w && tw.i1 != w) continue;
        const float g = src[oh * Wo + ow];
        // The CPU's order: (i0, j0), (i0, j1), (i1, j0), (i1, j1), each weight product first.
        if (th.i0 == h && tw.i0 == w) sum = __fadd_rn(sum, __fmul_rn(__fmul_rn(th.w0, tw.w0), g));
        if (th.i0 == h && tw.i1 == w) sum = __fadd_rn(sum, __fmul_rn(__fmul_rn(th.w0, tw.w1), g));
        if (th.i1 == h && tw.i0 == w) sum = __fadd_rn(sum, __fmul_rn(__fmul_rn(th.w1, tw.w0), g));
        if (th.i1 == h && tw.i1 == w) sum = __fadd_rn(sum, __fmul_rn(__fmul_rn(th.w1, tw.w1), g));
      }
    }
    dx[i] = sum;
  }
}

// The argument checks of the CPU op, with the same messages.
void check_sizes(const char* op, int64_t B, int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
  SAFL_CHECK_RANGE(B >= 0, op, ": expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(C >= 0, op, ": expected C >= 0 but received ", C);
  SAFL_CHECK_RANGE(H >= 1, op, ": expected H >= 1 but received ", H);
  SAFL_CHECK_RANGE(W >= 1, op, ": expected W >= 1 but received ", W);
  SAFL_CHECK_RANGE(Ho >= 1, op, ": expected Ho >= 1 but received ", Ho);
  SAFL_CHECK_RANGE(Wo >= 1, op, ": expected Wo >= 1 but received ", Wo);
}

}  // namespace

void bilinear_resize_forward(float* out, const float* x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t Ho,
                             int64_t Wo) {
  check_sizes("bilinear_resize_forward", B, C, H, W, Ho, Wo);
  const int64_t total = B * C * Ho * Wo;
  if (total == 0) return;
  resize_forward_kernel<<<blocks_for(total), kBlock1D>>>(out, x, total, H, W, Ho, Wo);
  SAFL_CUDA_CHECK_LAUNCH();
}

void bilinear_resize_backward(float* dx, const float* dout, int64_t B, int64_t C, int64_t H, int64_t W, int64_t Ho,
                              int64_t Wo) {
  check_sizes("bilinear_resize_backward", B, C, H, W, Ho, Wo);
  const int64_t total = B * C * H * W;
  if (total == 0) return;
  resize_backward_kernel<<<blocks_for(total), kBlock1D>>>(dx, dout, total, H, W, Ho, Wo);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace safl::cuda
