// CPU GEMM (see ops/gemm.h): the plain reference. The packed, cache-blocked SIMD path replaces
// sgemm's body and keeps sgemm_reference as its oracle.
#include "ops/gemm.h"

#include "common/error.h"

namespace safl::cpu {

void sgemm_reference(float* C, int64_t ldc, const float* A, int64_t lda, bool trans_a,
                     const float* B, int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K,
                     float alpha, float beta) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const float a = trans_a ? A[k * lda + i] : A[i * lda + k];
        const float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
        acc += a * b;
      }
      float& c = C[i * ldc + j];
      c = beta == 0.0f ? alpha * acc : alpha * acc + beta * c;
    }
  }
}

void sgemm(float* C, int64_t ldc, const float* A, int64_t lda, bool trans_a, const float* B,
           int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  SAFL_CHECK_RANGE(M >= 0 && N >= 0 && K >= 0, "sgemm: expected M, N, K >= 0 but received ", M, ", ", N, ", ", K);
  sgemm_reference(C, ldc, A, lda, trans_a, B, ldb, trans_b, M, N, K, alpha, beta);
}

}  // namespace safl::cpu
