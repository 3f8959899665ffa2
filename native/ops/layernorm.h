// Layer normalisation over the last dimension D of N rows (sequences (B, T, D) as N = B·T):
//   out = (x - mean) · rstd · gamma + beta,  rstd = 1 / sqrt(var + eps), var the biased variance.
// The forward saves mean and rstd per row for the backward. D must be at least 1 (the statistics
// of an empty row are undefined); N = 0 does nothing.
//
// Backward rule: dx is written (=); dgamma and dbeta accumulate (+=). dx may be dout itself.
#pragma once
#include "ops/backend.h"

#define SAFL_LAYERNORM_DECLS                                                                    \
  void layernorm_forward(float* out /* (N, D) */, float* mean /* (N) saved */,                  \
                         float* rstd /* (N) saved */, const float* x /* (N, D) */,              \
                         const float* gamma /* (D) */, const float* beta /* (D) */, int64_t N, \
                         int64_t D, float eps = 1e-5f);                                         \
  void layernorm_backward(float* dx /* (N, D), = */, float* dgamma /* (D), += */,               \
                          float* dbeta /* (D), += */, const float* dout /* (N, D) */,           \
                          const float* x /* (N, D) */, const float* mean /* (N) */,             \
                          const float* rstd /* (N) */, const float* gamma /* (D) */, int64_t N, \
                          int64_t D);
SAFL_DECLARE_FOR_BACKENDS(SAFL_LAYERNORM_DECLS)
#undef SAFL_LAYERNORM_DECLS
