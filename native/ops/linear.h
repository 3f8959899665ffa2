// Linear (fully connected) layer over rows: out = x · Wᵀ + b, with W laid out (out_features,
// in_features) as in PyTorch. Sequences (B, T, D) are passed as N = B·T rows. Every product goes
// through sgemm (ops/gemm.h).
//
// Backward rule: dx is written (=); dweight and dbias accumulate (+=). dx may be nullptr to skip
// it (the first layer of a network has no input gradient to produce); bias and dbias may be
// nullptr for a layer without bias.
#pragma once
#include "ops/backend.h"
#include "ops/gemm.h"

#define SAFL_LINEAR_DECLS                                                                        \
  void linear_forward(float* out /* (N, out_features) */, const float* x /* (N, in_features) */, \
                      const float* weight /* (out_features, in_features) */,                    \
                      const float* bias /* (out_features) or nullptr */, int64_t N,              \
                      int64_t in_features, int64_t out_features);                                \
  void linear_backward(float* dx /* (N, in_features), =, or nullptr */,                          \
                       float* dweight /* (out_features, in_features), += */,                     \
                       float* dbias /* (out_features), +=, or nullptr */,                        \
                       const float* dout /* (N, out_features) */,                                \
                       const float* x /* (N, in_features) */,                                    \
                       const float* weight /* (out_features, in_features) */, int64_t N,         \
                       int64_t in_features, int64_t out_features);
SAFL_DECLARE_FOR_BACKENDS(SAFL_LINEAR_DECLS)
#undef SAFL_LINEAR_DECLS

namespace safl::cpu {
// The weight of a linear layer packed once for inference (Note [packed B] in ops/gemm.h), as
// op(B) = weightᵀ (in_features, out_features).
void pack_linear_weight(PackedB& packed, const float* weight /* (out_features, in_features) */,
                        int64_t in_features, int64_t out_features);
// linear_forward with the weight also given packed by pack_linear_weight (and fitting this call):
// the rows go through sgemm_packed_b without packing the weight again, however few they are under
// bfloat16 products; in float32 up to a few rows take linear_forward's dot products (Note [few
// rows] in linear.cpp). A null weight_packed is linear_forward itself.
void linear_forward_packed(float* out /* (N, out_features) */, const float* x /* (N, in_features) */,
                           const float* weight /* (out_features, in_features) */, const PackedB* weight_packed,
                           const float* bias /* (out_features) or nullptr */, int64_t N, int64_t in_features,
                           int64_t out_features);
}  // namespace safl::cpu
