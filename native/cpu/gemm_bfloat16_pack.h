// The bfloat16 conversions that the packing routines of both bfloat16 kernels share
// (gemm_kernel_amx.cpp, gemm_kernel_avx512_bf16.cpp). Compiled with a target("avx512f,avx512bw,
// avx512bf16") attribute: include it only inside SAFL_BF16_KERNELS, from functions whose targets
// include those.
#pragma once
#include "common/cpu_features.h"

#if SAFL_BF16_KERNELS
#include <immintrin.h>

#include <cstdint>

namespace safl::cpu::gemm_detail::bf16 {

#define SAFL_BF16_PACK_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

// Lanes [0, n) of a 16-lane mask, n clamped to [0, 16].
inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// 32 floats (the lanes of lo, then of hi) rounded to bfloat16, in order (to nearest even,
// subnormals to zero: VCVTNE2PS2BF16): 32-bit lane p holds values 2p and 2p + 1.
SAFL_BF16_PACK_TARGET inline __m512i to_bfloat16(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }

// The 16 pairs (k, k + 1) of 16 consecutive values of two stored rows: vpermw interleaves the
// rounded even row (lanes 0–15 of to_bfloat16) with the odd one (lanes 16–31), so that 32-bit lane
// c holds (even[c], odd[c]).
SAFL_BF16_PACK_TARGET inline __m512i interleave_pairs(__m512 even, __m512 odd) {
  const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                                         22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(order, to_bfloat16(even, odd));
}

// Stored row k of an operand whose rows run along the 16 lanes from `first`: the lanes in `lanes`,
// zeros past the depth kc.
SAFL_BF16_PACK_TARGET inline __m512 stored_row(const float* M, int64_t ld, int64_t p0, int64_t k, int64_t kc,
                                               int64_t first, __mmask16 lanes) {
  return k < kc ? _mm512_maskz_loadu_ps(lanes, M + (p0 + k) * ld + first) : _mm512_setzero_ps();
}

// Values [k, k + 32) of a stored row that runs along k, rounded to bfloat16 (zeros past kc).
SAFL_BF16_PACK_TARGET inline __m512i row_values(const float* src, int64_t k, int64_t kc) {
  return to_bfloat16(_mm512_maskz_loadu_ps(first_lanes(kc - k), src + k),
                     _mm512_maskz_loadu_ps(first_lanes(kc - k - 16), src + k + 16));
}

#undef SAFL_BF16_PACK_TARGET

}  // namespace safl::cpu::gemm_detail::bf16

#endif
