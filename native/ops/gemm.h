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
#include <vector>

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

// Note [packed B]: a product whose op(B) does not change between calls (a weight at inference:
// the decoder's, read again at every decoding step) can have it packed once into the panels
// sgemm's kernels read, instead of at every call. A PackedB is packed for the kernels sgemm would
// run on the packing thread (its SIMD level and matrix-product precision); sgemm_packed_b then
// computes what sgemm computes with the original B, bit for bit, skipping the packing of B.
// Before each use, fits_this_call() says whether the calling thread still runs those kernels
// (a precision scope may have changed them); sgemm_packed_b throws when it does not.
class PackedB {
 public:
  // Packs op(B) (K, N) of B as sgemm takes it: (K, N) with row stride ldb, or (N, K) if trans_b.
  void pack(const float* B, int64_t ldb, bool trans_b, int64_t K, int64_t N);
  // Whether sgemm_packed_b on this thread would run the kernels this was packed for.
  bool fits_this_call() const;
  int64_t K() const { return K_; }
  int64_t N() const { return N_; }
  // The panels of depth block pb (op(B) rows pb·kKC onwards, gemm.cpp) from column j, a multiple of NR.
  const float* panels(int64_t pb, int64_t j) const;

 private:
  size_t panel_offset(int64_t pb, int64_t j) const;

  std::vector<float> storage_;  // the panels, from a 64-byte-aligned offset
  size_t offset_ = 0;
  int64_t K_ = 0, N_ = 0;
  int64_t block_floats_ = 0;  // floats of one full depth block: all columns, rounded up to NR
  int64_t full_k_ = 0;        // floats a column takes in a full depth block
  int64_t last_k_ = 0;        // ... in the last one
  const void* kernels_ = nullptr;  // the gemm_detail::GemmKernels packed for
};

// C (M, N) = alpha · op(A) · op(B) + beta · C with op(B) from B (K = B.K(), N = B.N()); same
// contract and results as sgemm. B must fit this call (PackedB::fits_this_call()).
void sgemm_packed_b(float* C /* (M, N), ldc */, int64_t ldc, const float* A /* (M, K) or (K, M) if trans_a */,
                    int64_t lda, bool trans_a, const PackedB& B, int64_t M, float alpha, float beta);

// The readable reference (triple loop, float accumulation in k order), the oracle for the fast
// paths. Same contract as sgemm, without its argument checks.
void sgemm_reference(float* C, int64_t ldc, const float* A, int64_t lda, bool trans_a,
                     const float* B, int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K,
                     float alpha, float beta);
}  // namespace safl::cpu
