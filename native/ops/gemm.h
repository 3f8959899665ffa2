// Single-precision GEMM, row-major: C = alpha · op(A) · op(B) + beta · C.
//   op(A) is (M, K): A is (M, K) with row stride lda, or (K, M) when trans_a.
//   op(B) is (K, N): B is (K, N) with row stride ldb, or (N, K) when trans_b.
//   C is (M, N) with row stride ldc. beta == 0 overwrites C without reading it (NaNs in C vanish).
// Every matrix product of the model goes through sgemm: linear layers, convolution (im2col),
// attention projections.
#pragma once
#include "ops/backend.h"

#define SAFL_GEMM_DECLS                                                                     \
  void sgemm(float* C /* (M, N), ldc */, int64_t ldc,                                       \
             const float* A /* (M, K) or (K, M) if trans_a */, int64_t lda, bool trans_a,   \
             const float* B /* (K, N) or (N, K) if trans_b */, int64_t ldb, bool trans_b,   \
             int64_t M, int64_t N, int64_t K, float alpha, float beta);
SAFL_DECLARE_FOR_BACKENDS(SAFL_GEMM_DECLS)
#undef SAFL_GEMM_DECLS

namespace safl::cpu {
// The readable reference (triple loop, float accumulation in k order), the oracle for the fast
// paths. Same contract as sgemm.
void sgemm_reference(float* C, int64_t ldc, const float* A, int64_t lda, bool trans_a,
                     const float* B, int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K,
                     float alpha, float beta);
}  // namespace safl::cpu
