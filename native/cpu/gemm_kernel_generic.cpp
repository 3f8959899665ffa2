// Portable SGEMM pieces (plain C++; the compiler vectorises the NR-wide rows with whatever the
// baseline target offers): a 4 × 16 register tile and the packing routines of gemm_pack.h.
#include <array>
#include <utility>

#include "cpu/gemm_kernels.h"
#include "cpu/gemm_pack.h"

namespace safl::cpu::gemm_detail {
namespace {

constexpr int kMR = 4;
constexpr int kNR = 16;

// Computes a ROWS × kNR tile; ROWS < kMR serves the last row panel of a block.
template <int ROWS>
void tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t cols,
          float alpha, float beta) {
  float acc[ROWS][kNR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const float* a_col = a + k * kMR;
    const float* b_row = b + k * kNR;
    // Unrolled rows and columns keep acc in registers and vectorise along the columns.
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 16
      for (int j = 0; j < kNR; ++j) acc[r][j] += a_col[r] * b_row[j];
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    float* dst = c + r * ldc;
    for (int64_t j = 0; j < cols; ++j) {
      dst[j] = beta == 0.0f ? alpha * acc[r][j] : alpha * acc[r][j] + beta * dst[j];
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

const GemmKernels& gemm_kernels_generic() {
  static const GemmKernels kernels{kMR, kNR, &micro_kernel, &pack_a_panels<kMR>, &pack_b_panels<kNR>};
  return kernels;
}

}  // namespace safl::cpu::gemm_detail
