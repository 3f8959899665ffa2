// CUDA 2-D convolution (see ops/conv.h) as implicit GEMMs on the tensor cores: TF32 inputs, FP32
// accumulation, no im2col buffer. One kernel template (implicit_gemm_kernel) runs all three
// products; a "problem" struct says how its operands are gathered and where the results go:
//
//   forward   out[co, (b,oh,ow)]  = Σ over taps (ci,kh,kw)   W[co, tap] · x gathered     (+ bias)
//   dx        dx[ci, (b,h,w)]     = Σ over taps (co,kh,kw)   W[co, ci, kh, kw] · dout gathered
//   dweight   dW[co, tap]        += Σ over pixels (b,oh,ow)  dout[b, co, oh, ow] · x gathered
//
// Note [implicit GEMM tiles]: a block of 128 threads (4 warps) computes a BM×BN tile of C = A·B,
// BM×BN = 64×64, or 32×128 when M <= 32 (the narrow early layers), each warp a 32×32 piece as 2×2
// wmma 16×16×8 TF32 fragments. The reduction runs in steps of kBK = 32: every thread gathers its
// share of the next A (BM×kBK) and B (kBK×BN) tiles into registers while the warps multiply the
// current tiles, then stores them, rounded to TF32 (__float_to_tf32), into shared memory. Values
// outside the problem (the zero padding of the conv, the ragged edges of M, N and K) are stored as
// 0, so the fragments never read undefined memory and the tails need no special case. Fragments
// are loaded only from shared memory, whose rows are padded by 4 floats (breaking bank conflicts
// while keeping ldm a multiple of 4 and every fragment pointer 32-byte aligned). The accumulators
// are staged through the same shared memory for the epilogue, which writes with N the fastest
// index (coalesced along the pixels of an image).
//
// Note [which index a thread owns]: for A every thread owns one reduction index k of the tile and
// several rows m, so the offset of k (a division or two) is computed once per tile. For B the
// thread owns the index that names a pixel — for the forward and dx products that is its column n,
// fixed for the whole kernel, for dweight (whose reduction runs over pixels) its row k of the
// tile — and decodes the pixel once; each element then only decodes a tap (ci, kh, kw). The
// consecutive threads of a warp own consecutive pixels, so the gathers read consecutive input
// addresses, and the shared-memory store follows the same order: B is stored n-major (row_major
// fragments) when threads run along n, k-major (col_major fragments) when they run along k.
//
// Note [dx without atomics]: dx is the transposed convolution written as a gather per input
// pixel: dx[b, ci, h, w] = Σ W[co, ci, kh, kw] · dout[b, co, (h + pad_h − kh)/stride_h,
// (w + pad_w − kw)/stride_w] over the taps where both divisions are exact and land inside the
// output. Each dx element is owned by one thread, so it is written (=) once, deterministically.
// The price of having no atomics is the zeros gathered where a division is not exact: a strided
// 1×1 shortcut reaches one input pixel in stride_h·stride_w, so its dx product multiplies that
// many times more zeros than values.
//
// Note [CUDA workspace]: forward and dx need no scratch. The weight gradient reduces over
// B·Ho·Wo pixels — 200 000 for the stem at batch 64 — onto a Co×(Ci·kh·kw) result that can be a
// single tile, so its reduction is split (gridDim.z) into chunks of whole kBK steps, chosen from
// the sizes alone (no device query, so the workspace size is a pure function of the shape). Each
// split writes its partial tile to the workspace and a second kernel adds the partials in split
// order and then into dweight: deterministic, no atomics. conv2d_workspace_floats returns
// splits·Co·Ci·kh·kw when there is more than one split and 0 otherwise; forward ignores the
// workspace but checks it like the CPU op, so that a caller's sizing bug shows on both backends.
//
// Indices inside the kernels are int: the host checks that every tensor holds fewer than 2^30
// elements. The bias gradient is a fixed-order block reduction in double per channel.
#include <mma.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "ops/conv.h"

namespace safl::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kThreads = 128;        // 4 warps per implicit-GEMM block
constexpr int kWarp = 32;
constexpr int kBK = 32;              // reduction step
constexpr int kSmemPad = 4;          // floats added to each shared-memory row
constexpr int64_t kMaxElements = int64_t(1) << 30;
constexpr int64_t kMaxChannels = int64_t(1) << 20;  // M / BM must fit gridDim.y (65535)

// Weight-gradient split (Note [CUDA workspace]).
constexpr int64_t kTargetBlocks = 512;            // enough blocks to fill a large GPU twice
constexpr int64_t kMinPixelsPerSplit = 8 * kBK;   // each split runs at least 8 reduction steps
constexpr int64_t kMaxSplits = 256;

constexpr int kBiasBlock = 256;  // threads per channel of the bias-gradient reduction

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- the implicit GEMM kernel ----------------------------------------------------------------

// Note [implicit GEMM tiles]: sizes and shared-memory layout of a BM×BN tile.
template <int BM, int BN>
struct TileConfig {
  static constexpr int kWarpsN = BN / 32;
  static_assert((BM / 32) * kWarpsN == kThreads / kWarp, "one 32×32 piece per warp");
  static_assert(kThreads % BN == 0 && kThreads % kBK == 0, "a thread owns one column / one k");
  static constexpr int kALd = kBK + kSmemPad;    // A: [BM][kALd], k contiguous
  static constexpr int kBRowLd = BN + kSmemPad;  // B n-major: [kBK][kBRowLd]
  static constexpr int kBColLd = kBK + kSmemPad; // B k-major: [BN][kBColLd]
  static constexpr int kCLd = BN + kSmemPad;     // C staging: [BM][kCLd]
  static constexpr int kAFloats = BM * kALd;
  static constexpr int kBFloats = kBK * kBRowLd > BN * kBColLd ? kBK * kBRowLd : BN * kBColLd;
  static constexpr int kCFloats = BM * kCLd;
  static constexpr int kSmemFloats =
      kAFloats + kBFloats > kCFloats ? kAFloats + kBFloats : kCFloats;
  static constexpr int kAPerThread = BM * kBK / kThreads;  // A rows a thread gathers per step
  static constexpr int kBPerThread = BN * kBK / kThreads;  // B elements a thread gathers per step
  static_assert(kAFloats % 8 == 0, "B tile 32-byte aligned");
  static_assert(kSmemFloats * 4 <= 48 * 1024, "static shared memory");
};

// The x operand: for an output pixel p = (b, oh, ow) and a tap t = (ci, kh, kw), the im2col
// value x[b, ci, oh·sh − ph + kh, ow·sw − pw + kw], 0 in the padding.
struct XGather {
  const float* x;
  int Ci, H, W, Wo, HWo, kw, taps_per_channel, sh, sw, ph, pw;
  struct Pixel {
    int base, ih0, iw0;  // offset of image b, top-left input row and column of the window
  };
  __device__ Pixel pixel(int p) const {
    const int b = p / HWo, hw = p - b * HWo, oh = hw / Wo, ow = hw - oh * Wo;
    return {b * Ci * H * W, oh * sh - ph, ow * sw - pw};
  }
  __device__ float value(const Pixel& px, int tap) const {
    const int ci = tap / taps_per_channel, r = tap - ci * taps_per_channel;
    const int kh = r / kw, ih = px.ih0 + kh, iw = px.iw0 + (r - kh * kw);
    if (ih < 0 || ih >= H || iw < 0 || iw >= W) return 0.0f;
    return x[px.base + (ci * H + ih) * W + iw];
  }
};

// The dout operand of dx (Note [dx without atomics]): for an input pixel p = (b, h, w) and a tap
// t = (co, kh, kw), dout[b, co, (h + ph − kh)/sh, (w + pw − kw)/sw] where both divide exactly and
// land inside the output, else 0.
struct DoutGather {
  const float* dout;
  int Co, H, W, Ho, Wo, kw, taps_per_channel, sh, sw, ph, pw;
  struct Pixel {
    int base, hp, wp;  // offset of image b, h + ph, w + pw
  };
  __device__ Pixel pixel(int p) const {
    const int HW = H * W, b = p / HW, hw = p - b * HW, h = hw / W, w = hw - h * W;
    return {b * Co * Ho * Wo, h + ph, w + pw};
  }
  __device__ float value(const Pixel& px, int tap) const {
    const int co = tap / taps_per_channel, r = tap - co * taps_per_channel;
    const int kh = r / kw, th = px.hp - kh, tw = px.wp - (r - kh * kw);
    if (th < 0 || tw < 0) return 0.0f;
    const int oh = th / sh, ow = tw / sw;
    if (oh * sh != th || ow * sw != tw || oh >= Ho || ow >= Wo) return 0.0f;
    return dout[px.base + (co * Ho + oh) * Wo + ow];
  }
};

// out[b, co, oh, ow] = W[co, :] · col[:, (b, oh, ow)] + bias[co]. A = weight (Co, K) row-major.
struct ForwardProblem {
  static constexpr bool kBAlongK = false;  // B's pixel index is its column n
  int M, N, K;
  const float* a;
  int a_row_stride;
  XGather gather;
  float* out;
  const float* bias;
  int HWo;
  __device__ int a_offset(int k) const { return k; }
  __device__ void store(int m, int n, float value, int /*split*/) const {
    const int b = n / HWo, hw = n - b * HWo;
    out[(b * M + m) * HWo + hw] = value + (bias ? bias[m] : 0.0f);
  }
};

// dx[b, ci, h, w] = Σ_(co, kh, kw) W[co, ci, kh, kw] · dout gathered. A(ci, (co, tap)) is the
// weight read across its first two dimensions: offset co·Ci·taps + tap + ci·taps.
struct InputGradProblem {
  static constexpr bool kBAlongK = false;
  int M, N, K;
  const float* a;
  int a_row_stride;  // taps per channel
  int Ci;
  DoutGather gather;
  float* dx;
  int HW;
  __device__ int a_offset(int k) const {
    const int co = k / a_row_stride;
    return co * Ci * a_row_stride + (k - co * a_row_stride);
  }
  __device__ void store(int m, int n, float value, int /*split*/) const {
    const int b = n / HW, hw = n - b * HW;
    dx[(b * M + m) * HW + hw] = value;
  }
};

// dW[co, tap] += Σ_(b, oh, ow) dout[b, co, oh, ow] · col[tap, (b, oh, ow)]: the reduction runs
// over pixels, so B's pixel index is its row k (Note [which index a thread owns]). With one split
// the result is added to dweight; with several each split writes its partial tile.
struct WeightGradProblem {
  static constexpr bool kBAlongK = true;
  int M, N, K;
  const float* a;
  int a_row_stride;  // Ho·Wo
  XGather gather;
  float* dweight;
  float* partial;  // (splits, Co, taps), or nullptr with one split
  __device__ int a_offset(int k) const {
    const int b = k / a_row_stride;
    return b * M * a_row_stride + (k - b * a_row_stride);
  }
  __device__ void store(int m, int n, float value, int split) const {
    if (partial) {
      partial[(split * M + m) * N + n] = value;
    } else {
      dweight[m * N + n] += value;
    }
  }
};

// C[M, N] = A[M, K] · B[K, N] over the reduction range of split blockIdx.z (k_per_split, a
// multiple of kBK), handed to problem.store. Note [implicit GEMM tiles].
template <class Problem, int BM, int BN>
__global__ void __launch_bounds__(kThreads) implicit_gemm_kernel(const Problem problem, int k_per_split) {
  using Cfg = TileConfig<BM, BN>;
  using BLayout = std::conditional_t<Problem::kBAlongK, wmma::col_major, wmma::row_major>;
  using Pixel = typename decltype(Problem::gather)::Pixel;
  __shared__ __align__(128) float smem[Cfg::kSmemFloats];
  float* const a_tile = smem;
  float* const b_tile = smem + Cfg::kAFloats;
  float* const c_tile = smem;  // reused once the main loop is over

  const int tid = threadIdx.x, warp = tid / kWarp;
  const int warp_m = warp / Cfg::kWarpsN, warp_n = warp % Cfg::kWarpsN;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int k_begin = blockIdx.z * k_per_split;
  const int k_end = min(problem.K, k_begin + k_per_split);
  const int steps = k_end > k_begin ? (k_end - k_begin + kBK - 1) / kBK : 0;

  // Note [which index a thread owns].
  const int a_k = tid % kBK, a_m = tid / kBK;  // rows a_m + j·(kThreads / kBK)
  constexpr int kARowStep = kThreads / kBK;
  // B along n: column b_n, rows b_k + j·(kThreads / BN). B along k: row b_k, columns b_n + j·4.
  const int b_n = Problem::kBAlongK ? tid / kBK : tid % BN;
  const int b_k = Problem::kBAlongK ? tid % kBK : tid / BN;
  constexpr int kBStep = Problem::kBAlongK ? kThreads / kBK : kThreads / BN;
  const bool column_inside = n0 + b_n < problem.N;
  Pixel column_pixel{};
  if (!Problem::kBAlongK && column_inside) column_pixel = problem.gather.pixel(n0 + b_n);

  float a_regs[Cfg::kAPerThread], b_regs[Cfg::kBPerThread];
  auto gather_step = [&](int k0) {
    const int ka = k0 + a_k;
    if (ka < k_end) {
      const int offset = problem.a_offset(ka);
#pragma unroll
      for (int j = 0; j < Cfg::kAPerThread; ++j) {
        const int m = m0 + a_m + j * kARowStep;
        a_regs[j] = m < problem.M ? problem.a[offset + m * problem.a_row_stride] : 0.0f;
      }
    } else {
#pragma unroll
      for (int j = 0; j < Cfg::kAPerThread; ++j) a_regs[j] = 0.0f;
    }
    if constexpr (Problem::kBAlongK) {
      const int k = k0 + b_k;
      const bool k_inside = k < k_end;
      Pixel px{};
      if (k_inside) px = problem.gather.pixel(k);
#pragma unroll
      for (int j = 0; j < Cfg::kBPerThread; ++j) {
        const int n = n0 + b_n + j * kBStep;
        b_regs[j] = k_inside && n < problem.N ? problem.gather.value(px, n) : 0.0f;
      }
    } else {
#pragma unroll
      for (int j = 0; j < Cfg::kBPerThread; ++j) {
        const int k = k0 + b_k + j * kBStep;
        b_regs[j] = column_inside && k < k_end ? problem.gather.value(column_pixel, k) : 0.0f;
      }
    }
  };
  auto store_step = [&] {
#pragma unroll
    for (int j = 0; j < Cfg::kAPerThread; ++j)
      a_tile[(a_m + j * kARowStep) * Cfg::kALd + a_k] = wmma::__float_to_tf32(a_regs[j]);
#pragma unroll
    for (int j = 0; j < Cfg::kBPerThread; ++j) {
      const float v = wmma::__float_to_tf32(b_regs[j]);
      if constexpr (Problem::kBAlongK) {
        b_tile[(b_n + j * kBStep) * Cfg::kBColLd + b_k] = v;
      } else {
        b_tile[(b_k + j * kBStep) * Cfg::kBRowLd + b_n] = v;
      }
    }
  };

  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  if (steps > 0) gather_step(k_begin);
  for (int step = 0; step < steps; ++step) {
    store_step();
    __syncthreads();
    if (step + 1 < steps) gather_step(k_begin + (step + 1) * kBK);
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 8) {
      wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a_frag[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, BLayout> b_frag[2];
#pragma unroll
      for (int i = 0; i < 2; ++i)
        wmma::load_matrix_sync(a_frag[i], a_tile + (warp_m * 32 + i * 16) * Cfg::kALd + kk, Cfg::kALd);
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int n = warp_n * 32 + j * 16;
        if constexpr (Problem::kBAlongK) {
          wmma::load_matrix_sync(b_frag[j], b_tile + n * Cfg::kBColLd + kk, Cfg::kBColLd);
        } else {
          wmma::load_matrix_sync(b_frag[j], b_tile + kk * Cfg::kBRowLd + n, Cfg::kBRowLd);
        }
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a_frag[i], b_frag[j], acc[i][j]);
    }
    __syncthreads();  // the tiles are overwritten by the next store_step (or by c_tile)
  }

#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(c_tile + (warp_m * 32 + i * 16) * Cfg::kCLd + warp_n * 32 + j * 16,
                              acc[i][j], Cfg::kCLd, wmma::mem_row_major);
  __syncthreads();
  for (int index = tid; index < BM * BN; index += kThreads) {
    const int m = index / BN, n = index % BN;
    if (m0 + m < problem.M && n0 + n < problem.N)
      problem.store(m0 + m, n0 + n, c_tile[m * Cfg::kCLd + n], blockIdx.z);
  }
}

// Tile shape for M rows (Note [implicit GEMM tiles]).
bool narrow_tiles(int64_t M) { return M <= 32; }
int64_t tile_m(int64_t M) { return narrow_tiles(M) ? 32 : 64; }
int64_t tile_n(int64_t M) { return narrow_tiles(M) ? 128 : 64; }

template <class Problem>
void launch_implicit_gemm(const Problem& problem, int splits, int k_per_split) {
  if (problem.M == 0 || problem.N == 0) return;
  const dim3 blocks(unsigned(ceil_div(problem.N, tile_n(problem.M))),
                    unsigned(ceil_div(problem.M, tile_m(problem.M))), unsigned(splits));
  if (narrow_tiles(problem.M)) {
    implicit_gemm_kernel<Problem, 32, 128><<<blocks, kThreads>>>(problem, k_per_split);
  } else {
    implicit_gemm_kernel<Problem, 64, 64><<<blocks, kThreads>>>(problem, k_per_split);
  }
  SAFL_CUDA_CHECK_LAUNCH();
}

// ---- the other kernels -----------------------------------------------------------------------

// dweight[i] += Σ over splits, in order, of partial[split, i].
__global__ void add_partials_kernel(float* dweight, const float* partial, int size, int splits) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= size) return;
  float sum = 0.0f;
  for (int s = 0; s < splits; ++s) sum += partial[s * size + i];
  dweight[i] += sum;
}

// One block per channel co: dbias[co] += Σ over b, oh, ow of dout[b, co, oh, ow], summed in
// double, the per-thread sums combined by a fixed tree.
__global__ void bias_grad_kernel(float* dbias, const float* dout, int B, int Co, int HWo) {
  __shared__ double partial[kBiasBlock];
  const int co = blockIdx.x;
  double sum = 0.0;
  for (int i = threadIdx.x; i < B * HWo; i += kBiasBlock) {
    const int b = i / HWo;
    sum += dout[(b * Co + co) * HWo + (i - b * HWo)];
  }
  partial[threadIdx.x] = sum;
  for (int half = kBiasBlock / 2; half > 0; half /= 2) {
    __syncthreads();
    if (int(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
  }
  if (threadIdx.x == 0) dbias[co] += float(partial[0]);
}

// ---- host side -------------------------------------------------------------------------------

struct ConvGeometry {
  int64_t B, Ci, H, W, Co, kh, kw, sh, sw, ph, pw;
  int64_t Ho, Wo;
  int64_t taps() const { return Ci * kh * kw; }
  int64_t pixels_out() const { return B * Ho * Wo; }
};

// The split of the weight-gradient reduction (Note [CUDA workspace]).
struct WeightGradPlan {
  int64_t splits, pixels_per_split;
  int64_t workspace_floats;
};

WeightGradPlan plan_weight_grad(const ConvGeometry& g) {
  const int64_t pixels = g.pixels_out(), taps = g.taps();
  if (pixels == 0 || taps == 0 || g.Co == 0) return {1, kBK, 0};
  const int64_t tiles = ceil_div(g.Co, tile_m(g.Co)) * ceil_div(taps, tile_n(g.Co));
  const int64_t wanted = std::min({ceil_div(kTargetBlocks, tiles), std::max<int64_t>(1, pixels / kMinPixelsPerSplit),
                                   kMaxSplits});
  const int64_t per_split = ceil_div(ceil_div(pixels, wanted), kBK) * kBK;
  const int64_t splits = ceil_div(pixels, per_split);
  return {splits, per_split, splits > 1 ? splits * g.Co * taps : 0};
}

// a·b·c·d < kMaxElements, without overflowing on the way (all factors >= 0).
bool below_limit(int64_t a, int64_t b, int64_t c = 1, int64_t d = 1) {
  int64_t product = 1;
  for (const int64_t f : {a, b, c, d}) {
    if (f == 0) return true;
    if (product > (kMaxElements - 1) / f) return false;
    product *= f;
  }
  return true;
}

// The argument checks of the CPU op (same messages), then the limits of the int indexing.
ConvGeometry check_geometry(const char* op, int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co,
                            int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  detail::check_conv2d_sizes(op, B, Ci, H, W, Co, kh, kw, sh, sw, ph, pw);
  const ConvGeometry g{B, Ci, H, W, Co, kh, kw, sh, sw, ph, pw,
                       conv2d_output_size(H, kh, sh, ph), conv2d_output_size(W, kw, sw, pw)};
  SAFL_CHECK_RANGE(Ci <= kMaxChannels && Co <= kMaxChannels, op, ": expected Ci and Co <= ", kMaxChannels,
                   " on CUDA but received ", Ci, " and ", Co);
  SAFL_CHECK_RANGE(below_limit(B, Ci, H + 2 * ph, W + 2 * pw) && below_limit(B, Co, g.Ho, g.Wo) &&
                       below_limit(Co, Ci, kh, kw) && below_limit(plan_weight_grad(g).workspace_floats, 1),
                   op, ": expected every tensor and the workspace to hold fewer than 2^30 elements on CUDA",
                   " but received x (", B, ", ", Ci, ", ", H, ", ", W, "), weight (", Co, ", ", Ci, ", ", kh,
                   ", ", kw, "), out (", B, ", ", Co, ", ", g.Ho, ", ", g.Wo, ")");
  return g;
}

void check_workspace(const char* op, const float* workspace, const ConvGeometry& g) {
  const int64_t floats = plan_weight_grad(g).workspace_floats;
  SAFL_CHECK(workspace != nullptr || floats == 0, op, ": expected a workspace of ", floats,
             " floats (conv2d_workspace_floats) but received nullptr");
}

XGather x_gather(const float* x, const ConvGeometry& g) {
  return {x, int(g.Ci), int(g.H), int(g.W), int(g.Wo), int(g.Ho * g.Wo), int(g.kw), int(g.kh * g.kw),
          int(g.sh), int(g.sw), int(g.ph), int(g.pw)};
}

}  // namespace

int64_t conv2d_workspace_floats(int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co,
                                int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                                int64_t stride_w, int64_t pad_h, int64_t pad_w) {
  const ConvGeometry g = check_geometry("conv2d_workspace_floats", B, Ci, H, W, Co, kernel_h, kernel_w,
                                        stride_h, stride_w, pad_h, pad_w);
  return plan_weight_grad(g).workspace_floats;
}

void conv2d_forward(float* out, float* workspace, const float* x, const float* weight,
                    const float* bias, int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co,
                    int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                    int64_t pad_h, int64_t pad_w) {
  const ConvGeometry g = check_geometry("conv2d_forward", B, Ci, H, W, Co, kernel_h, kernel_w, stride_h,
                                        stride_w, pad_h, pad_w);
  check_workspace("conv2d_forward", workspace, g);
  const int64_t K = g.taps();
  ForwardProblem problem{int(Co), int(g.pixels_out()), int(K), weight, int(K), x_gather(x, g), out, bias,
                         int(g.Ho * g.Wo)};
  launch_implicit_gemm(problem, 1, int(ceil_div(std::max<int64_t>(K, 1), kBK) * kBK));
}

void conv2d_backward(float* dx, float* dweight, float* dbias, float* workspace, const float* dout,
                     const float* x, const float* weight, int64_t B, int64_t Ci, int64_t H,
                     int64_t W, int64_t Co, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                     int64_t stride_w, int64_t pad_h, int64_t pad_w) {
  const ConvGeometry g = check_geometry("conv2d_backward", B, Ci, H, W, Co, kernel_h, kernel_w, stride_h,
                                        stride_w, pad_h, pad_w);
  check_workspace("conv2d_backward", workspace, g);
  const int64_t HWo = g.Ho * g.Wo, taps = g.taps(), pixels = g.pixels_out();
  if (pixels == 0) return;
  if (dbias && Co > 0) {
    bias_grad_kernel<<<unsigned(Co), kBiasBlock>>>(dbias, dout, int(B), int(Co), int(HWo));
    SAFL_CUDA_CHECK_LAUNCH();
  }
  const WeightGradPlan plan = plan_weight_grad(g);
  WeightGradProblem weight_problem{int(Co), int(taps), int(pixels), dout, int(HWo), x_gather(x, g), dweight,
                                   plan.splits > 1 ? workspace : nullptr};
  launch_implicit_gemm(weight_problem, int(plan.splits), int(plan.pixels_per_split));
  if (plan.splits > 1) {
    const int64_t size = Co * taps;
    add_partials_kernel<<<grid_1d(size_t(size)), kBlock1D>>>(dweight, workspace, int(size), int(plan.splits));
    SAFL_CUDA_CHECK_LAUNCH();
  }
  if (!dx) return;
  // Note [dx without atomics]: M = Ci, N = B·H·W, K = Co·kh·kw (zero when Co = 0: dx = 0).
  const int64_t dx_taps = Co * kernel_h * kernel_w;
  const DoutGather gather{dout, int(Co), int(H), int(W), int(g.Ho), int(g.Wo), int(kernel_w),
                          int(kernel_h * kernel_w), int(stride_h), int(stride_w), int(pad_h), int(pad_w)};
  InputGradProblem input_problem{int(Ci), int(B * H * W), int(dx_taps), weight, int(kernel_h * kernel_w),
                                 int(Ci), gather, dx, int(H * W)};
  launch_implicit_gemm(input_problem, 1, int(ceil_div(std::max<int64_t>(dx_taps, 1), kBK) * kBK));
}

}  // namespace safl::cuda
