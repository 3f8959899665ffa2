// AVX2 + FMA SGEMM pieces: a 6 × 16 register tile (two ymm columns of accumulators per row, 12
// accumulators of the 16 registers) and the packing routines of gemm_pack.h. Compiled with
// target("avx2,fma") attributes; only called when simd_level() is Avx2 or above (gemm_kernels.h).
#include "cpu/gemm_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <array>
#include <utility>

#include "cpu/gemm_pack.h"

namespace safl::cpu::gemm_detail {
namespace {

constexpr int kMR = 6;
constexpr int kVectors = 2;
constexpr int kNR = 8 * kVectors;

// Lane masks for the first `left` columns of an 8-wide vector (all lanes when left >= 8).
__attribute__((target("avx2,fma"))) __m256i lane_mask(int64_t left) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(left < 0 ? 0 : left > 8 ? 8 : left)), lanes);
}

// Sums the ROWS × kNR products over kc into out (ROWS × kNR floats). Kept out of line so that
// alpha and beta are not live across the loop: 12 accumulators, 2 B vectors and a broadcast
// already take 15 of the 16 ymm registers, and one more would spill an accumulator.
template <int ROWS>
__attribute__((target("avx2,fma"), noinline)) void accumulate(int64_t kc, const float* a,
                                                             const float* b, float* out) {
  __m256 acc[ROWS][kVectors];
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm256_setzero_ps();
  }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    __m256 bv[kVectors];
#pragma GCC unroll 2
    for (int v = 0; v < kVectors; ++v) bv[v] = _mm256_loadu_ps(b + k * kNR + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + k * kMR + r);
#pragma GCC unroll 2
      for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < kVectors; ++v) _mm256_storeu_ps(out + r * kNR + 8 * v, acc[r][v]);
  }
}

// Computes a ROWS × kNR tile; ROWS < kMR serves the last row panel of a block.
template <int ROWS>
__attribute__((target("avx2,fma"))) void tile(int64_t kc, const float* a, const float* b, float* c,
                                              int64_t ldc, int64_t cols, float alpha, float beta) {
  alignas(32) float sums[ROWS * kNR];
  accumulate<ROWS>(kc, a, b, sums);
  __m256 acc[ROWS][kVectors];
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm256_load_ps(sums + r * kNR + 8 * v);
  }
  const __m256 alpha_v = _mm256_set1_ps(alpha);
  const __m256 beta_v = _mm256_set1_ps(beta);
  if (cols == kNR) {
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 2
      for (int v = 0; v < kVectors; ++v) {
        float* dst = c + r * ldc + 8 * v;
        __m256 x = _mm256_mul_ps(acc[r][v], alpha_v);
        if (beta != 0.0f) x = _mm256_fmadd_ps(_mm256_loadu_ps(dst), beta_v, x);
        _mm256_storeu_ps(dst, x);
      }
    }
    return;
  }
  __m256i mask[kVectors];
#pragma GCC unroll 2
  for (int v = 0; v < kVectors; ++v) mask[v] = lane_mask(cols - 8 * v);
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < kVectors; ++v) {
      float* dst = c + r * ldc + 8 * v;
      __m256 x = _mm256_mul_ps(acc[r][v], alpha_v);
      if (beta != 0.0f) x = _mm256_fmadd_ps(_mm256_maskload_ps(dst, mask[v]), beta_v, x);
      _mm256_maskstore_ps(dst, mask[v], x);
    }
  }
}

using TileFn = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                       int64_t cols, float alpha, float beta);

template <int... R>
constexpr std::array<TileFn, sizeof...(R)> make_tiles(std::integer_sequence<int, R...>) {
  return {&tile<R + 1>...};
}

void micro_kernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t rows,
                  int64_t cols, float alpha, float beta) {
  static constexpr auto tiles = make_tiles(std::make_integer_sequence<int, kMR>());
  tiles[rows - 1](kc, a, b, c, ldc, cols, alpha, beta);
}

}  // namespace

const GemmKernels& gemm_kernels_avx2() {
  static const GemmKernels kernels{kMR, kNR, &micro_kernel, &pack_a_panels<kMR>, &pack_b_panels<kNR>};
  return kernels;
}

}  // namespace safl::cpu::gemm_detail

#else

namespace safl::cpu::gemm_detail {
const GemmKernels& gemm_kernels_avx2() { return gemm_kernels_generic(); }
}  // namespace safl::cpu::gemm_detail

#endif
