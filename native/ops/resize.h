// Bilinear resize with align_corners = true, NCHW float32, as PyTorch's
// F.interpolate(mode='bilinear', align_corners=True): (B, C, H, W) → (B, C, Ho, Wo). The model
// uses it to shrink the 64×256 input to the 32×64 the localisation network sees.
//
// Output pixel (oh, ow) samples the input at (oh·(H − 1)/(Ho − 1), ow·(W − 1)/(Wo − 1)), so the
// corner pixels of input and output coincide. An output extent of 1 samples source index 0 (the
// scale is 0, as in PyTorch). All of H, W, Ho, Wo must be >= 1; B or C may be 0.
//
// Backward: dx is WRITTEN (=): each dout value is scattered to its four source pixels.
#pragma once
#include "ops/backend.h"
#include "ops/host_device.h"

namespace safl {
// One output coordinate's two source indices along one dimension and their weights:
// value = w0·x[i0] + w1·x[i1], with i1 = i0 + 1 except at the last source index (i1 = i0).
struct LinearTap {
  int64_t i0, i1;
  float w0, w1;
};
// The align_corners = true tap for output index `dst` of `out_size`, input extent `in_size` >= 1.
// The scale and source position are computed in float, as PyTorch does, so results match it.
SAFL_HOST_DEVICE LinearTap align_corners_tap(int64_t dst, int64_t in_size, int64_t out_size) {
  const float scale = out_size > 1 ? float(in_size - 1) / float(out_size - 1) : 0.0f;
  const float src = scale * float(dst);
  const int64_t i0 = int64_t(src);  // src >= 0 and <= in_size − 1 up to rounding: truncation is floor
  const int64_t i1 = i0 < in_size - 1 ? i0 + 1 : i0;
  const float w1 = src - float(i0);
  return {i0, i1, 1.0f - w1, w1};
}
}  // namespace safl

#define SAFL_RESIZE_DECLS                                                                       \
  void bilinear_resize_forward(float* out /* (B, C, Ho, Wo) */, const float* x /* (B, C, H, W) */, \
                               int64_t B, int64_t C, int64_t H, int64_t W, int64_t Ho,          \
                               int64_t Wo);                                                      \
                                                                                                 \
  void bilinear_resize_backward(float* dx /* (B, C, H, W) written */,                            \
                                const float* dout /* (B, C, Ho, Wo) */, int64_t B, int64_t C,    \
                                int64_t H, int64_t W, int64_t Ho, int64_t Wo);
SAFL_DECLARE_FOR_BACKENDS(SAFL_RESIZE_DECLS)
#undef SAFL_RESIZE_DECLS
