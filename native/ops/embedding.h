// Token embedding and sinusoidal positions for sequences (B, T, D), rows N = B·T.
//
//   embedding_forward   out[n] = table[ids[n]]; every id must lie in [0, rows) (RangeError naming
//                       the first bad id and its position; nothing is written then).
//   embedding_backward  dtable[ids[n]] += dout[n]  (a parameter gradient: accumulates, +=).
//   sinusoid_table      the (T, D) table of "Attention Is All You Need":
//                         P[t, 2i] = sin(t · 10000^(-2i/D)),  P[t, 2i+1] = cos(t · 10000^(-2i/D)).
//                       For one decoding step at position t, pass table + t·D with T = 1.
//   add_positions       out = x · embedding_scale + P, broadcast over the batch; out may be x.
//                       embedding_scale defaults to 1 (none). The Transformer paper multiplies
//                       its embeddings by sqrt(D) before adding positions: pass sqrt(D) for that.
//
// Note [backward of add_positions]: the table is a constant, so the gradient with respect to x is
// dout · embedding_scale — dout itself with the default scale of 1. There is no backward op: the
// caller passes dout straight on (or scales it when it chose a scale).
#pragma once
#include "ops/backend.h"

#define SAFL_EMBEDDING_DECLS                                                                      \
  void embedding_forward(float* out /* (N, D) */, const int32_t* ids /* (N) */,                   \
                         const float* table /* (rows, D) */, int64_t N, int64_t rows, int64_t D); \
  void embedding_backward(float* dtable /* (rows, D), += */, const float* dout /* (N, D) */,      \
                          const int32_t* ids /* (N) */, int64_t N, int64_t rows, int64_t D);      \
  void sinusoid_table(float* table /* (T, D) */, int64_t T, int64_t D);                           \
  void add_positions(float* out /* (B, T, D), may be x */, const float* x /* (B, T, D) */,        \
                     const float* positions /* (T, D) */, int64_t B, int64_t T, int64_t D,        \
                     float embedding_scale = 1.0f);
SAFL_DECLARE_FOR_BACKENDS(SAFL_EMBEDDING_DECLS)
#undef SAFL_EMBEDDING_DECLS
