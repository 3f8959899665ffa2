// Linear layer (ops/linear.h): gradient checks of x, weight and bias, hand-computed cases, the
// optional pointers, accumulation of the parameter gradients, the few-rows forward path against a
// double loop, the forward from a packed weight against sgemm, zero sizes and argument errors.
#include <vector>

#include "common/cpu_features.h"
#include "common/error.h"
#include "common/matmul_precision.h"
#include "common/threadpool.h"
#include "ops/gemm.h"
#include "ops/linear.h"
#include "tests/harness.h"

using safl::test::Guarded;

SAFL_TEST(linear_gradcheck) {
  const int64_t N = 5, in = 7, out = 3;
  safl::test::Rng rng(11);
  std::vector<float> x(N * in), weight(out * in), bias(out), w(N * out);
  rng.fill_uniform(x.data(), x.size());
  rng.fill_uniform(weight.data(), weight.size());
  rng.fill_uniform(bias.data(), bias.size());
  rng.fill_uniform(w.data(), w.size());
  std::vector<float> y(N * out), dx(N * in), dweight(out * in), dbias(out);
  auto loss = [&] {
    safl::cpu::linear_forward(y.data(), x.data(), weight.data(), bias.data(), N, in, out);
    return safl::test::dot(y.data(), w.data(), y.size());
  };
  auto backward = [&] {
    std::fill(dweight.begin(), dweight.end(), 0.0f);
    std::fill(dbias.begin(), dbias.end(), 0.0f);
    safl::cpu::linear_backward(dx.data(), dweight.data(), dbias.data(), w.data(), x.data(),
                               weight.data(), N, in, out);
  };
  safl::test::gradcheck("linear", {{"x", x.data(), dx.data(), x.size()},
                                   {"weight", weight.data(), dweight.data(), weight.size()},
                                   {"bias", bias.data(), dbias.data(), bias.size()}},
                        loss, backward);
}

SAFL_TEST(linear_hand_cases) {
  // 1×1: 2·3 + 1.
  {
    const float x = 2, weight = 3, bias = 1;
    Guarded y(1);
    safl::cpu::linear_forward(y.data(), &x, &weight, &bias, 1, 1, 1);
    EXPECT(y[0] == 7.0f);
    EXPECT_GUARDS(y, "y");
  }
  // Two rows, in 2, out 3, W = [[1, 2], [3, 4], [5, 6]], b = [0.5, -1, 2].
  const float x[] = {1, -1, 2, 0.5f};
  const float weight[] = {1, 2, 3, 4, 5, 6};
  const float bias[] = {0.5f, -1, 2};
  Guarded y(6);
  safl::cpu::linear_forward(y.data(), x, weight, bias, 2, 2, 3);
  const float expected[] = {-0.5f, -2, 1, 3.5f, 7, 15};
  EXPECT_ALL_CLOSE(y.data(), expected, 6, 0.0, 0.0);
  EXPECT_GUARDS(y, "y");
  // Without bias.
  Guarded y_no_bias(6);
  safl::cpu::linear_forward(y_no_bias.data(), x, weight, nullptr, 2, 2, 3);
  const float expected_no_bias[] = {-1, -1, -1, 3, 8, 13};
  EXPECT_ALL_CLOSE(y_no_bias.data(), expected_no_bias, 6, 0.0, 0.0);
  // Backward with dout = [[1, 0, 1], [0, 2, 0]]: dx = dout·W, dW += doutᵀ·x, db += Σ dout,
  // starting from dW = db = 1 to see the accumulation.
  const float dout[] = {1, 0, 1, 0, 2, 0};
  Guarded dx(4), dweight(6, 1.0f), dbias(3, 1.0f);
  safl::cpu::linear_backward(dx.data(), dweight.data(), dbias.data(), dout, x, weight, 2, 2, 3);
  const float expected_dx[] = {6, 8, 6, 8};
  const float expected_dweight[] = {2, 0, 5, 2, 2, 0};
  const float expected_dbias[] = {2, 3, 2};
  EXPECT_ALL_CLOSE(dx.data(), expected_dx, 4, 0.0, 0.0);
  EXPECT_ALL_CLOSE(dweight.data(), expected_dweight, 6, 0.0, 0.0);
  EXPECT_ALL_CLOSE(dbias.data(), expected_dbias, 3, 0.0, 0.0);
  EXPECT_GUARDS(dx, "dx");
  EXPECT_GUARDS(dweight, "dweight");
  EXPECT_GUARDS(dbias, "dbias");
  // dx and dbias may be skipped; dW still accumulates.
  Guarded dweight_again(6, 0.0f);
  safl::cpu::linear_backward(nullptr, dweight_again.data(), nullptr, dout, x, weight, 2, 2, 3);
  const float expected_dweight_again[] = {1, -1, 4, 1, 1, -1};
  EXPECT_ALL_CLOSE(dweight_again.data(), expected_dweight_again, 6, 0.0, 0.0);
  EXPECT_GUARDS(dweight_again, "dweight_again");
}

SAFL_TEST(linear_odd_shapes_finite) {
  const int64_t N = 13, in = 33, out = 17;
  safl::test::Rng rng(12);
  std::vector<float> x(N * in), weight(out * in), bias(out), dout(N * out);
  rng.fill_normal(x.data(), x.size());
  rng.fill_normal(weight.data(), weight.size(), 0.2f);
  rng.fill_normal(bias.data(), bias.size());
  rng.fill_normal(dout.data(), dout.size());
  Guarded y(N * out), dx(N * in), dweight(out * in, 0.0f), dbias(out, 0.0f);
  safl::cpu::linear_forward(y.data(), x.data(), weight.data(), bias.data(), N, in, out);
  safl::cpu::linear_backward(dx.data(), dweight.data(), dbias.data(), dout.data(), x.data(),
                             weight.data(), N, in, out);
  // Against a plain double loop.
  std::vector<float> expected(N * out);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < out; ++o) {
      double acc = bias[o];
      for (int64_t i = 0; i < in; ++i) acc += double(x[n * in + i]) * weight[o * in + i];
      expected[n * out + o] = float(acc);
    }
  EXPECT_ALL_CLOSE(y.data(), expected.data(), expected.size(), 1e-5, 1e-5);
  EXPECT_FINITE(y.data(), y.size());
  EXPECT_FINITE(dx.data(), dx.size());
  EXPECT_FINITE(dweight.data(), dweight.size());
  EXPECT_FINITE(dbias.data(), dbias.size());
  EXPECT_GUARDS(y, "y");
  EXPECT_GUARDS(dx, "dx");
  EXPECT_GUARDS(dweight, "dweight");
  EXPECT_GUARDS(dbias, "dbias");
}

SAFL_TEST(linear_few_rows_path) {
  // Up to a dozen rows take dot products with the weight rows (Note [few rows] in linear.cpp):
  // against a plain double loop for every SIMD level, at several thread counts (the same bits),
  // and a row's output does not depend on the rows that come with it. in = 37 leaves a tail after
  // the SIMD lanes and out = 23 a remainder after the tiles of four outputs; in = 512 and
  // out = 300 split into tasks.
  safl::test::Rng rng(13);
  const safl::SimdLevel saved_level = safl::simd_level();
  for (const int64_t in : {int64_t(37), int64_t(512)}) {
    const int64_t out = in == 37 ? 23 : 300, max_rows = 12;
    std::vector<float> x(max_rows * in), weight(out * in), bias(out);
    rng.fill_normal(x.data(), x.size());
    rng.fill_normal(weight.data(), weight.size(), 0.2f);
    rng.fill_normal(bias.data(), bias.size());
    std::vector<float> expected(max_rows * out);
    for (int64_t n = 0; n < max_rows; ++n)
      for (int64_t o = 0; o < out; ++o) {
        double acc = bias[o];
        for (int64_t i = 0; i < in; ++i) acc += double(x[n * in + i]) * weight[o * in + i];
        expected[n * out + o] = float(acc);
      }
    for (const safl::SimdLevel level :
         {safl::SimdLevel::Generic, safl::SimdLevel::Avx2, safl::SimdLevel::Avx512}) {
      if (level > safl::simd_level_supported()) continue;
      safl::set_simd_level(level);
      std::vector<float> all_rows;  // the outputs of max_rows rows at this level
      for (const int threads : {1, 2, 3}) {
        safl::set_num_threads(threads);
        for (const int64_t N : {int64_t(1), int64_t(3), int64_t(5), max_rows}) {
          Guarded y(N * out), y_no_bias(N * out);
          safl::cpu::linear_forward(y.data(), x.data(), weight.data(), bias.data(), N, in, out);
          safl::cpu::linear_forward(y_no_bias.data(), x.data(), weight.data(), nullptr, N, in, out);
          EXPECT_ALL_CLOSE(y.data(), expected.data(), size_t(N * out), 1e-5, 1e-5);
          for (int64_t i = 0; i < N * out; ++i) EXPECT(y_no_bias[i] + bias[i % out] == y[i]);
          EXPECT_GUARDS(y, "y");
          EXPECT_GUARDS(y_no_bias, "y without bias");
          if (all_rows.empty() && N == max_rows) all_rows.assign(y.data(), y.data() + N * out);
          if (!all_rows.empty()) EXPECT_ALL_CLOSE(y.data(), all_rows.data(), size_t(N * out), 0.0, 0.0);
        }
      }
    }
  }
  safl::set_num_threads(safl::hardware_threads());
  safl::set_simd_level(saved_level);
}

SAFL_TEST(linear_forward_packed_matches_sgemm) {
  // From a packed weight the rows go through the packed product: bit for bit the bias rows plus
  // sgemm's x · weightᵀ, in float32 and, where the CPU has them, bfloat16 products, where a dozen
  // rows or fewer do too; in float32 those take linear_forward's dot products (Note [few rows] in
  // linear.cpp). Without a packed weight it is linear_forward.
  safl::test::Rng rng(17);
  const int64_t in = 70, out = 53, max_rows = 40;
  std::vector<float> x(max_rows * in), weight(out * in), bias(out);
  rng.fill_normal(x.data(), x.size());
  rng.fill_normal(weight.data(), weight.size(), 0.2f);
  rng.fill_normal(bias.data(), bias.size());
  std::vector<safl::MatmulPrecision> precisions = {safl::MatmulPrecision::Float32};
  if (safl::bfloat16_matmul_available()) precisions.push_back(safl::MatmulPrecision::BFloat16);
  for (const safl::MatmulPrecision precision : precisions) {
    const safl::MatmulPrecisionScope scope(precision);
    safl::cpu::PackedB packed;
    safl::cpu::pack_linear_weight(packed, weight.data(), in, out);
    for (const int64_t N : {int64_t(1), int64_t(5), int64_t(12), int64_t(13), max_rows}) {
      std::vector<float> expected(N * out);
      for (int64_t n = 0; n < N; ++n) std::copy(bias.begin(), bias.end(), expected.begin() + n * out);
      safl::cpu::sgemm(expected.data(), out, x.data(), in, false, weight.data(), in, true, N, out, in, 1.0f, 1.0f);
      Guarded y(N * out), y_unpacked(N * out), y_plain(N * out);
      safl::cpu::linear_forward_packed(y.data(), x.data(), weight.data(), &packed, bias.data(), N, in, out);
      safl::cpu::linear_forward_packed(y_unpacked.data(), x.data(), weight.data(), nullptr, bias.data(), N, in, out);
      safl::cpu::linear_forward(y_plain.data(), x.data(), weight.data(), bias.data(), N, in, out);
      const bool dot_products = N <= 12 && precision == safl::MatmulPrecision::Float32;
      EXPECT_ALL_CLOSE(y.data(), dot_products ? y_plain.data() : expected.data(), size_t(N * out), 0.0, 0.0);
      EXPECT_ALL_CLOSE(y_unpacked.data(), y_plain.data(), size_t(N * out), 0.0, 0.0);
      EXPECT_GUARDS(y, "y");
      EXPECT_GUARDS(y_unpacked, "y without a packed weight");
    }
  }
}

SAFL_TEST(linear_zero_sizes) {
  const float weight[] = {1, 2, 3, 4, 5, 6};
  const float bias[] = {1, 2, 3};
  // N = 0: nothing is written, parameter gradients keep their values.
  Guarded y(0), dweight(6, 0.5f), dbias(3, 0.5f);
  safl::cpu::linear_forward(y.data(), nullptr, weight, bias, 0, 2, 3);
  safl::cpu::linear_backward(nullptr, dweight.data(), dbias.data(), nullptr, nullptr, weight, 0, 2, 3);
  EXPECT(dweight[0] == 0.5f && dweight[5] == 0.5f && dbias[2] == 0.5f);
  EXPECT_GUARDS(y, "y");
  // in_features = 0: the output is the bias, dx is empty, db still accumulates.
  Guarded y_bias(6), dbias_only(3, 0.0f);
  safl::cpu::linear_forward(y_bias.data(), nullptr, nullptr, bias, 2, 0, 3);
  const float expected[] = {1, 2, 3, 1, 2, 3};
  EXPECT_ALL_CLOSE(y_bias.data(), expected, 6, 0.0, 0.0);
  const float dout[] = {1, 1, 1, 2, 2, 2};
  safl::cpu::linear_backward(nullptr, nullptr, dbias_only.data(), dout, nullptr, nullptr, 2, 0, 3);
  const float expected_dbias[] = {3, 3, 3};
  EXPECT_ALL_CLOSE(dbias_only.data(), expected_dbias, 3, 0.0, 0.0);
  EXPECT_GUARDS(y_bias, "y_bias");
  // out_features = 0: dx = 0.
  const float x[] = {1, 2};
  Guarded dx(2);
  safl::cpu::linear_backward(dx.data(), nullptr, nullptr, nullptr, x, nullptr, 1, 2, 0);
  EXPECT(dx[0] == 0.0f && dx[1] == 0.0f);
  EXPECT_GUARDS(dx, "dx");
}

SAFL_TEST(linear_argument_errors) {
  float buffer[4] = {};
  EXPECT_THROWS(safl::cpu::linear_forward(buffer, buffer, buffer, nullptr, -1, 1, 1), safl::Error,
                "linear_forward: expected N >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::linear_forward(buffer, buffer, buffer, nullptr, 1, -2, 1), safl::Error,
                "linear_forward: expected in_features >= 0 but received -2");
  EXPECT_THROWS(safl::cpu::linear_backward(buffer, buffer, nullptr, buffer, buffer, buffer, 1, 1, -3),
                safl::Error, "linear_backward: expected out_features >= 0 but received -3");
  try {
    safl::cpu::linear_forward(buffer, buffer, buffer, nullptr, -1, 1, 1);
  } catch (const safl::Error& e) {
    EXPECT(e.kind() == safl::ErrorKind::Range);
  }
}
