// Portable packing of GEMM operands into the panel layouts of gemm_kernels.h, templated on the
// panel width so the inner loops have constant trip counts. The generic and AVX2 levels pack
// with these alone; AVX-512 uses them for the copies that are already contiguous and transposes
// in 16 × 16 register blocks itself.
//
// Note [pack along the stored rows]: when a panel's MR (or NR) values for one k are contiguous
// in memory, the copy walks each stored row across all panels before moving to the next k.
// Walking one panel at a time instead would read MR floats per row at a stride of lda floats,
// and strides of a multiple of 4 KiB (lda = 1024, 2048, ...) map every row to the same L1 set.
#pragma once
#include <algorithm>
#include <cstdint>

namespace safl::cpu::gemm_detail {

// Packs op(A)[i0 : i0+mc, p0 : p0+kc] into panels of MR rows.
template <int MR>
void pack_a_panels(float* packed, const float* A, int64_t lda, bool trans_a, int64_t i0, int64_t mc,
                   int64_t p0, int64_t kc) {
  if (trans_a) {
    // Stored rows of A run along i: walk them whole (Note [pack along the stored rows]).
    const int64_t full = mc / MR * MR;
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = A + (p0 + k) * lda + i0;
      for (int64_t r0 = 0; r0 < full; r0 += MR) {
        float* dst = packed + r0 * kc + k * MR;
        for (int r = 0; r < MR; ++r) dst[r] = src[r0 + r];
      }
      for (int64_t r = full; r < mc; ++r) packed[full * kc + k * MR + (r - full)] = src[r];
    }
    return;
  }
  for (int64_t r0 = 0; r0 < mc; r0 += MR) {
    float* panel = packed + r0 * kc;
    const int64_t rows = std::min<int64_t>(MR, mc - r0);
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = A + (i0 + r0 + r) * lda + p0;
      for (int64_t k = 0; k < kc; ++k) panel[k * MR + r] = src[k];
    }
  }
}

// Packs op(B)[p0 : p0+kc, j0 : j0+nc] into panels of NR columns, zero-filling past nc.
template <int NR>
void pack_b_panels(float* packed, const float* B, int64_t ldb, bool trans_b, int64_t p0, int64_t kc,
                   int64_t j0, int64_t nc) {
  const int64_t full = nc / NR * NR;
  float* tail = packed + full * kc;
  if (!trans_b) {
    // Stored rows of B run along j: walk them whole (Note [pack along the stored rows]).
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = B + (p0 + k) * ldb + j0;
      for (int64_t c0 = 0; c0 < full; c0 += NR) {
        float* dst = packed + c0 * kc + k * NR;
        for (int c = 0; c < NR; ++c) dst[c] = src[c0 + c];
      }
      if (full < nc) {
        for (int64_t c = full; c < nc; ++c) tail[k * NR + (c - full)] = src[c];
        for (int64_t c = nc - full; c < NR; ++c) tail[k * NR + c] = 0.0f;
      }
    }
    return;
  }
  for (int64_t c0 = 0; c0 < nc; c0 += NR) {
    float* panel = packed + c0 * kc;
    const int64_t cols = std::min<int64_t>(NR, nc - c0);
    for (int64_t c = 0; c < cols; ++c) {
      const float* src = B + (j0 + c0 + c) * ldb + p0;
      for (int64_t k = 0; k < kc; ++k) panel[k * NR + c] = src[k];
    }
    for (int64_t c = cols; c < NR; ++c) {
      for (int64_t k = 0; k < kc; ++k) panel[k * NR + c] = 0.0f;
    }
  }
}

}  // namespace safl::cpu::gemm_detail
