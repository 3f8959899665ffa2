// AMX SGEMM pieces for MatmulPrecision::BFloat16 (common/matmul_precision.h): a 32 × 32 tile of C
// computed by the tile unit from operands rounded to bfloat16, accumulated in float32. Compiled
// with target attributes; only called where bfloat16_matmul_available() (see gemm_kernels.h).
//
// Note [AMX tiles]: the tile unit has 8 registers of up to 16 rows × 64 bytes. TDPBF16PS adds to
// a 16 × 16 float tile the product of a 16 × 32 bfloat16 tile of A and a 32 × 16 bfloat16 tile of
// B stored as 16 rows of 16 pairs (B[2p][j], B[2p + 1][j]): row p of a B tile holds k = 2p and
// 2p + 1 of each of its 16 columns. The micro-kernel keeps a 2 × 2 grid of C tiles (32 × 32
// floats, tmm0–3) and for every 32 values of k loads two A tiles (tmm4–5) and two B tiles
// (tmm6–7): four products of 16·16·32 multiply-adds per four loads.
//
// Packed layouts (the tile loads read them at a fixed stride), kcp = kc rounded up to 32:
//   A panel (32 rows): bfloat16, row-major 32 × kcp; rows past mc and k past kc are zero. The A
//     tiles of k block b are rows 0–15 and 16–31 from column 32·b, stride 2·kcp bytes.
//   B panel (32 columns): kcp / 2 rows, each the 32 columns' pairs (k = 2p, 2p + 1): 64 values,
//     128 bytes; columns past nc and k past kc are zero. The B tiles of k block b are rows
//     16·b … 16·b + 15, bytes 0–63 (columns 0–15) and 64–127 (columns 16–31), stride 128 bytes.
// Rounding to bfloat16 is VCVTNE2PS2BF16's: to nearest even, subnormals to zero (bfloat16_round in
// ops/gemm.h is the same in plain C++).
#include "cpu/gemm_kernels.h"

#include "common/cpu_features.h"

#if SAFL_BF16_KERNELS
#include <immintrin.h>

#include <cstring>

#include "cpu/gemm_bfloat16_pack.h"
#include "cpu/gemm_transpose_avx512.h"

namespace safl::cpu::gemm_detail {
namespace {

constexpr int kMR = 32;
constexpr int kNR = 32;
constexpr int64_t kKBlock = 32;  // k per tile product

#define SAFL_AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")))

int64_t padded(int64_t kc) { return (kc + kKBlock - 1) / kKBlock * kKBlock; }

using bf16::first_lanes;
using bf16::interleave_pairs;
using bf16::row_values;
using bf16::stored_row;
using bf16::to_bfloat16;

// Packs op(A)[i0 : i0+mc, p0 : p0+kc] into 32-row panels (layout in the file header).
SAFL_AMX_TARGET void pack_a(float* packed, const float* A, int64_t lda, bool trans_a, int64_t i0,
                            int64_t mc, int64_t p0, int64_t kc) {
  const int64_t kcp = padded(kc), rows = (mc + kMR - 1) / kMR * kMR;
  uint16_t* out = reinterpret_cast<uint16_t*>(packed);  // row r of the block at r·kcp
  if (trans_a) {
    // Stored rows of A run along i (the backward's products): for 16 rows of the panel and a k
    // block, 16 pair rows (k = 2p, 2p + 1) of 16 lanes each, then a 16 × 16 transpose of the
    // 32-bit pairs turns them into the 16 rows' 32 values of k.
    for (int64_t r0 = 0; r0 < rows; r0 += 16) {
      const __mmask16 lanes = first_lanes(mc - r0);
      for (int64_t k = 0; k < kcp; k += kKBlock) {
        __m512 block[16];
        for (int p = 0; p < 16; ++p) {
          const __m512 even = stored_row(A, lda, p0, k + 2 * p, kc, i0 + r0, lanes);
          const __m512 odd = stored_row(A, lda, p0, k + 2 * p + 1, kc, i0 + r0, lanes);
          block[p] = _mm512_castsi512_ps(interleave_pairs(even, odd));
        }
        transpose_16x16(block);
        for (int r = 0; r < 16; ++r) _mm512_storeu_si512(out + (r0 + r) * kcp + k, _mm512_castps_si512(block[r]));
      }
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    uint16_t* dst = out + r * kcp;
    if (r >= mc) {
      std::memset(dst, 0, sizeof(uint16_t) * size_t(kcp));
      continue;
    }
    const float* src = A + (i0 + r) * lda + p0;
    for (int64_t k = 0; k < kcp; k += kKBlock) _mm512_storeu_si512(dst + k, row_values(src, k, kc));
  }
}

// Packs op(B)[p0 : p0+kc, j0 : j0+nc] into 32-column panels (layout in the file header).
SAFL_AMX_TARGET void pack_b(float* packed, const float* B, int64_t ldb, bool trans_b, int64_t p0,
                            int64_t kc, int64_t j0, int64_t nc) {
  const int64_t kcp = padded(kc);
  uint16_t* out = reinterpret_cast<uint16_t*>(packed);
  for (int64_t c0 = 0; c0 < nc; c0 += kNR) {
    uint16_t* panel = out + c0 * kcp;  // kcp / 2 rows of 64 values
    for (int64_t half = 0; half < 2; ++half) {
      const int64_t first = c0 + 16 * half;
      const int64_t count = nc - first < 0 ? 0 : nc - first < 16 ? nc - first : 16;
      if (!trans_b) {  // stored rows of B run along j: rows k and k + 1 give a pair row
        const __mmask16 columns = first_lanes(count);
        for (int64_t k = 0; k < kcp; k += 2) {
          const __m512i pairs = interleave_pairs(stored_row(B, ldb, p0, k, kc, j0 + first, columns),
                                                 stored_row(B, ldb, p0, k + 1, kc, j0 + first, columns));
          _mm512_storeu_si512(panel + (k / 2) * 64 + 32 * half, pairs);
        }
        continue;
      }
      // Stored rows of B run along k: a column's 32 values of a k block are 16 pairs, one 32-bit
      // lane each; a 16 × 16 transpose of those lanes turns 16 columns into 16 pair rows.
      for (int64_t k = 0; k < kcp; k += kKBlock) {
        __m512 block[16];
        for (int i = 0; i < 16; ++i) {
          if (i < count) {
            block[i] = _mm512_castsi512_ps(row_values(B + (j0 + first + i) * ldb + p0, k, kc));
          } else {
            block[i] = _mm512_setzero_ps();
          }
        }
        transpose_16x16(block);
        for (int p = 0; p < 16; ++p) {
          _mm512_storeu_si512(panel + (k / 2 + p) * 64 + 32 * half, _mm512_castps_si512(block[p]));
        }
      }
    }
  }
}

// Note [AMX tiles]: the 2 × 2 grid of C tiles, fewer where the tile of C has at most 16 rows
// (TWO_ROWS false) or columns (TWO_COLS false). The tile numbers must be constants.
template <bool TWO_ROWS, bool TWO_COLS>
SAFL_AMX_TARGET void multiply_tiles(int64_t kcp, const uint16_t* a, const uint16_t* b) {
  _tile_zero(0);
  if (TWO_COLS) _tile_zero(1);
  if (TWO_ROWS) _tile_zero(2);
  if (TWO_ROWS && TWO_COLS) _tile_zero(3);
  const int64_t a_stride = 2 * kcp;
  for (int64_t k = 0; k < kcp; k += kKBlock) {
    _tile_loadd(4, a + k, a_stride);
    _tile_loadd(6, b + k * 32, 128);
    if (TWO_COLS) _tile_loadd(7, b + k * 32 + 32, 128);
    _tile_dpbf16ps(0, 4, 6);
    if (TWO_COLS) _tile_dpbf16ps(1, 4, 7);
    if (TWO_ROWS) {
      _tile_loadd(5, a + 16 * kcp + k, a_stride);
      _tile_dpbf16ps(2, 5, 6);
      if (TWO_COLS) _tile_dpbf16ps(3, 5, 7);
    }
  }
}

SAFL_AMX_TARGET void micro_kernel(int64_t kc, const float* a_panel, const float* b_panel, float* c,
                                  int64_t ldc, int64_t rows, int64_t cols, float alpha, float beta) {
  const int64_t kcp = padded(kc);
  const auto* a = reinterpret_cast<const uint16_t*>(a_panel);
  const auto* b = reinterpret_cast<const uint16_t*>(b_panel);
  const bool two_rows = rows > 16, two_cols = cols > 16;
  if (two_rows && two_cols) {
    multiply_tiles<true, true>(kcp, a, b);
  } else if (two_rows) {
    multiply_tiles<true, false>(kcp, a, b);
  } else if (two_cols) {
    multiply_tiles<false, true>(kcp, a, b);
  } else {
    multiply_tiles<false, false>(kcp, a, b);
  }
  const int64_t c_stride = ldc * int64_t(sizeof(float));
  if (rows == kMR && cols == kNR && alpha == 1.0f && beta == 0.0f) {
    _tile_stored(0, c, c_stride);
    _tile_stored(1, c + 16, c_stride);
    _tile_stored(2, c + 16 * ldc, c_stride);
    _tile_stored(3, c + 16 * ldc + 16, c_stride);
    return;
  }
  alignas(64) float product[kMR * kNR];  // the 32 × 32 tile, then alpha · it + beta · C
  _tile_stored(0, product, kNR * sizeof(float));
  if (two_cols) _tile_stored(1, product + 16, kNR * sizeof(float));
  if (two_rows) _tile_stored(2, product + 16 * kNR, kNR * sizeof(float));
  if (two_rows && two_cols) _tile_stored(3, product + 16 * kNR + 16, kNR * sizeof(float));
  const __m512 alpha_v = _mm512_set1_ps(alpha), beta_v = _mm512_set1_ps(beta);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t half = 0; half < (two_cols ? 2 : 1); ++half) {
      const __mmask16 mask = first_lanes(cols - 16 * half);
      float* dst = c + r * ldc + 16 * half;
      __m512 x = _mm512_mul_ps(_mm512_load_ps(product + r * kNR + 16 * half), alpha_v);
      if (beta != 0.0f) x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, dst), beta_v, x);
      _mm512_mask_storeu_ps(dst, mask, x);
    }
  }
}

// Every tile register 16 rows × 64 bytes (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

SAFL_AMX_TARGET void configure_tiles() {
  static const TileConfig config;
  _tile_loadconfig(&config);
}

SAFL_AMX_TARGET void release_tiles() { _tile_release(); }

#undef SAFL_AMX_TARGET

}  // namespace

const GemmKernels& gemm_kernels_amx() {
  static const GemmKernels kernels{kMR,     kNR, &micro_kernel, &pack_a, &pack_b, int(kKBlock), 2,
                                   &configure_tiles, &release_tiles};
  return kernels;
}

}  // namespace safl::cpu::gemm_detail

#else

namespace safl::cpu::gemm_detail {
const GemmKernels& gemm_kernels_amx() { return gemm_kernels_generic(); }
}  // namespace safl::cpu::gemm_detail

#endif
