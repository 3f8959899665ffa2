// ReLU and dropout: gradient checks, hand-computed values (NaN and 0 included), in-place use, the
// dropout mask's values, rate and independence of the thread count, the mask against
// dropout_keep at every SIMD level, p = 0 as identity, zero-size shapes and argument errors.
#include <cmath>
#include <vector>

#include "common/cpu_features.h"
#include "common/error.h"
#include "common/threadpool.h"
#include "ops/activation.h"
#include "tests/harness.h"

namespace {

using safl::test::Guarded;
using safl::test::Rng;

SAFL_TEST(relu_gradcheck) {
  Rng rng(31);
  for (int64_t n : {1, 7, 300}) {
    std::vector<float> x(n), proj(n);
    for (auto& v : x) {  // away from the kink at 0
      v = rng.uniform(0.1f, 1.0f);
      if (rng.uniform() < 0.0f) v = -v;
    }
    rng.fill_uniform(proj.data(), proj.size());
    Guarded out(n), dx(n);
    auto loss = [&] {
      safl::cpu::relu_forward(out.data(), x.data(), n);
      return safl::test::dot(out.data(), proj.data(), proj.size());
    };
    auto backward = [&] {
      safl::cpu::relu_forward(out.data(), x.data(), n);
      safl::cpu::relu_backward(dx.data(), proj.data(), out.data(), n);
    };
    safl::test::gradcheck("relu n=" + std::to_string(n), {{"x", x.data(), dx.data(), x.size()}}, loss,
                          backward);
    EXPECT_GUARDS(out, "out");
    EXPECT_GUARDS(dx, "dx");
  }
}

SAFL_TEST(relu_hand_computed_and_in_place) {
  const float nan = std::nanf("");
  Guarded x(6);
  const float values[6] = {-2.0f, -0.5f, 0.0f, 0.5f, 3.0f, nan};
  for (int i = 0; i < 6; ++i) x[i] = values[i];
  Guarded out(6);
  safl::cpu::relu_forward(out.data(), x.data(), 6);
  EXPECT(out[0] == 0.0f && out[1] == 0.0f && out[2] == 0.0f && out[3] == 0.5f && out[4] == 3.0f);
  EXPECT(std::isnan(out[5]));  // NaN passes through
  // The gradient follows the saved output: zero at x <= 0 (and for NaN).
  Guarded dx(6);
  const float dout[6] = {1, 2, 3, 4, 5, 6};
  safl::cpu::relu_backward(dx.data(), dout, out.data(), 6);
  const float expected_dx[6] = {0, 0, 0, 4, 5, 0};
  EXPECT_ALL_CLOSE(dx.data(), expected_dx, 6, 0.0, 0.0);
  // In place: x becomes its ReLU, then dout becomes dx.
  safl::cpu::relu_forward(x.data(), x.data(), 6);
  EXPECT(x[3] == 0.5f && x[0] == 0.0f);
  Guarded grad(6);
  for (int i = 0; i < 6; ++i) grad[i] = dout[i];
  safl::cpu::relu_backward(grad.data(), grad.data(), x.data(), 6);
  EXPECT_ALL_CLOSE(grad.data(), expected_dx, 6, 0.0, 0.0);
  for (const Guarded* g : {&x, &out, &dx, &grad}) EXPECT_GUARDS(*g, "relu buffer");
}

SAFL_TEST(dropout_gradcheck) {
  Rng rng(32);
  const int64_t n = 257;
  std::vector<float> x(n), proj(n);
  rng.fill_uniform(x.data(), x.size());
  rng.fill_uniform(proj.data(), proj.size());
  Guarded out(n), mask(n), dx(n);
  auto loss = [&] {
    safl::cpu::dropout_forward(out.data(), mask.data(), x.data(), n, 0.3f, 1234);
    return safl::test::dot(out.data(), proj.data(), proj.size());
  };
  auto backward = [&] {
    safl::cpu::dropout_forward(out.data(), mask.data(), x.data(), n, 0.3f, 1234);
    safl::cpu::dropout_backward(dx.data(), mask.data(), proj.data(), n);
  };
  // With the seed fixed, dropout is linear in x: a large step costs no truncation error.
  safl::test::GradCheckOptions options;
  options.eps = 1e-2;
  safl::test::gradcheck("dropout p=0.3", {{"x", x.data(), dx.data(), x.size()}}, loss, backward, options);
  EXPECT_GUARDS(out, "out");
  EXPECT_GUARDS(mask, "mask");
  EXPECT_GUARDS(dx, "dx");
}

SAFL_TEST(dropout_mask_rate_seed_and_threads) {
  const int64_t n = 100003;  // several chunks of the pool, odd tail
  std::vector<float> x(n);
  Rng rng(33);
  rng.fill_uniform(x.data(), x.size());
  for (float p : {0.1f, 0.5f, 0.9f}) {
    const float scale = 1.0f / (1.0f - p);
    Guarded out1(n), mask1(n), out3(n), mask3(n);
    safl::set_num_threads(1);
    safl::cpu::dropout_forward(out1.data(), mask1.data(), x.data(), n, p, 42);
    safl::set_num_threads(3);
    safl::cpu::dropout_forward(out3.data(), mask3.data(), x.data(), n, p, 42);
    EXPECT_ALL_CLOSE(mask3.data(), mask1.data(), size_t(n), 0.0, 0.0);
    EXPECT_ALL_CLOSE(out3.data(), out1.data(), size_t(n), 0.0, 0.0);
    int64_t kept = 0;
    bool values_ok = true, product_ok = true;
    for (int64_t i = 0; i < n; ++i) {
      kept += mask1[i] != 0.0f;
      values_ok = values_ok && (mask1[i] == 0.0f || mask1[i] == scale);
      product_ok = product_ok && out1[i] == x[i] * mask1[i];
    }
    EXPECT(values_ok);
    EXPECT(product_ok);
    EXPECT_NEAR(double(kept) / double(n), 1.0 - p, 0.01);
    // Another seed draws another mask.
    Guarded out_other(n), mask_other(n);
    safl::cpu::dropout_forward(out_other.data(), mask_other.data(), x.data(), n, p, 43);
    int64_t differ = 0;
    for (int64_t i = 0; i < n; ++i) differ += mask_other[i] != mask1[i];
    EXPECT_NEAR(double(differ) / double(n), 2.0 * p * (1.0 - p), 0.01);
    for (const Guarded* g : {&out1, &mask1, &out3, &mask3, &out_other, &mask_other})
      EXPECT_GUARDS(*g, "dropout buffer");
  }
  safl::set_num_threads(safl::hardware_threads());
}

SAFL_TEST(dropout_mask_is_dropout_keep_at_every_simd_level) {
  // The vectorised mask loop (Note [vectorised dropout mask]) draws exactly dropout_keep.
  const int64_t n = 40009;
  std::vector<float> x(n);
  Rng rng(35);
  rng.fill_uniform(x.data(), x.size());
  const safl::SimdLevel saved_level = safl::simd_level();
  for (const safl::SimdLevel level : {safl::SimdLevel::Generic, safl::SimdLevel::Avx2, safl::SimdLevel::Avx512}) {
    if (level > safl::simd_level_supported()) continue;
    safl::set_simd_level(level);
    for (const float p : {0.1f, 0.5f}) {
      const float scale = 1.0f / (1.0f - p);
      Guarded out(n), mask(n);
      safl::cpu::dropout_forward(out.data(), mask.data(), x.data(), n, p, 77);
      bool same = true;
      for (int64_t i = 0; i < n; ++i) {
        const float expected = safl::dropout_keep(77, uint64_t(i), p) ? scale : 0.0f;
        same = same && mask[i] == expected && out[i] == x[i] * expected;
      }
      EXPECT(same);
      EXPECT_GUARDS(out, "out");
      EXPECT_GUARDS(mask, "mask");
    }
  }
  safl::set_simd_level(saved_level);
}

SAFL_TEST(dropout_p0_identity_and_in_place) {
  const int64_t n = 1000;
  std::vector<float> x(n);
  Rng rng(34);
  rng.fill_uniform(x.data(), x.size());
  Guarded out(n), mask(n);
  safl::cpu::dropout_forward(out.data(), mask.data(), x.data(), n, 0.0f, 7);
  EXPECT_ALL_CLOSE(out.data(), x.data(), size_t(n), 0.0, 0.0);
  std::vector<float> ones(n, 1.0f);
  EXPECT_ALL_CLOSE(mask.data(), ones.data(), size_t(n), 0.0, 0.0);
  // In place, forward and backward, give the out-of-place results.
  Guarded ref_out(n), ref_mask(n), ref_dx(n), buf(n), in_mask(n);
  safl::cpu::dropout_forward(ref_out.data(), ref_mask.data(), x.data(), n, 0.25f, 8);
  safl::cpu::dropout_backward(ref_dx.data(), ref_mask.data(), x.data(), n);
  for (int64_t i = 0; i < n; ++i) buf[i] = x[i];
  safl::cpu::dropout_forward(buf.data(), in_mask.data(), buf.data(), n, 0.25f, 8);
  EXPECT_ALL_CLOSE(buf.data(), ref_out.data(), size_t(n), 0.0, 0.0);
  for (int64_t i = 0; i < n; ++i) buf[i] = x[i];
  safl::cpu::dropout_backward(buf.data(), in_mask.data(), buf.data(), n);
  EXPECT_ALL_CLOSE(buf.data(), ref_dx.data(), size_t(n), 0.0, 0.0);
  EXPECT_FINITE(ref_dx.data(), size_t(n));
  for (const Guarded* g : {&out, &mask, &ref_out, &ref_mask, &ref_dx, &buf, &in_mask})
    EXPECT_GUARDS(*g, "dropout buffer");
}

SAFL_TEST(dropout_uniform_is_uniform) {
  // The counter-based draw: in [0, 1), mean 1/2, and a quarter below 1/4, for consecutive indices.
  double sum = 0.0;
  int64_t below_quarter = 0;
  bool in_range = true;
  const int64_t n = 200000;
  for (int64_t i = 0; i < n; ++i) {
    const float u = safl::dropout_uniform(99, uint64_t(i));
    in_range = in_range && u >= 0.0f && u < 1.0f;
    sum += u;
    below_quarter += u < 0.25f;
  }
  EXPECT(in_range);
  EXPECT_NEAR(sum / double(n), 0.5, 0.005);
  EXPECT_NEAR(double(below_quarter) / double(n), 0.25, 0.005);
}

SAFL_TEST(activation_zero_sizes_and_argument_errors) {
  Guarded empty(0);
  safl::cpu::relu_forward(empty.data(), empty.data(), 0);
  safl::cpu::relu_backward(empty.data(), empty.data(), empty.data(), 0);
  safl::cpu::dropout_forward(empty.data(), empty.data(), empty.data(), 0, 0.5f, 1);
  safl::cpu::dropout_backward(empty.data(), empty.data(), empty.data(), 0);
  EXPECT_GUARDS(empty, "empty");
  float buf[4] = {};
  EXPECT_THROWS(safl::cpu::relu_forward(buf, buf, -1), safl::Error,
                "relu_forward: expected n >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::relu_backward(buf, buf, buf, -2), safl::Error,
                "relu_backward: expected n >= 0 but received -2");
  EXPECT_THROWS(safl::cpu::dropout_forward(buf, buf, buf, 4, 1.0f, 1), safl::Error,
                "dropout_forward: expected 0 <= p < 1 but received 1");
  EXPECT_THROWS(safl::cpu::dropout_forward(buf, buf, buf, 4, -0.25f, 1), safl::Error,
                "dropout_forward: expected 0 <= p < 1 but received -0.25");
  EXPECT_THROWS(safl::cpu::dropout_forward(buf, buf, buf, 4, std::nanf(""), 1), safl::Error,
                "dropout_forward: expected 0 <= p < 1 but received nan");
  EXPECT_THROWS(safl::cpu::dropout_backward(buf, buf, buf, -1), safl::Error,
                "dropout_backward: expected n >= 0 but received -1");
}

}  // namespace
