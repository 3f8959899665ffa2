// CPU bilinear resize with align_corners = true (see ops/resize.h), spread over (b, c) planes; the
// per-coordinate weights come from align_corners_tap, shared with the CUDA backend.
#include "ops/resize.h"

#include <algorithm>

#include "common/error.h"
#include "common/threadpool.h"

namespace safl::cpu {
namespace {

void check_sizes(const char* op, int64_t B, int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
  SAFL_CHECK_RANGE(B >= 0, op, ": expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(C >= 0, op, ": expected C >= 0 but received ", C);
  SAFL_CHECK_RANGE(H >= 1, op, ": expected H >= 1 but received ", H);
  SAFL_CHECK_RANGE(W >= 1, op, ": expected W >= 1 but received ", W);
  SAFL_CHECK_RANGE(Ho >= 1, op, ": expected Ho >= 1 but received ", Ho);
  SAFL_CHECK_RANGE(Wo >= 1, op, ": expected Wo >= 1 but received ", Wo);
}

int64_t grain_for(int64_t values_per_plane) {
  constexpr int64_t kValuesPerChunk = 16384;
  return std::max<int64_t>(1, kValuesPerChunk / std::max<int64_t>(1, values_per_plane));
}

}  // namespace

void bilinear_resize_forward(float* out, const float* x, int64_t B, int64_t C, int64_t H, int64_t W,
                             int64_t Ho, int64_t Wo) {
  check_sizes("bilinear_resize_forward", B, C, H, W, Ho, Wo);
  parallel_for(0, B * C, grain_for(Ho * Wo + H * W), [&](int64_t lo, int64_t hi) {
    for (int64_t plane = lo; plane < hi; ++plane) {
      const float* src = x + plane * H * W;
      float* dst = out + plane * Ho * Wo;
      for (int64_t oh = 0; oh < Ho; ++oh) {
        const LinearTap th = align_corners_tap(oh, H, Ho);
        const float* row0 = src + th.i0 * W;
        const float* row1 = src + th.i1 * W;
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const LinearTap tw = align_corners_tap(ow, W, Wo);
          dst[oh * Wo + ow] = th.w0 * (tw.w0 * row0[tw.i0] + tw.w1 * row0[tw.i1]) +
                              th.w1 * (tw.w0 * row1[tw.i0] + tw.w1 * row1[tw.i1]);
        }
      }
    }
  });
}

void bilinear_resize_backward(float* dx, const float* dout, int64_t B, int64_t C, int64_t H,
                              int64_t W, int64_t Ho, int64_t Wo) {
  check_sizes("bilinear_resize_backward", B, C, H, W, Ho, Wo);
  parallel_for(0, B * C, grain_for(Ho * Wo + H * W), [&](int64_t lo, int64_t hi) {
    for (int64_t plane = lo; plane < hi; ++plane) {
      const float* src = dout + plane * Ho * Wo;
      float* dst = dx + plane * H * W;
      std::fill(dst, dst + H * W, 0.0f);
      for (int64_t oh = 0; oh < Ho; ++oh) {
        const LinearTap th = align_corners_tap(oh, H, Ho);
        float* row0 = dst + th.i0 * W;
        float* row1 = dst + th.i1 * W;
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const LinearTap tw = align_corners_tap(ow, W, Wo);
          const float g = src[oh * Wo + ow];
          row0[tw.i0] += th.w0 * tw.w0 * g;
          row0[tw.i1] += th.w0 * tw.w1 * g;
          row1[tw.i0] += th.w1 * tw.w0 * g;
          row1[tw.i1] += th.w1 * tw.w1 * g;
        }
      }
    }
  });
}

}  // namespace safl::cpu
