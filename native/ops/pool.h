// 2×2 max-pooling with stride 2, NCHW float32, as PyTorch's MaxPool2d(2): (B, C, H, W) →
// (B, C, H/2, W/2), rounding down, so an odd last row or column is dropped (H or W of 1 gives an
// empty output). Each output keeps the index of its maximum within its input plane (ih·W + iw,
// int32, as PyTorch's indices) for backward. Within a window the first maximum in row-major order
// wins ties; a NaN wins over numbers (NaN propagates, as in PyTorch).
//
// Backward: dx is WRITTEN (=): zero except at the saved argmax positions, which receive dout.
#pragma once
#include "ops/backend.h"

#define SAFL_POOL_DECLS                                                                           \
  void maxpool2x2_forward(float* out /* (B, C, H/2, W/2) */,                                     \
                          int32_t* argmax /* (B, C, H/2, W/2) saved: ih*W + iw in the plane */,  \
                          const float* x /* (B, C, H, W) */, int64_t B, int64_t C, int64_t H,    \
                          int64_t W);                                                            \
                                                                                                 \
  void maxpool2x2_backward(float* dx /* (B, C, H, W) written */,                                 \
                           const int32_t* argmax /* (B, C, H/2, W/2) from the forward */,        \
                           const float* dout /* (B, C, H/2, W/2) */, int64_t B, int64_t C,       \
                           int64_t H, int64_t W);
SAFL_DECLARE_FOR_BACKENDS(SAFL_POOL_DECLS)
#undef SAFL_POOL_DECLS
