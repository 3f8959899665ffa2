// CUDA SGEMM (see ops/gemm.h), hand-written on tensor cores: TF32 inputs, FP32 accumulation.
//
//   tf32_gemm_kernel  the main path. A block computes one BM × BN tile of C; each warp a WM × WN
//                     part of it as 16 × 16 wmma accumulators (TF32 fragments 16 × 16 × 8). The
//                     op(A) and op(B) tiles of depth BK = 32 pass through shared memory in a
//                     two-stage cp.async pipeline (Note [tile loads]): the loads of depth step t+1
//                     fly while step t multiplies. The epilogue stages each warp's accumulators in
//                     shared memory and writes alpha · acc + beta · C a row at a time, predicated
//                     at the edges of C. Two tile shapes share the code (Note [tile shapes]).
//   fp32_gemm_kernel  tiny products (Note [tiny products]): 16 × 16 tiles in plain FP32 FMAs.
//   scale_c_kernel    K = 0 or alpha = 0: C = beta · C, zeros when beta = 0, untouched when 1.
//
// Note [TF32 precision]: the tensor cores multiply TF32 numbers (8-bit exponent, 10-bit stored
// mantissa); each A and B element is rounded to nearest (cvt.rna) once, when its fragment is
// loaded, and the products are summed in FP32. Rounding an input moves it by at most 2^-11 of
// its value, so a product a·b moves by at most about 2^-10 |a||b|; the errors of a K-term sum
// behave like a random walk, about sqrt(K) · 2^-11 · rms|a·b| in size. This is the precision
// PyTorch gets with allow_tf32 (its default for convolutions); the CPU sgemm is FP32 throughout,
// so the parity tests bound |C_cuda - C_cpu| by a multiple of sqrt(K) · 2^-10 · max|A| · max|B|.
//
// Note [tile loads]: shared memory holds each operand tile as it lies in global memory, so a
// copy never transposes: op(A) = A is stored (m, k) and read by row_major fragments, op(A) = Aᵀ
// (A stored (K, M)) is stored (k, m) and read by col_major fragments; likewise B (k, n) /
// row_major and Bᵀ (n, k) / col_major. A thread copies 4 consecutive floats at a time: one
// 16-byte cp.async when they lie inside the matrix and the source is 16-byte aligned (any lda/ldb
// that is a multiple of 4 with an aligned pointer), else four 4-byte cp.async whose source size
// is 0 outside the matrix, which zero-fills the shared element. Zeros past M, N or K add nothing
// to the sums.
//
// Note [shared-memory padding]: rows of a shared tile are padded (kPadK, kPadMN floats) so that
// they stay 16-byte aligned for cp.async, fragment pointers stay 32-byte aligned for
// load_matrix_sync, and a fragment load hits 32 different banks. In the mma.m16n8k8 TF32 register
// layout (which wmma's 16 × 16 × 8 shape is built from), one load of a warp reads element
// (m = g, k = t) of A, or (k = t, n = g) of B, for lane = 4g + t: 8 rows by 4 depths. Rows that
// run along k (element at m·ld + k) then fall on banks 4g + t when ld ≡ 4 (mod 32); rows that run
// along m or n (element at k·ld + m) on banks 8t + g when ld ≡ 8 (mod 32). The staged
// accumulators (lane 4g + t holds (g, 2t) and (g, 2t + 1)) take ld ≡ 8 too.
//
// Note [tile shapes]: 128 × 128 tiles (8 warps of 64 × 32) reuse each loaded element most, but a
// product with fewer such tiles than the GPU has SMs leaves SMs idle, so those take 64 × 64 tiles
// (4 warps of 32 × 32). Both step through K in the same order with the same fragments, so an
// element of C gets the same bits either way.
//
// Note [tiny products]: below kTinyMultiplyAdds multiply-adds (a 40³ product) a launch of the
// tensor-core kernel costs more than the work; those run in FP32 on CUDA cores instead, and are
// therefore as precise as the CPU sgemm.
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "ops/gemm.h"

namespace safl::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kWarp = 32;
constexpr int kPadK = 4;   // padding of shared rows that run along k (Note [shared-memory padding])
constexpr int kPadMN = 8;  // padding of shared rows that run along m or n, and of the staged C
constexpr double kTinyMultiplyAdds = 65536.0;

template <int BM_, int BN_, int WARPS_M_, int WARPS_N_>
struct TileShape {
  static constexpr int BM = BM_, BN = BN_, BK = 32;
  static constexpr int kWarpsM = WARPS_M_, kWarpsN = WARPS_N_;
  static constexpr int kThreads = kWarp * kWarpsM * kWarpsN;
  static constexpr int WM = BM / kWarpsM, WN = BN / kWarpsN;  // a warp's part of the tile
  static constexpr int FM = WM / 16, FN = WN / 16;            // its 16 × 16 accumulators
  static_assert(WM % 16 == 0 && WN % 16 == 0 && BK % 8 == 0, "whole fragments per warp");
};
using LargeTiles = TileShape<128, 128, 2, 4>;  // warps of 64 × 32
using SmallTiles = TileShape<64, 64, 2, 2>;    // warps of 32 × 32

constexpr int round_up(int x, int to) { return (x + to - 1) / to * to; }

// A ROWS × COLS tile in shared memory, rows padded by PAD floats (Note [shared-memory padding]);
// kFloats rounded up to 128 bytes so that the next tile starts aligned too.
template <int ROWS, int COLS, int PAD>
struct SharedTile {
  static constexpr int kRows = ROWS, kCols = COLS, kLd = COLS + PAD;
  static constexpr int kFloats = round_up(ROWS * kLd, 32);
};

// Where everything lives in the dynamic shared memory of one tf32_gemm_kernel instance: two
// stages of the A and B tiles, later reused by the epilogue's per-warp staging of C.
template <class Shape, bool kTransA, bool kTransB>
struct SharedLayout {
  using ATile = typename std::conditional<kTransA, SharedTile<Shape::BK, Shape::BM, kPadMN>,
                                          SharedTile<Shape::BM, Shape::BK, kPadK>>::type;
  using BTile = typename std::conditional<kTransB, SharedTile<Shape::BN, Shape::BK, kPadK>,
                                          SharedTile<Shape::BK, Shape::BN, kPadMN>>::type;
  static constexpr int kStageLd = Shape::WN + kPadMN;  // a warp's staged accumulators, row stride
  static constexpr int kWarpStageFloats = Shape::WM * kStageLd;
  static constexpr int kPipelineFloats = 2 * ATile::kFloats + 2 * BTile::kFloats;
  static constexpr int kEpilogueFloats = Shape::kWarpsM * Shape::kWarpsN * kWarpStageFloats;
  static constexpr size_t kBytes =
      sizeof(float) * size_t(kPipelineFloats > kEpilogueFloats ? kPipelineFloats : kEpilogueFloats);
  static_assert(ATile::kLd % 32 == (kTransA ? 8 : 4) && BTile::kLd % 32 == (kTransB ? 4 : 8) &&
                    kStageLd % 32 == 8,
                "Note [shared-memory padding]");
  static_assert(kBytes + 1024 <= 164 * 1024 / 2, "two blocks fit an A100 SM (164 KiB, 1 KiB reserved per block)");
};

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async_16(float* dst, const float* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(dst)), "l"(src));
}
// Copies src_bytes (4 or 0) of src and zero-fills the rest of the 4-byte destination.
__device__ __forceinline__ void cp_async_4(float* dst, const float* src, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Starts the asynchronous copy of a Tile::kRows × Tile::kCols block of a row-major global matrix
// (row stride ld) whose first element is `origin` into `tile`. Only rows < rows and columns <
// cols exist in the matrix; the shared elements past them become zeros (Note [tile loads]).
template <class Tile, int kThreads>
__device__ __forceinline__ void load_tile_async(float* tile, const float* origin, int64_t ld, int rows, int cols) {
  constexpr int kChunksPerRow = Tile::kCols / 4;
  constexpr int kChunks = Tile::kRows * kChunksPerRow;
  static_assert(Tile::kCols % 4 == 0 && kChunks % kThreads == 0, "whole chunks per thread");
#pragma unroll 1  // the copies are asynchronous anyway; unrolled, their addresses cost registers
  for (int i = 0; i < kChunks / kThreads; ++i) {
    const int chunk = int(threadIdx.x) + i * kThreads;
    const int r = chunk / kChunksPerRow, c = (chunk % kChunksPerRow) * 4;
    float* dst = tile + r * Tile::kLd + c;
    const bool row_inside = r < rows;
    const float* src = row_inside ? origin + int64_t(r) * ld + c : origin;
    if (row_inside && c + 4 <= cols && (reinterpret_cast<uintptr_t>(src) & 15) == 0) {
      cp_async_16(dst, src);
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool inside = row_inside && c + e < cols;
        cp_async_4(dst + e, inside ? src + e : origin, inside ? 4 : 0);
      }
    }
  }
}

template <class Fragment>
__device__ __forceinline__ void round_to_tf32(Fragment& fragment) {
#pragma unroll
  for (int t = 0; t < fragment.num_elements; ++t) fragment.x[t] = wmma::__float_to_tf32(fragment.x[t]);
}

// One BM × BN tile of C = alpha · op(A) · op(B) + beta · C per block; blocks take tiles in
// row-major order (blockIdx.x = tile row · tiles_n + tile column).
template <class Shape, bool kTransA, bool kTransB>
__global__ void __launch_bounds__(Shape::kThreads, 2)
    tf32_gemm_kernel(float* __restrict__ C, int64_t ldc, const float* __restrict__ A, int64_t lda,
                     const float* __restrict__ B, int64_t ldb, int64_t M, int64_t N, int64_t K, float alpha,
                     float beta, int64_t tiles_n) {
  using Layout = SharedLayout<Shape, kTransA, kTransB>;
  using ATile = typename Layout::ATile;
  using BTile = typename Layout::BTile;
  using ALayout = typename std::conditional<kTransA, wmma::col_major, wmma::row_major>::type;
  using BLayout = typename std::conditional<kTransB, wmma::col_major, wmma::row_major>::type;
  constexpr int BM = Shape::BM, BN = Shape::BN, BK = Shape::BK, WM = Shape::WM, WN = Shape::WN;
  constexpr int FM = Shape::FM, FN = Shape::FN, kThreads = Shape::kThreads;

  extern __shared__ __align__(128) unsigned char gemm_shared[];
  float* const shared = reinterpret_cast<float*>(gemm_shared);
  float* const a_tiles = shared;                         // two stages
  float* const b_tiles = shared + 2 * ATile::kFloats;   // two stages

  const int64_t m0 = int64_t(blockIdx.x) / tiles_n * BM, n0 = int64_t(blockIdx.x) % tiles_n * BN;
  const int rows_m = int(M - m0 < BM ? M - m0 : BM), cols_n = int(N - n0 < BN ? N - n0 : BN);
  const int warp = int(threadIdx.x) / kWarp, lane = int(threadIdx.x) % kWarp;
  const int warp_m = warp / Shape::kWarpsN, warp_n = warp % Shape::kWarpsN;

  auto load_stage = [&](int stage, int64_t k0) {
    const int depth = int(K - k0 < BK ? K - k0 : BK);
    float* a_tile = a_tiles + stage * ATile::kFloats;
    float* b_tile = b_tiles + stage * BTile::kFloats;
    if constexpr (kTransA) load_tile_async<ATile, kThreads>(a_tile, A + k0 * lda + m0, lda, depth, rows_m);
    else load_tile_async<ATile, kThreads>(a_tile, A + m0 * lda + k0, lda, rows_m, depth);
    if constexpr (kTransB) load_tile_async<BTile, kThreads>(b_tile, B + n0 * ldb + k0, ldb, cols_n, depth);
    else load_tile_async<BTile, kThreads>(b_tile, B + k0 * ldb + n0, ldb, depth, cols_n);
    cp_async_commit();
  };

  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[FM][FN];
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  const int64_t depth_steps = (K + BK - 1) / BK;
  load_stage(0, 0);
  for (int64_t step = 0; step < depth_steps; ++step) {
    const int stage = int(step & 1);
    if (step + 1 < depth_steps) {
      load_stage(stage ^ 1, (step + 1) * BK);  // that stage was last read before the previous barrier
      cp_async_wait<1>();                      // this thread's copies of `stage` have landed
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // ... and every other thread's
    const float* a_tile = a_tiles + stage * ATile::kFloats;
    const float* b_tile = b_tiles + stage * BTile::kFloats;
#pragma unroll 1  // unrolled, the large tiles spill past the 128 registers of two blocks per SM
    for (int kk = 0; kk < BK; kk += 8) {
      wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, ALayout> a[FM];
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, BLayout> b[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i) {
        const int m = warp_m * WM + i * 16;
        if constexpr (kTransA) wmma::load_matrix_sync(a[i], a_tile + kk * ATile::kLd + m, ATile::kLd);
        else wmma::load_matrix_sync(a[i], a_tile + m * ATile::kLd + kk, ATile::kLd);
        round_to_tf32(a[i]);
      }
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        const int n = warp_n * WN + j * 16;
        if constexpr (kTransB) wmma::load_matrix_sync(b[j], b_tile + n * BTile::kLd + kk, BTile::kLd);
        else wmma::load_matrix_sync(b[j], b_tile + kk * BTile::kLd + n, BTile::kLd);
        round_to_tf32(b[j]);
      }
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();  // every warp is done with `stage` before it is loaded again
  }

  // Epilogue: the pipeline's shared memory is free (the loop ended on a barrier); each warp
  // stages its accumulators and writes its WM × WN part of C one row at a time.
  float* const staged = shared + warp * Layout::kWarpStageFloats;
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j)
      wmma::store_matrix_sync(staged + i * 16 * Layout::kStageLd + j * 16, acc[i][j], Layout::kStageLd,
                              wmma::mem_row_major);
  __syncwarp();
  const int64_t row0 = m0 + warp_m * WM, col0 = n0 + warp_n * WN;
  for (int r = 0; r < WM && row0 + r < M; ++r) {
    float* c_row = C + (row0 + r) * ldc;
    for (int c = lane; c < WN; c += kWarp) {
      if (col0 + c >= N) break;
      const float value = alpha * staged[r * Layout::kStageLd + c];
      c_row[col0 + c] = beta == 0.0f ? value : value + beta * c_row[col0 + c];
    }
  }
}

constexpr int kTiny = 16;  // fp32_gemm_kernel's tile side (blocks of kTiny × kTiny threads)

// Note [tiny products]. Thread (ty, tx) computes C[m0 + ty, n0 + tx]; when loading, consecutive
// tx walk the contiguous dimension of A or B, whichever way it is stored.
__global__ void fp32_gemm_kernel(float* __restrict__ C, int64_t ldc, const float* __restrict__ A, int64_t lda,
                                 bool trans_a, const float* __restrict__ B, int64_t ldb, bool trans_b, int64_t M,
                                 int64_t N, int64_t K, float alpha, float beta) {
  __shared__ float a_tile[kTiny][kTiny + 1];  // (m, k)
  __shared__ float b_tile[kTiny][kTiny + 1];  // (k, n)
  const int tx = int(threadIdx.x), ty = int(threadIdx.y);
  const int64_t m0 = int64_t(blockIdx.y) * kTiny, n0 = int64_t(blockIdx.x) * kTiny;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += kTiny) {
    {
      const int m = trans_a ? tx : ty, k = trans_a ? ty : tx;
      const int64_t gm = m0 + m, gk = k0 + k;
      a_tile[m][k] = gm < M && gk < K ? (trans_a ? A[gk * lda + gm] : A[gm * lda + gk]) : 0.0f;
    }
    {
      const int k = trans_b ? tx : ty, n = trans_b ? ty : tx;
      const int64_t gk = k0 + k, gn = n0 + n;
      b_tile[k][n] = gk < K && gn < N ? (trans_b ? B[gn * ldb + gk] : B[gk * ldb + gn]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTiny; ++kk) acc += a_tile[ty][kk] * b_tile[kk][tx];
    __syncthreads();
  }
  const int64_t m = m0 + ty, n = n0 + tx;
  if (m < M && n < N) {
    float& c = C[m * ldc + n];
    c = beta == 0.0f ? alpha * acc : alpha * acc + beta * c;
  }
}

__global__ void scale_c_kernel(float* C, int64_t ldc, int64_t M, int64_t N, float beta) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= M * N) return;
  float& c = C[idx / N * ldc + idx % N];
  c = beta == 0.0f ? 0.0f : beta * c;
}

template <class Shape, bool kTransA, bool kTransB>
void launch_tf32(float* C, int64_t ldc, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t M,
                 int64_t N, int64_t K, float alpha, float beta) {
  const int64_t tiles_m = (M + Shape::BM - 1) / Shape::BM, tiles_n = (N + Shape::BN - 1) / Shape::BN;
  SAFL_CHECK_RANGE(tiles_m * tiles_n <= INT32_MAX, "sgemm: expected at most ", INT32_MAX,
                   " tiles of C on CUDA but received ", tiles_m * tiles_n);
  const auto kernel = tf32_gemm_kernel<Shape, kTransA, kTransB>;
  constexpr size_t bytes = SharedLayout<Shape, kTransA, kTransB>::kBytes;
  SAFL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  kernel<<<unsigned(tiles_m * tiles_n), Shape::kThreads, bytes>>>(C, ldc, A, lda, B, ldb, M, N, K, alpha, beta,
                                                                   tiles_n);
  SAFL_CUDA_CHECK_LAUNCH();
}

template <class Shape>
void launch_tf32_for(float* C, int64_t ldc, const float* A, int64_t lda, bool trans_a, const float* B,
                     int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  if (!trans_a && !trans_b) launch_tf32<Shape, false, false>(C, ldc, A, lda, B, ldb, M, N, K, alpha, beta);
  else if (!trans_a) launch_tf32<Shape, false, true>(C, ldc, A, lda, B, ldb, M, N, K, alpha, beta);
  else if (!trans_b) launch_tf32<Shape, true, false>(C, ldc, A, lda, B, ldb, M, N, K, alpha, beta);
  else launch_tf32<Shape, true, true>(C, ldc, A, lda, B, ldb, M, N, K, alpha, beta);
}

int multiprocessor_count() {
  int device = 0, count = 0;
  SAFL_CUDA_CHECK(cudaGetDevice(&device));
  SAFL_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

}  // namespace

void sgemm(float* C, int64_t ldc, const float* A, int64_t lda, bool trans_a, const float* B, int64_t ldb,
           bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  SAFL_CHECK_RANGE(M >= 0 && N >= 0 && K >= 0, "sgemm: expected M, N, K >= 0 but received ", M, ", ", N, ", ", K);
  SAFL_CHECK_RANGE(lda >= (trans_a ? M : K), "sgemm: expected lda >= ", trans_a ? "M" : "K", " (", trans_a ? M : K,
                   ") but received ", lda);
  SAFL_CHECK_RANGE(ldb >= (trans_b ? K : N), "sgemm: expected ldb >= ", trans_b ? "K" : "N", " (", trans_b ? K : N,
                   ") but received ", ldb);
  SAFL_CHECK_RANGE(ldc >= N, "sgemm: expected ldc >= N (", N, ") but received ", ldc);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    if (beta == 1.0f) return;
    scale_c_kernel<<<grid_1d(size_t(M * N)), kBlock1D>>>(C, ldc, M, N, beta);
    SAFL_CUDA_CHECK_LAUNCH();
    return;
  }
  if (double(M) * double(N) * double(K) <= kTinyMultiplyAdds) {  // Note [tiny products]
    const dim3 blocks{unsigned((N + kTiny - 1) / kTiny), unsigned((M + kTiny - 1) / kTiny)};
    fp32_gemm_kernel<<<blocks, dim3{kTiny, kTiny}>>>(C, ldc, A, lda, trans_a, B, ldb, trans_b, M, N, K, alpha, beta);
    SAFL_CUDA_CHECK_LAUNCH();
    return;
  }
  const int64_t large_tiles =
      ((M + LargeTiles::BM - 1) / LargeTiles::BM) * ((N + LargeTiles::BN - 1) / LargeTiles::BN);
  if (large_tiles >= multiprocessor_count())  // Note [tile shapes]
    launch_tf32_for<LargeTiles>(C, ldc, A, lda, trans_a, B, ldb, trans_b, M, N, K, alpha, beta);
  else
    launch_tf32_for<SmallTiles>(C, ldc, A, lda, trans_a, B, ldb, trans_b, M, N, K, alpha, beta);
}

}  // namespace safl::cuda
