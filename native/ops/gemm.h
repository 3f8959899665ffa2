// Single-precision GEMM, row-major: C = alpha · op(A) · op(B) + beta · C.
//   op(A) is (M, K): A is (M, K) with row stride lda, or (K, M) when trans_a.
//   op(B) is (K, N): B is (K, N) with row stride ldb, or (N, K) when trans_b.
//   C is (M, N) with row stride ldc. beta == 0 overwrites C without reading it (NaNs in C vanish).
//   Strides must cover a stored row: lda >= (trans_a ? M : K), ldb >= (trans_b ? K : N),
//   ldc >= N (the CPU sgemm throws a RangeError otherwise). M, N or K = 0 is allowed: K = 0 (or
//   alpha = 0) scales C by beta without reading A or B.
// Every matrix product of the model goes through sgemm: linear layers, convolution (im2col),
// attention projections.
//
// The CPU sgemm (native/cpu/gemm.cpp) packs and blocks for the caches, runs AVX-512, AVX2/FMA
// or portable micro-kernels as simd_level() says, and splits large products over the thread
// pool (a call from inside a pool task runs serially). It is safe to call from several threads
// at once. Results can differ from sgemm_reference in the last bits (another summation order).
//
// Under MatmulPrecision::BFloat16 (common/matmul_precision.h), where bfloat16_matmul_available(),
// the CPU sgemm multiplies on the AMX tile unit (native/cpu/gemm_kernel_amx.cpp): it computes
// sgemm_reference of bfloat16_round(A) and bfloat16_round(B), up to the summation order.
#pragma once
#include <cstdint>
#include <cstring>

#include "ops/backend.h"

#define SAFL_GEMM_DECLS                                                                     \
  void sgemm(float* C /* (M, N), ldc */, int64_t ldc,                                       \
             const float* A /* (M, K) or (K, M) if trans_a */, int64_t lda, bool trans_a,   \
             const float* B /* (K, N) or (N, K) if trans_b */, int64_t ldb, bool trans_b,   \
             int64_t M, int64_t N, int64_t K, float alpha, float beta);
SAFL_DECLARE_FOR_BACKENDS(SAFL_GEMM_DECLS)
#undef SAFL_GEMM_DECLS

namespace safl::cpu {
// x rounded to the nearest bfloat16 (8 bits of mantissa; ties to even), as a float: what the
// hardware conversion (VCVTNE2PS2BF16) gives, subnormals included (they become zero of the same
// sign) and NaN kept a NaN.
inline float bfloat16_round(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7F800000u) == 0) {
    bits &= 0x80000000u;
  } else if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
    bits |= 0x00400000u;
  } else {
    bits += 0x7FFFu + ((bits >> 16) & 1u);
  }
  bits &= 0xFFFF0000u;
  std::memcpy(&x, &bits, sizeof bits);
  return x;
}

// The readable reference (triple loop, float accumulation in k order), the oracle for the fast
// paths. Same contract as sgemm, without its argument checks.
void sgemm_reference(float* C, int64_t ldc, const float* A, int64_t lda, bool trans_a,
                     const float* B, int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K,
                     float alpha, float beta);
}  // namespace safl::cpu
