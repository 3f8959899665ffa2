// 2-D convolution, NCHW float32, as PyTorch's Conv2d: weights (Co, Ci, kernel_h, kernel_w), any
// kernel size, stride and zero padding, optional bias (nullptr = none), no dilation or groups.
//
// Shapes: x (B, Ci, H, W) → out (B, Co, Ho, Wo) with Ho = conv2d_output_size(H, kernel_h,
// stride_h, pad_h) and Wo likewise; H + 2·pad_h >= kernel_h and W + 2·pad_w >= kernel_w are
// required, so Ho, Wo >= 1. B, Ci or Co may be 0 (nothing to compute; with Ci = 0 the output is
// the bias, or zeros).
//
// The CPU path is im2col + one sgemm for the whole batch (Note [one GEMM per batch] in
// native/cpu/conv.cpp), and for the forward of a 3×3 conv of stride 1 and padding 1 with at least
// 64 input channels Winograd's F(4, 3) along the rows (Note [Winograd rows] there, rounding
// differently in the sixth digit); it needs a caller-provided workspace of conv2d_workspace_floats(...)
// floats, which the model carves from its activation arena, so the hot path allocates nothing.
// The workspace holds scratch only: its contents are undefined after a call, and it may be nullptr
// when its size is 0. The direct-loop references below are the oracle the fast path is tested
// against.
//
// Backward: dweight and dbias ACCUMULATE (+=); dx is WRITTEN (=). dx and dbias may be nullptr
// when that gradient is not wanted (the network's first layer has no dx to produce).
#pragma once
#include "common/error.h"
#include "ops/backend.h"
#include "ops/host_device.h"

namespace safl {
// Output extent of one spatial dimension: (in + 2·pad − kernel) / stride + 1, rounded down.
// Meaningful when in + 2·pad >= kernel (which the ops check).
SAFL_HOST_DEVICE int64_t conv2d_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}

namespace detail {
// The argument checks both backends run first (identical messages on CPU and CUDA).
inline void check_conv2d_sizes(const char* op, int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co,
                               int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  SAFL_CHECK_RANGE(B >= 0, op, ": expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(Ci >= 0, op, ": expected Ci >= 0 but received ", Ci);
  SAFL_CHECK_RANGE(H >= 0, op, ": expected H >= 0 but received ", H);
  SAFL_CHECK_RANGE(W >= 0, op, ": expected W >= 0 but received ", W);
  SAFL_CHECK_RANGE(Co >= 0, op, ": expected Co >= 0 but received ", Co);
  SAFL_CHECK_RANGE(kh >= 1, op, ": expected kernel_h >= 1 but received ", kh);
  SAFL_CHECK_RANGE(kw >= 1, op, ": expected kernel_w >= 1 but received ", kw);
  SAFL_CHECK_RANGE(sh >= 1, op, ": expected stride_h >= 1 but received ", sh);
  SAFL_CHECK_RANGE(sw >= 1, op, ": expected stride_w >= 1 but received ", sw);
  SAFL_CHECK_RANGE(ph >= 0, op, ": expected pad_h >= 0 but received ", ph);
  SAFL_CHECK_RANGE(pw >= 0, op, ": expected pad_w >= 0 but received ", pw);
  SAFL_CHECK_RANGE(H + 2 * ph >= kh, op, ": expected H + 2*pad_h >= kernel_h (", kh, ") but received ",
                   H + 2 * ph);
  SAFL_CHECK_RANGE(W + 2 * pw >= kw, op, ": expected W + 2*pad_w >= kernel_w (", kw, ") but received ",
                   W + 2 * pw);
}
}  // namespace detail
}  // namespace safl

#define SAFL_CONV_DECLS                                                                            \
  /* Floats of workspace that conv2d_forward and conv2d_backward need for these sizes (the same */ \
  /* number serves both). Checks the sizes as the ops do. */                                       \
  int64_t conv2d_workspace_floats(int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co,         \
                                  int64_t kernel_h, int64_t kernel_w, int64_t stride_h,            \
                                  int64_t stride_w, int64_t pad_h, int64_t pad_w);                 \
                                                                                                   \
  void conv2d_forward(float* out /* (B, Co, Ho, Wo) */,                                           \
                      float* workspace /* (conv2d_workspace_floats(...)) scratch */,              \
                      const float* x /* (B, Ci, H, W) */,                                          \
                      const float* weight /* (Co, Ci, kernel_h, kernel_w) */,                      \
                      const float* bias /* (Co) or nullptr */, int64_t B, int64_t Ci, int64_t H,   \
                      int64_t W, int64_t Co, int64_t kernel_h, int64_t kernel_w, int64_t stride_h, \
                      int64_t stride_w, int64_t pad_h, int64_t pad_w);                             \
                                                                                                   \
  void conv2d_backward(float* dx /* (B, Ci, H, W) written, or nullptr */,                         \
                       float* dweight /* (Co, Ci, kernel_h, kernel_w) accumulated */,              \
                       float* dbias /* (Co) accumulated, or nullptr */,                            \
                       float* workspace /* (conv2d_workspace_floats(...)) scratch */,             \
                       const float* dout /* (B, Co, Ho, Wo) */, const float* x /* (B, Ci, H, W) */, \
                       const float* weight /* (Co, Ci, kernel_h, kernel_w) */, int64_t B,          \
                       int64_t Ci, int64_t H, int64_t W, int64_t Co, int64_t kernel_h,             \
                       int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,        \
                       int64_t pad_w);
SAFL_DECLARE_FOR_BACKENDS(SAFL_CONV_DECLS)
#undef SAFL_CONV_DECLS

namespace safl::cpu {
// Plain direct loops, same contracts as conv2d_forward / conv2d_backward (no workspace).
void conv2d_forward_reference(float* out /* (B, Co, Ho, Wo) */, const float* x /* (B, Ci, H, W) */,
                              const float* weight /* (Co, Ci, kernel_h, kernel_w) */,
                              const float* bias /* (Co) or nullptr */, int64_t B, int64_t Ci,
                              int64_t H, int64_t W, int64_t Co, int64_t kernel_h, int64_t kernel_w,
                              int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w);
void conv2d_backward_reference(float* dx /* (B, Ci, H, W) written, or nullptr */,
                               float* dweight /* (Co, Ci, kernel_h, kernel_w) accumulated */,
                               float* dbias /* (Co) accumulated, or nullptr */,
                               const float* dout /* (B, Co, Ho, Wo) */,
                               const float* x /* (B, Ci, H, W) */,
                               const float* weight /* (Co, Ci, kernel_h, kernel_w) */, int64_t B,
                               int64_t Ci, int64_t H, int64_t W, int64_t Co, int64_t kernel_h,
                               int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                               int64_t pad_w);
}  // namespace safl::cpu
