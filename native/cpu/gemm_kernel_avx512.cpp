// AVX-512 (F) SGEMM pieces: an 8 × 48 register tile and packing routines that transpose with
// 16 × 16 in-register blocks. Compiled with target("avx512f") attributes; only called when
// simd_level() is Avx512 (see gemm_kernels.h).
//
// Note [8 × 48 tile]: 8 rows × 3 zmm = 24 accumulators, 3 B vectors, the A value broadcast from
// memory: 28 of the 32 registers, 24 FMAs per 11 loads. Among 12 × 32, 14 × 32, 9 × 48 and 7 × 64
// it was as fast as any on the model's shapes, and 8 rows divide every channel count of the
// configs (16 … 512), so convolutions with few output channels waste no rows.
#include "cpu/gemm_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "cpu/gemm_pack.h"
#include "cpu/gemm_tile_table.h"
#include "cpu/gemm_transpose_avx512.h"

namespace safl::cpu::gemm_detail {
namespace {

constexpr int kMR = 8;        // Note [8 × 48 tile]
constexpr int kVectors = 3;   // zmm vectors across a tile row
constexpr int kNR = 16 * kVectors;

struct Tiles {
  // Computes a ROWS × (16 · VECTORS) tile from panels of kMR rows and kNR columns; the last row
  // and column panels of a block use fewer rows and vectors, so they skip most of the padding.
  // 16 · (VECTORS - 1) < cols <= 16 · VECTORS.
  template <int ROWS, int VECTORS>
  __attribute__((target("avx512f"))) static void tile(int64_t kc, const float* a, const float* b, float* c,
                                                      int64_t ldc, int64_t cols, float alpha, float beta) {
    __m512 acc[ROWS][VECTORS];
#pragma GCC unroll 64
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < VECTORS; ++v) acc[r][v] = _mm512_setzero_ps();
    }
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; ++k) {
      __m512 bv[VECTORS];
#pragma GCC unroll 4
      for (int v = 0; v < VECTORS; ++v) bv[v] = _mm512_loadu_ps(b + k * kNR + 16 * v);
#pragma GCC unroll 64
      for (int r = 0; r < ROWS; ++r) {
        const __m512 ar = _mm512_set1_ps(a[k * kMR + r]);
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
      }
    }
    __mmask16 mask[VECTORS];
#pragma GCC unroll 4
    for (int v = 0; v < VECTORS; ++v) {
      const int64_t left = cols - 16 * v;  // >= 1
      mask[v] = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    }
    const __m512 alpha_v = _mm512_set1_ps(alpha);
    const __m512 beta_v = _mm512_set1_ps(beta);
#pragma GCC unroll 64
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < VECTORS; ++v) {
        float* dst = c + r * ldc + 16 * v;
        __m512 x = _mm512_mul_ps(acc[r][v], alpha_v);
        if (beta != 0.0f) x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask[v], dst), beta_v, x);
        _mm512_mask_storeu_ps(dst, mask[v], x);
      }
    }
  }
};


// Copies 16 consecutive values (along k) of `count` <= 16 rows, src + i·ld, transposed: for each
// k, the values of all rows at dst + k·stride (lanes chosen by store_mask). Rows past count read
// as zero; only the first min(k_left, 16) values of each row are read and stored.
__attribute__((target("avx512f"))) void transpose_rows_to_panel(float* dst, int64_t stride,
                                                               const float* src, int64_t ld,
                                                               int64_t count, int64_t k_left,
                                                               __mmask16 store_mask) {
  const __mmask16 load_mask = k_left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << k_left) - 1);
  __m512 block[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) {
    block[i] = i < count ? _mm512_maskz_loadu_ps(load_mask, src + i * ld) : _mm512_setzero_ps();
  }
  transpose_16x16(block);
  const int64_t ks = k_left < 16 ? k_left : 16;
  for (int64_t k = 0; k < ks; ++k) _mm512_mask_storeu_ps(dst + k * stride, store_mask, block[k]);
}

// Packs A; the untransposed case (rows of A run along k) goes through 16 × 16 transposes.
__attribute__((target("avx512f"))) void pack_a(float* packed, const float* A, int64_t lda,
                                               bool trans_a, int64_t i0, int64_t mc, int64_t p0,
                                               int64_t kc) {
  if (trans_a) {
    pack_a_panels<kMR>(packed, A, lda, trans_a, i0, mc, p0, kc);
    return;
  }
  static_assert(kMR <= 16, "one transpose covers a panel");
  for (int64_t r0 = 0; r0 < mc; r0 += kMR) {
    float* panel = packed + r0 * kc;
    const int64_t rows = mc - r0 < kMR ? mc - r0 : kMR;
    const float* src = A + (i0 + r0) * lda + p0;
    for (int64_t k = 0; k < kc; k += 16) {
      transpose_rows_to_panel(panel + k * kMR, kMR, src + k, lda, rows, kc - k,
                              __mmask16((1u << kMR) - 1));
    }
  }
}

// Packs B; the transposed case (rows of the stored B run along k) goes through 16 × 16
// transposes, one per 16 columns of a panel.
__attribute__((target("avx512f"))) void pack_b(float* packed, const float* B, int64_t ldb,
                                               bool trans_b, int64_t p0, int64_t kc, int64_t j0,
                                               int64_t nc) {
  if (!trans_b) {
    pack_b_panels<kNR>(packed, B, ldb, trans_b, p0, kc, j0, nc);
    return;
  }
  for (int64_t c0 = 0; c0 < nc; c0 += kNR) {
    float* panel = packed + c0 * kc;
    for (int v = 0; v < kVectors; ++v) {
      const int64_t first = c0 + 16 * v;
      const int64_t count = nc - first < 0 ? 0 : nc - first < 16 ? nc - first : 16;
      if (count == 0) {  // past nc: zero columns
        for (int64_t k = 0; k < kc; ++k) _mm512_storeu_ps(panel + k * kNR + 16 * v, _mm512_setzero_ps());
        continue;
      }
      const float* src = B + (j0 + first) * ldb + p0;
      for (int64_t k = 0; k < kc; k += 16) {
        transpose_rows_to_panel(panel + k * kNR + 16 * v, kNR, src + k, ldb, count, kc - k,
                                __mmask16(0xFFFF));
      }
    }
  }
}

}  // namespace

const GemmKernels& gemm_kernels_avx512() {
  static const GemmKernels kernels{kMR, kNR, &TileTable<Tiles, kMR, kVectors>::micro_kernel, &pack_a, &pack_b};
  return kernels;
}

}  // namespace safl::cpu::gemm_detail

#else

namespace safl::cpu::gemm_detail {
const GemmKernels& gemm_kernels_avx512() { return gemm_kernels_generic(); }
}  // namespace safl::cpu::gemm_detail

#endif
