// The pieces of the fast CPU SGEMM (native/cpu/gemm.cpp) that exist once per SIMD level:
// a register-tile micro-kernel and the two packing routines that feed it.
//
// Packed layouts (the micro-kernel reads both with unit stride):
//   A block (mc × kc) → panels of MR rows; panel p holds, for k = 0..kc-1, the MR values
//     op(A)[p·MR + r][k], r = 0..MR-1 (rows past mc may be left unset: no kernel reads them).
//   B block (kc × nc) → panels of NR columns; panel q holds, for k = 0..kc-1, the NR values
//     op(B)[k][q·NR + c], c = 0..NR-1 (columns past nc are zero: the kernel computes them and
//     drops them when it stores).
// Panel p of A starts at p·MR·kc, panel q of B at q·NR·kc.
// The bfloat16 kernels (gemm_kernel_amx.cpp, gemm_kernel_avx512_bf16.cpp) pack other layouts of
// bfloat16 values into the same float buffers: their panels hold kc rounded up to k_align
// (zero-filled) and two values per float, so panel p of A starts at
// p·MR·round_up(kc, k_align) / values_per_float.
//
// Each level's functions are compiled with a function target attribute (never a global -m flag)
// and are only called when cpu_features.h reports that level.
#pragma once
#include <cstdint>

namespace safl::cpu::gemm_detail {

// C[0:rows, 0:cols] = alpha · (A panel · B panel) + beta · C[0:rows, 0:cols], with
// 1 <= rows <= MR and 1 <= cols <= NR; beta == 0 overwrites C without reading it.
using MicroKernelFn = void (*)(int64_t kc, const float* a_panel, const float* b_panel, float* c,
                               int64_t ldc, int64_t rows, int64_t cols, float alpha, float beta);

// Packs op(A)[i0 : i0+mc, p0 : p0+kc] (op(A)[i][k] = trans ? A[k·lda + i] : A[i·lda + k]).
using PackAFn = void (*)(float* packed, const float* A, int64_t lda, bool trans_a, int64_t i0,
                         int64_t mc, int64_t p0, int64_t kc);
// Packs op(B)[p0 : p0+kc, j0 : j0+nc] (op(B)[k][j] = trans ? B[j·ldb + k] : B[k·ldb + j]).
using PackBFn = void (*)(float* packed, const float* B, int64_t ldb, bool trans_b, int64_t p0,
                         int64_t kc, int64_t j0, int64_t nc);

struct GemmKernels {
  int mr;  // rows of the register tile
  int nr;  // columns of the register tile
  MicroKernelFn micro_kernel;
  PackAFn pack_a;
  PackBFn pack_b;
  int k_align = 1;           // panels hold kc rounded up to a multiple of this
  int values_per_float = 1;  // packed values per float of the buffers (2 for bfloat16)
  // Run on a thread before and after it computes a block with these kernels (nullptr: nothing).
  void (*enter)() = nullptr;
  void (*leave)() = nullptr;
};

const GemmKernels& gemm_kernels_generic();
// Only valid where simd_level() reports the level; elsewhere they return the generic kernels.
const GemmKernels& gemm_kernels_avx2();
const GemmKernels& gemm_kernels_avx512();
// bfloat16 products on the AMX tile unit; only valid where bfloat16_matmul_unit() is "amx"
// (common/matmul_precision.h); elsewhere they return the generic kernels.
const GemmKernels& gemm_kernels_amx();
// bfloat16 products with VDPBF16PS; only valid where bfloat16_matmul_unit() is "avx512-bf16";
// elsewhere they return the generic kernels.
const GemmKernels& gemm_kernels_avx512_bf16();

}  // namespace safl::cpu::gemm_detail
