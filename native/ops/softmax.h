// Softmax and log-softmax over the last dimension C of N rows, numerically stable (the row maximum
// is subtracted before exponentiating, so logits of ±1e4 stay finite). C must be at least 1.
//
//   log_softmax_forward   out = x - max - log Σ exp(x - max)
//   log_softmax_backward  dx = dout - exp(out) · Σ dout   (written, =; dx may be dout itself)
//   softmax_forward       probabilities, for decoding (no backward: training uses the fused
//                         focal loss of ops/focal_loss.h)
#pragma once
#include "ops/backend.h"

#define SAFL_SOFTMAX_DECLS                                                                       \
  void log_softmax_forward(float* out /* (N, C) */, const float* x /* (N, C) */, int64_t N,     \
                           int64_t C);                                                          \
  void log_softmax_backward(float* dx /* (N, C), = */, const float* dout /* (N, C) */,          \
                            const float* out /* (N, C) the forward's output */, int64_t N,      \
                            int64_t C);                                                         \
  void softmax_forward(float* probs /* (N, C) */, const float* x /* (N, C) */, int64_t N,       \
                       int64_t C);
SAFL_DECLARE_FOR_BACKENDS(SAFL_SOFTMAX_DECLS)
#undef SAFL_SOFTMAX_DECLS
