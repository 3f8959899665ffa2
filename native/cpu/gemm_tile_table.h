// The micro-kernel of the AVX-512 tiles (gemm_kernel_avx512.cpp, gemm_kernel_avx512_bf16.cpp): a
// table of one tile function per row count 1..MR and zmm count 1..VECTORS, so that the last row
// and column panels of a block compute only the rows and vectors they have, not the padding.
#pragma once
#include <array>
#include <cstdint>
#include <utility>

namespace safl::cpu::gemm_detail {

using TileFn = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t cols, float alpha,
                        float beta);

// Tiles::tile<ROWS, VECTORS> computes a ROWS × (16 · VECTORS) tile of C from an A and a B panel,
// storing the first `cols` columns (16 · (VECTORS − 1) < cols <= 16 · VECTORS).
template <class Tiles, int MR, int VECTORS>
struct TileTable {
  template <int V, int... R>
  static constexpr std::array<TileFn, MR> with_vectors(std::integer_sequence<int, R...>) {
    return {&Tiles::template tile<R + 1, V>...};
  }
  template <int... V>
  static constexpr std::array<std::array<TileFn, MR>, VECTORS> make(std::integer_sequence<int, V...>) {
    return {with_vectors<V + 1>(std::make_integer_sequence<int, MR>())...};
  }
  // A MicroKernelFn (gemm_kernels.h): 1 <= rows <= MR, 1 <= cols <= 16 · VECTORS.
  static void micro_kernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t rows,
                           int64_t cols, float alpha, float beta) {
    static constexpr auto tiles = make(std::make_integer_sequence<int, VECTORS>());  // [v − 1][r − 1]
    tiles[(cols + 15) / 16 - 1][rows - 1](kc, a, b, c, ldc, cols, alpha, beta);
  }
};

}  // namespace safl::cpu::gemm_detail
