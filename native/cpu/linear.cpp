// CPU linear layer (see ops/linear.h): two or three sgemm calls and a bias pass, and the forward
// of a few rows as dot products (Note [few rows]).
//
// Note [few rows]: with a handful of rows (a decoding step of one image, batch-1 inference)
// sgemm's packing of the weight costs as much as the product, and the product is too small to
// leave the calling thread. linear_forward then takes the dot products of each x row with the
// weight rows where they lie: the weight is read once, without packing, and tasks own blocks of
// output features (each output is summed by one task in one order, so the result does not
// depend on the thread count, nor on how many rows come with it). A tile of rows × outputs
// accumulates W-lane partial products and ends with their transposed sums (lane_sums.h). The
// kernel is written once with the GCC/Clang vector extension and compiled per SIMD level, as the
// attention kernels are (Note [SIMD variants] in attention.cpp). With a weight already packed
// (linear_forward_packed) there is no packing left to save, but a few rows would still run
// through sgemm's 8-row tiles reading every panel: in float32 they keep the dot products. Under
// bfloat16 products they go through the packed panels (half the stored weight's bytes), so that
// few-row steps multiply in bfloat16 as the steps of more rows do.
#include "ops/linear.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/cpu_features.h"
#include "common/error.h"
#include "common/matmul_precision.h"
#include "common/threadpool.h"
#include "cpu/lane_sums.h"
#include "ops/gemm.h"

namespace safl::cpu {
namespace {

void check_sizes(const char* op, int64_t N, int64_t in_features, int64_t out_features) {
  SAFL_CHECK_RANGE(N >= 0, op, ": expected N >= 0 but received ", N);
  SAFL_CHECK_RANGE(in_features >= 0, op, ": expected in_features >= 0 but received ", in_features);
  SAFL_CHECK_RANGE(out_features >= 0, op, ": expected out_features >= 0 but received ", out_features);
}

// Note [column sums]: the bias gradient sums each column of dout over its rows in float for
// blocks of kRowsPerBlock rows (vector adds, rounding near float precision within a block), the
// blocks' sums in double; in row order, so the result does not depend on the thread count.
constexpr int64_t kRowsPerBlock = 32;

// Up to this many rows take the dot-product path (Note [few rows]).
constexpr int64_t kFewRows = 12;
// Output features per tile of several rows, output features a task takes at least (a multiple of
// every SIMD width), and multiply-adds that make a task worth handing out.
constexpr int64_t kTileOutputs = 4;
constexpr int64_t kTaskOutputs = 16;
constexpr int64_t kMultiplyAddsPerTask = 1 << 17;

template <int W>
struct RowDots {
  typedef float Lanes __attribute__((vector_size(W * sizeof(float))));
  // Rows per tile: kTileRows × kTileOutputs accumulators (16 with AVX-512, 8 with SSE or AVX2)
  // leave registers for the loads.
  static constexpr int kTileRows = W >= 16 ? 4 : 2;

  static Lanes load(const float* p) {
    Lanes v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }

  // out[r, o] = x[r, :] · w[o, :] (+ bias[o]) for R rows and O outputs.
  template <int R, int O>
  static void tile(float* out, int64_t ld_out, const float* x, const float* w, const float* bias, int64_t I) {
    Lanes acc[R * O] = {};
    int64_t k = 0;
    for (; k + W <= I; k += W) {
      Lanes wv[O];
      for (int o = 0; o < O; ++o) wv[o] = load(w + o * I + k);
      for (int r = 0; r < R; ++r) {
        const Lanes xv = load(x + r * I + k);
        for (int o = 0; o < O; ++o) acc[r * O + o] += xv * wv[o];
      }
    }
    float sums[R * O];
    if constexpr (R * O == W) {
      lanes::transposed_sums<W>(sums, acc);  // Note [transposed sums]
    } else {
      for (int i = 0; i < R * O; ++i) sums[i] = lanes::lane_sum<W>(acc[i]);
    }
    for (int r = 0; r < R; ++r) {
      for (int o = 0; o < O; ++o) {
        float sum = sums[r * O + o];
        for (int64_t j = k; j < I; ++j) sum += x[r * I + j] * w[o * I + j];
        out[r * ld_out + o] = bias ? sum + bias[o] : sum;
      }
    }
  }

  // out[:, o0:o1] for every row. Rows go kTileRows at a time against kTileOutputs outputs; the
  // rows left over (all of them for a single row) go one at a time against W outputs, whose W
  // accumulators make one transposed sum. Every output is the same bits in either tile shape.
  static void run(float* out, const float* x, const float* weight, const float* bias, int64_t N, int64_t I,
                  int64_t O, int64_t o0, int64_t o1) {
    const int64_t grouped = N - N % kTileRows;
    auto bias_at = [&](int64_t o) { return bias ? bias + o : nullptr; };
    if (grouped > 0) {
      int64_t o = o0;
      for (; o + kTileOutputs <= o1; o += kTileOutputs)
        for (int64_t n = 0; n < grouped; n += kTileRows)
          tile<kTileRows, kTileOutputs>(out + n * O + o, O, x + n * I, weight + o * I, bias_at(o), I);
      for (; o < o1; ++o)
        for (int64_t n = 0; n < grouped; n += kTileRows)
          tile<kTileRows, 1>(out + n * O + o, O, x + n * I, weight + o * I, bias_at(o), I);
    }
    for (int64_t n = grouped; n < N; ++n) {
      int64_t o = o0;
      for (; o + W <= o1; o += W) tile<1, W>(out + n * O + o, O, x + n * I, weight + o * I, bias_at(o), I);
      for (; o < o1; ++o) tile<1, 1>(out + n * O + o, O, x + n * I, weight + o * I, bias_at(o), I);
    }
  }
};

using RowDotsFn = void (*)(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t,
                           int64_t);

__attribute__((flatten)) void row_dots_generic(float* out, const float* x, const float* weight, const float* bias,
                                               int64_t N, int64_t I, int64_t O, int64_t o0, int64_t o1) {
  RowDots<4>::run(out, x, weight, bias, N, I, O, o0, o1);
}
#if defined(__x86_64__) || defined(__i386__)
#define SAFL_LINEAR_X86_VARIANTS 1
__attribute__((target("avx2,fma"), flatten)) void row_dots_avx2(float* out, const float* x, const float* weight,
                                                                const float* bias, int64_t N, int64_t I, int64_t O,
                                                                int64_t o0, int64_t o1) {
  RowDots<8>::run(out, x, weight, bias, N, I, O, o0, o1);
}
__attribute__((target("avx512f,avx2,fma"), flatten)) void row_dots_avx512(float* out, const float* x,
                                                                          const float* weight, const float* bias,
                                                                          int64_t N, int64_t I, int64_t O,
                                                                          int64_t o0, int64_t o1) {
  RowDots<16>::run(out, x, weight, bias, N, I, O, o0, o1);
}
#endif

RowDotsFn row_dots_kernel() {
#ifdef SAFL_LINEAR_X86_VARIANTS
  if (simd_level() == SimdLevel::Avx512) return row_dots_avx512;
  if (simd_level() == SimdLevel::Avx2) return row_dots_avx2;
#endif
  return row_dots_generic;
}

// Note [few rows].
void linear_forward_few_rows(float* out, const float* x, const float* weight, const float* bias, int64_t N,
                             int64_t I, int64_t O) {
  const RowDotsFn kernel = row_dots_kernel();
  const int64_t blocks = (O + kTaskOutputs - 1) / kTaskOutputs;
  const int64_t grain = std::max<int64_t>(1, kMultiplyAddsPerTask / std::max<int64_t>(1, kTaskOutputs * I * N));
  parallel_for(0, blocks, grain, [&](int64_t lo, int64_t hi) {
    kernel(out, x, weight, bias, N, I, O, lo * kTaskOutputs, std::min(O, hi * kTaskOutputs));
  });
}

// out = x · Wᵀ + b through sgemm: the bias rows, then one product added to them (from the packed
// weight when there is one). linear_forward sends it more than kFewRows rows; linear_forward_packed
// any number.
void linear_forward_rows(float* out, const float* x, const float* weight, const PackedB* weight_packed,
                         const float* bias, int64_t N, int64_t in_features, int64_t out_features) {
  if (bias) {
    parallel_for(0, N, 256, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n)
        for (int64_t o = 0; o < out_features; ++o) out[n * out_features + o] = bias[o];
    });
  }
  const float beta = bias ? 1.0f : 0.0f;
  if (weight_packed) {
    sgemm_packed_b(out, out_features, x, in_features, false, *weight_packed, N, 1.0f, beta);
  } else {
    sgemm(out, out_features, x, in_features, false, weight, in_features, true, N, out_features, in_features, 1.0f,
          beta);
  }
}

}  // namespace

void linear_forward(float* out, const float* x, const float* weight, const float* bias, int64_t N,
                    int64_t in_features, int64_t out_features) {
  check_sizes("linear_forward", N, in_features, out_features);
  if (N == 0 || out_features == 0) return;
  if (N <= kFewRows) {
    linear_forward_few_rows(out, x, weight, bias, N, in_features, out_features);
    return;
  }
  linear_forward_rows(out, x, weight, nullptr, bias, N, in_features, out_features);
}

void pack_linear_weight(PackedB& packed, const float* weight, int64_t in_features, int64_t out_features) {
  check_sizes("pack_linear_weight", 0, in_features, out_features);
  packed.pack(weight, in_features, true, in_features, out_features);
}

void linear_forward_packed(float* out, const float* x, const float* weight, const PackedB* weight_packed,
                           const float* bias, int64_t N, int64_t in_features, int64_t out_features) {
  if (weight_packed == nullptr || (N <= kFewRows && !bfloat16_products_this_call())) {  // Note [few rows]
    linear_forward(out, x, weight, bias, N, in_features, out_features);
    return;
  }
  check_sizes("linear_forward_packed", N, in_features, out_features);
  SAFL_CHECK_RANGE(weight_packed->K() == in_features && weight_packed->N() == out_features,
                   "linear_forward_packed: expected a weight packed as (", in_features, ", ", out_features,
                   ") but received (", weight_packed->K(), ", ", weight_packed->N(), ")");
  if (N == 0 || out_features == 0) return;
  linear_forward_rows(out, x, weight, weight_packed, bias, N, in_features, out_features);
}

void linear_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, int64_t N, int64_t in_features, int64_t out_features) {
  check_sizes("linear_backward", N, in_features, out_features);
  if (dx && N > 0 && in_features > 0)  // dx = dout · W
    sgemm(dx, in_features, dout, out_features, false, weight, in_features, false, N, in_features,
          out_features, 1.0f, 0.0f);
  if (N == 0 || out_features == 0) return;
  if (in_features > 0)  // dW += doutᵀ · x
    sgemm(dweight, in_features, dout, out_features, true, x, in_features, false, out_features,
          in_features, N, 1.0f, 1.0f);
  if (dbias) {  // db += column sums of dout, each column by one task (Note [column sums])
    parallel_for(0, out_features, 64, [&](int64_t lo, int64_t hi) {
      std::vector<double> sums(hi - lo, 0.0);
      std::vector<float> block(hi - lo);
      for (int64_t n0 = 0; n0 < N; n0 += kRowsPerBlock) {
        std::fill(block.begin(), block.end(), 0.0f);
        for (int64_t n = n0; n < std::min(N, n0 + kRowsPerBlock); ++n)
          for (int64_t o = lo; o < hi; ++o) block[o - lo] += dout[n * out_features + o];
        for (int64_t o = lo; o < hi; ++o) sums[o - lo] += block[o - lo];
      }
      for (int64_t o = lo; o < hi; ++o) dbias[o] += float(sums[o - lo]);
    });
  }
}

}  // namespace safl::cpu
