// AVX512-BF16 SGEMM pieces for MatmulPrecision::BFloat16 (common/matmul_precision.h) on CPUs that
// have the AVX512-BF16 instructions but no AMX (AMD Zen 4 and later, Intel Cooper Lake): the
// 8 × 48 register tile of gemm_kernel_avx512.cpp with VDPBF16PS in place of the FMA. Compiled with
// target attributes; only called where bfloat16_matmul_unit() says "avx512-bf16" (gemm_kernels.h).
//
// Note [bfloat16 pairs]: VDPBF16PS adds to each float lane of an accumulator the products of one
// pair of bfloat16 values of each operand: lane c += a.lo · b_c.lo, then += a.hi · b_c.hi, where a
// pair holds two consecutive values of k (k = 2p in the low half, 2p + 1 in the high half). So one
// step of the tile covers two values of k: 3 loads of B pairs, 8 broadcasts of A pairs, 24
// instructions of 32 multiply-adds each, twice the work of the float32 tile's step. Each product
// of two bfloat16 values is exact in float32 and the sums round to nearest even, so the result is
// sgemm_reference of the rounded operands up to the summation order; subnormal inputs and results
// are flushed to zero (bfloat16_round in ops/gemm.h flushes the operands' too).
//
// Packed layouts (the buffers are float arrays; each 32-bit unit holds one pair), kcp = kc rounded
// up to even, k past kc zero:
//   A panel (8 rows): kcp / 2 pair rows of 8 pairs: pair row p holds (op(A)[r][2p], op(A)[r][2p+1])
//     for r = 0..7; rows past mc are zero.
//   B panel (48 columns): kcp / 2 pair rows of 48 pairs (op(B)[2p][c], op(B)[2p+1][c]); columns
//     past nc are zero.
// Rounding to bfloat16 is VCVTNE2PS2BF16's (gemm_bfloat16_pack.h), as in the AMX kernels.
#include "cpu/gemm_kernels.h"

#include "common/cpu_features.h"

#if SAFL_BF16_KERNELS
#include <immintrin.h>

#include <cstring>

#include "cpu/gemm_bfloat16_pack.h"
#include "cpu/gemm_tile_table.h"
#include "cpu/gemm_transpose_avx512.h"

namespace safl::cpu::gemm_detail {
namespace {

constexpr int kMR = 8;
constexpr int kVectors = 3;  // zmm vectors across a tile row
constexpr int kNR = 16 * kVectors;
constexpr int64_t kPairsPerBlock = 16;  // pairs of one 32-value block of k: one zmm of bfloat16

#define SAFL_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

int64_t pairs_of(int64_t kc) { return (kc + 1) / 2; }

using bf16::first_lanes;
using bf16::interleave_pairs;
using bf16::row_values;
using bf16::stored_row;

// The 16 pair rows of values [k, k + 32) of 16 lanes — rows of A or columns of B, from `first`,
// `count` of them real (the rest zero): block[p] holds pair row p, lane i the pair of lane i. The
// operand's stored rows run along the lanes (stored rows k + 2p and k + 2p + 1 give pair row p) or
// along k (each lane's stored row gives its 16 pairs, then a transpose turns them into pair rows).
SAFL_BF16_TARGET void pair_rows(__m512 block[16], const float* M, int64_t ld, bool rows_along_lanes, int64_t p0,
                                int64_t k, int64_t kc, int64_t first, int64_t count) {
  if (rows_along_lanes) {
    for (int p = 0; p < 16; ++p) {
      block[p] = _mm512_castsi512_ps(interleave_pairs(stored_row(M, ld, p0, k + 2 * p, kc, first, first_lanes(count)),
                                                      stored_row(M, ld, p0, k + 2 * p + 1, kc, first, first_lanes(count))));
    }
    return;
  }
  for (int i = 0; i < 16; ++i)
    block[i] = i < count ? _mm512_castsi512_ps(row_values(M + (first + i) * ld + p0, k, kc)) : _mm512_setzero_ps();
  transpose_16x16(block);
}

// Stores pair rows [pair0, pair0 + count) of a block (pair_rows), pair row p at
// dst + (pair0 + p)·stride: the lanes of `half` (0: lanes 0–7, 1: lanes 8–15) when the destination
// is an 8-row A panel, all 16 lanes otherwise (half = -1).
SAFL_BF16_TARGET void store_pair_rows(float* dst, int64_t stride, const __m512* block, int64_t pair0,
                                      int64_t count, int half) {
  for (int64_t p = 0; p < count; ++p) {
    float* row = dst + (pair0 + p) * stride;
    if (half < 0) {
      _mm512_storeu_ps(row, block[p]);
    } else if (half == 0) {
      _mm512_mask_storeu_ps(row, __mmask16(0x00FF), block[p]);
    } else {  // lanes 8–15 to row[0, 8): masked-off lanes touch no memory
      _mm512_mask_storeu_ps(row - 8, __mmask16(0xFF00), block[p]);
    }
  }
}

// Packs op(A)[i0 : i0+mc, p0 : p0+kc] into 8-row panels (Note [bfloat16 pairs]), 16 rows (two
// panels) at a time; the second panel is written only where the block has it.
SAFL_BF16_TARGET void pack_a(float* packed, const float* A, int64_t lda, bool trans_a, int64_t i0, int64_t mc,
                             int64_t p0, int64_t kc) {
  const int64_t pairs = pairs_of(kc);
  for (int64_t r0 = 0; r0 < mc; r0 += 2 * kMR) {
    const int64_t rows = mc - r0 < 16 ? mc - r0 : 16;
    const int panels = rows > kMR ? 2 : 1;
    for (int64_t k = 0; k < 2 * pairs; k += 2 * kPairsPerBlock) {
      __m512 block[16];
      pair_rows(block, A, lda, /*rows_along_lanes=*/trans_a, p0, k, kc, i0 + r0, rows);
      const int64_t count = pairs - k / 2 < kPairsPerBlock ? pairs - k / 2 : kPairsPerBlock;
      for (int half = 0; half < panels; ++half)
        store_pair_rows(packed + (r0 + half * kMR) * pairs, kMR, block, k / 2, count, half);
    }
  }
}

// Packs op(B)[p0 : p0+kc, j0 : j0+nc] into 48-column panels (Note [bfloat16 pairs]), 16 columns
// at a time.
SAFL_BF16_TARGET void pack_b(float* packed, const float* B, int64_t ldb, bool trans_b, int64_t p0, int64_t kc,
                             int64_t j0, int64_t nc) {
  const int64_t pairs = pairs_of(kc);
  for (int64_t c0 = 0; c0 < nc; c0 += kNR) {
    float* panel = packed + c0 * pairs;
    for (int v = 0; v < kVectors; ++v) {
      const int64_t first = c0 + 16 * v;
      const int64_t count = nc - first < 0 ? 0 : nc - first < 16 ? nc - first : 16;  // 0: zero columns
      for (int64_t k = 0; k < 2 * pairs; k += 2 * kPairsPerBlock) {
        __m512 block[16];
        pair_rows(block, B, ldb, /*rows_along_lanes=*/!trans_b, p0, k, kc, j0 + first, count);
        const int64_t rows = pairs - k / 2 < kPairsPerBlock ? pairs - k / 2 : kPairsPerBlock;
        store_pair_rows(panel + 16 * v, kNR, block, k / 2, rows, -1);
      }
    }
  }
}

struct Tiles {
  // Computes a ROWS × (16 · VECTORS) tile from an A and a B panel (Note [bfloat16 pairs]); the
  // last row and column panels of a block use fewer rows and vectors. 16 · (VECTORS − 1) < cols
  // <= 16 · VECTORS.
  template <int ROWS, int VECTORS>
  SAFL_BF16_TARGET static void tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t cols,
                                    float alpha, float beta) {
    __m512 acc[ROWS][VECTORS];
#pragma GCC unroll 64
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < VECTORS; ++v) acc[r][v] = _mm512_setzero_ps();
    }
    const int64_t pairs = pairs_of(kc);
#pragma GCC unroll 2
    for (int64_t p = 0; p < pairs; ++p) {
      __m512bh bv[VECTORS];
#pragma GCC unroll 4
      for (int v = 0; v < VECTORS; ++v) bv[v] = (__m512bh)_mm512_loadu_ps(b + p * kNR + 16 * v);
#pragma GCC unroll 64
      for (int r = 0; r < ROWS; ++r) {
        int32_t pair;
        std::memcpy(&pair, a + p * kMR + r, sizeof pair);
        const __m512bh ar = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
        for (int v = 0; v < VECTORS; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], ar, bv[v]);
      }
    }
    const __m512 alpha_v = _mm512_set1_ps(alpha), beta_v = _mm512_set1_ps(beta);
#pragma GCC unroll 64
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < VECTORS; ++v) {
        const __mmask16 mask = first_lanes(cols - 16 * v);
        float* dst = c + r * ldc + 16 * v;
        __m512 x = _mm512_mul_ps(acc[r][v], alpha_v);
        if (beta != 0.0f) x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, dst), beta_v, x);
        _mm512_mask_storeu_ps(dst, mask, x);
      }
    }
  }
};

#undef SAFL_BF16_TARGET

}  // namespace

const GemmKernels& gemm_kernels_avx512_bf16() {
  static const GemmKernels kernels{kMR, kNR, &TileTable<Tiles, kMR, kVectors>::micro_kernel, &pack_a, &pack_b, 2, 2};
  return kernels;
}

}  // namespace safl::cpu::gemm_detail

#else

namespace safl::cpu::gemm_detail {
const GemmKernels& gemm_kernels_avx512_bf16() { return gemm_kernels_generic(); }
}  // namespace safl::cpu::gemm_detail

#endif
