// The in-register 16 × 16 transpose of 32-bit values that the AVX-512 and AMX packing routines
// share (gemm_kernel_avx512.cpp, gemm_kernel_amx.cpp). Compiled with a target("avx512f")
// attribute: include it only where the functions that call it carry that target too.
#pragma once
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

namespace safl::cpu::gemm_detail {

// GCC 12 warns about the deliberately undefined pass-through operand inside its own AVX-512
// shuffle intrinsics (GCC bug 105593, fixed in GCC 13); silenced for this function only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// In-register transpose of a 16 × 16 block: afterwards rows[c][i] holds what rows[i][c] held.
__attribute__((target("avx512f"))) inline void transpose_16x16(__m512 rows[16]) {
  __m512 t[16];
  // Interleave 32-bit elements of row pairs, then 64-bit pairs of those. Afterwards rows[4q + r]
  // holds, in its 128-bit lane L, column 4L + r of rows 4q .. 4q+3.
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const __m512d a = _mm512_castps_pd(t[4 * q]), b = _mm512_castps_pd(t[4 * q + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * q + 2]), d = _mm512_castps_pd(t[4 * q + 3]);
    rows[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    rows[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    rows[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    rows[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // Gather lane L of rows[r], rows[4 + r], rows[8 + r], rows[12 + r] into column 4L + r:
  // 0x88 picks lanes 0 and 2 of each source, 0xDD lanes 1 and 3.
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {
    const __m512 even01 = _mm512_shuffle_f32x4(rows[r], rows[4 + r], 0x88);
    const __m512 odd01 = _mm512_shuffle_f32x4(rows[r], rows[4 + r], 0xDD);
    const __m512 even23 = _mm512_shuffle_f32x4(rows[8 + r], rows[12 + r], 0x88);
    const __m512 odd23 = _mm512_shuffle_f32x4(rows[8 + r], rows[12 + r], 0xDD);
    t[r] = _mm512_shuffle_f32x4(even01, even23, 0x88);
    t[8 + r] = _mm512_shuffle_f32x4(even01, even23, 0xDD);
    t[4 + r] = _mm512_shuffle_f32x4(odd01, odd23, 0x88);
    t[12 + r] = _mm512_shuffle_f32x4(odd01, odd23, 0xDD);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) rows[i] = t[i];
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace safl::cpu::gemm_detail

#endif
