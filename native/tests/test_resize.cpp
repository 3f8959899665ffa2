// Bilinear resize (align_corners = true): identity at the same size, the 2×2 → 3×3 hand values,
// extents of 1, gradient checks, the model's 64×256 → 32×64 against an independent double
// computation, backward as the exact adjoint, thread counts, zero-size shapes and argument errors.
#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"
#include "ops/resize.h"
#include "tests/harness.h"

namespace {

using safl::test::Guarded;
using safl::test::Rng;

// The definition in double, written independently of align_corners_tap.
std::vector<float> resize_in_double(const std::vector<float>& x, int64_t planes, int64_t H, int64_t W,
                                    int64_t Ho, int64_t Wo) {
  std::vector<float> out(planes * Ho * Wo);
  for (int64_t p = 0; p < planes; ++p) {
    for (int64_t oh = 0; oh < Ho; ++oh) {
      const double sy = Ho > 1 ? double(oh) * double(H - 1) / double(Ho - 1) : 0.0;
      const int64_t y0 = std::min<int64_t>(int64_t(std::floor(sy)), H - 1), y1 = std::min(y0 + 1, H - 1);
      const double fy = sy - double(y0);
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const double sx = Wo > 1 ? double(ow) * double(W - 1) / double(Wo - 1) : 0.0;
        const int64_t x0 = std::min<int64_t>(int64_t(std::floor(sx)), W - 1), x1 = std::min(x0 + 1, W - 1);
        const double fx = sx - double(x0);
        const float* src = x.data() + p * H * W;
        const double top = (1 - fx) * src[y0 * W + x0] + fx * src[y0 * W + x1];
        const double bottom = (1 - fx) * src[y1 * W + x0] + fx * src[y1 * W + x1];
        out[(p * Ho + oh) * Wo + ow] = float((1 - fy) * top + fy * bottom);
      }
    }
  }
  return out;
}

SAFL_TEST(bilinear_resize_same_size_is_identity) {
  Rng rng(51);
  const int64_t B = 2, C = 3, H = 5, W = 9;
  std::vector<float> x(B * C * H * W);
  rng.fill_uniform(x.data(), x.size());
  Guarded out(x.size()), dx(x.size());
  safl::cpu::bilinear_resize_forward(out.data(), x.data(), B, C, H, W, H, W);
  EXPECT_ALL_CLOSE(out.data(), x.data(), x.size(), 0.0, 0.0);
  safl::cpu::bilinear_resize_backward(dx.data(), x.data(), B, C, H, W, H, W);
  EXPECT_ALL_CLOSE(dx.data(), x.data(), x.size(), 0.0, 0.0);
  EXPECT_GUARDS(out, "out");
  EXPECT_GUARDS(dx, "dx");
}

SAFL_TEST(bilinear_resize_hand_computed) {
  // [[1, 2], [3, 4]] → 3×3: corners kept, edges at midpoints, the centre the mean.
  const float x[4] = {1, 2, 3, 4};
  const float expected[9] = {1, 1.5f, 2, 2, 2.5f, 3, 3, 3.5f, 4};
  Guarded out(9);
  safl::cpu::bilinear_resize_forward(out.data(), x, 1, 1, 2, 2, 3, 3);
  EXPECT_ALL_CLOSE(out.data(), expected, 9, 0.0, 1e-7);
  // Backward of dout = 1: each corner receives 1 + 2·(1/2) + 1/4 = 2.25.
  const float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  Guarded dx(4);
  safl::cpu::bilinear_resize_backward(dx.data(), ones, 1, 1, 2, 2, 3, 3);
  const float corners[4] = {2.25f, 2.25f, 2.25f, 2.25f};
  EXPECT_ALL_CLOSE(dx.data(), corners, 4, 0.0, 1e-7);
  // An output extent of 1 samples source index 0 (scale 0, as PyTorch): 1×1 → x[0, 0]; 1×3 → row 0.
  Guarded one(1), row(3);
  safl::cpu::bilinear_resize_forward(one.data(), x, 1, 1, 2, 2, 1, 1);
  EXPECT(one[0] == 1.0f);
  safl::cpu::bilinear_resize_forward(row.data(), x, 1, 1, 2, 2, 1, 3);
  EXPECT(row[0] == 1.0f && row[1] == 1.5f && row[2] == 2.0f);
  // An input extent of 1 is repeated.
  Guarded column(4);
  const float single[2] = {5, 7};
  safl::cpu::bilinear_resize_forward(column.data(), single, 2, 1, 1, 1, 2, 1);
  EXPECT(column[0] == 5.0f && column[1] == 5.0f && column[2] == 7.0f && column[3] == 7.0f);
  for (const Guarded* g : {&out, &dx, &one, &row, &column}) EXPECT_GUARDS(*g, "resize buffer");
}

SAFL_TEST(bilinear_resize_gradcheck) {
  Rng rng(52);
  struct Case {
    int64_t B, C, H, W, Ho, Wo;
  };
  for (const Case c : {Case{2, 3, 5, 7, 3, 4}, Case{1, 2, 4, 4, 7, 9}, Case{1, 1, 6, 5, 1, 3},
                       Case{2, 1, 1, 4, 3, 2}, Case{1, 1, 8, 32, 4, 8}}) {
    const size_t in_n = size_t(c.B * c.C * c.H * c.W), out_n = size_t(c.B * c.C * c.Ho * c.Wo);
    std::vector<float> x(in_n), proj(out_n);
    rng.fill_uniform(x.data(), x.size());
    rng.fill_uniform(proj.data(), proj.size());
    Guarded out(out_n), dx(in_n);
    auto loss = [&] {
      safl::cpu::bilinear_resize_forward(out.data(), x.data(), c.B, c.C, c.H, c.W, c.Ho, c.Wo);
      return safl::test::dot(out.data(), proj.data(), proj.size());
    };
    auto backward = [&] {
      safl::cpu::bilinear_resize_backward(dx.data(), proj.data(), c.B, c.C, c.H, c.W, c.Ho, c.Wo);
    };
    // Resizing is linear in x: a large step costs no truncation error.
    safl::test::GradCheckOptions options;
    options.eps = 1e-2;
    safl::test::gradcheck("bilinear_resize " + std::to_string(c.H) + "x" + std::to_string(c.W) + "->" +
                              std::to_string(c.Ho) + "x" + std::to_string(c.Wo),
                          {{"x", x.data(), dx.data(), x.size()}}, loss, backward, options);
    EXPECT_GUARDS(out, "out");
    EXPECT_GUARDS(dx, "dx");
  }
}

SAFL_TEST(bilinear_resize_model_shape) {
  // 64×256 → 32×64 as the localisation network sees it, batch 2, RGB: the forward matches the
  // definition in double, backward is its exact adjoint (⟨resize x, y⟩ = ⟨x, resizeᵀ y⟩), and the
  // results do not depend on the thread count.
  const int64_t B = 2, C = 3, H = 64, W = 256, Ho = 32, Wo = 64;
  Rng rng(53);
  std::vector<float> x(B * C * H * W), y(B * C * Ho * Wo);
  rng.fill_uniform(x.data(), x.size());
  rng.fill_uniform(y.data(), y.size());
  Guarded out1(y.size()), out3(y.size()), dx1(x.size()), dx3(x.size());
  safl::set_num_threads(1);
  safl::cpu::bilinear_resize_forward(out1.data(), x.data(), B, C, H, W, Ho, Wo);
  safl::cpu::bilinear_resize_backward(dx1.data(), y.data(), B, C, H, W, Ho, Wo);
  safl::set_num_threads(3);
  safl::cpu::bilinear_resize_forward(out3.data(), x.data(), B, C, H, W, Ho, Wo);
  safl::cpu::bilinear_resize_backward(dx3.data(), y.data(), B, C, H, W, Ho, Wo);
  safl::set_num_threads(safl::hardware_threads());
  const std::vector<float> expected = resize_in_double(x, B * C, H, W, Ho, Wo);
  // The source coordinate is computed in float, as PyTorch does: up to about 256·2⁻²³ ≈ 3e-5
  // pixels off the exact one, which moves a value by at most that times the neighbours' difference.
  EXPECT_ALL_CLOSE(out1.data(), expected.data(), expected.size(), 0.0, 1e-4);
  EXPECT_ALL_CLOSE(out3.data(), out1.data(), out1.size(), 0.0, 0.0);
  EXPECT_ALL_CLOSE(dx3.data(), dx1.data(), dx1.size(), 0.0, 0.0);
  const double forward_side = safl::test::dot(out1.data(), y.data(), y.size());
  const double adjoint_side = safl::test::dot(x.data(), dx1.data(), x.size());
  EXPECT_NEAR(forward_side, adjoint_side, 1e-6 * (std::fabs(forward_side) + 1.0) + 1e-3);
  EXPECT_FINITE(out1.data(), out1.size());
  EXPECT_FINITE(dx1.data(), dx1.size());
  for (const Guarded* g : {&out1, &out3, &dx1, &dx3}) EXPECT_GUARDS(*g, "resize buffer");
}

SAFL_TEST(bilinear_resize_zero_sizes_and_argument_errors) {
  Guarded empty(0);
  const float x[4] = {1, 2, 3, 4};
  safl::cpu::bilinear_resize_forward(empty.data(), x, 0, 3, 2, 2, 4, 4);
  safl::cpu::bilinear_resize_backward(empty.data(), x, 2, 0, 2, 2, 4, 4);
  EXPECT_GUARDS(empty, "empty");
  float buf[16] = {};
  EXPECT_THROWS(safl::cpu::bilinear_resize_forward(buf, buf, 1, 1, 0, 2, 2, 2), safl::Error,
                "bilinear_resize_forward: expected H >= 1 but received 0");
  EXPECT_THROWS(safl::cpu::bilinear_resize_forward(buf, buf, 1, 1, 2, 2, 2, 0), safl::Error,
                "bilinear_resize_forward: expected Wo >= 1 but received 0");
  EXPECT_THROWS(safl::cpu::bilinear_resize_backward(buf, buf, -1, 1, 2, 2, 2, 2), safl::Error,
                "bilinear_resize_backward: expected B >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::bilinear_resize_backward(buf, buf, 1, 1, 2, 2, -5, 2), safl::Error,
                "bilinear_resize_backward: expected Ho >= 1 but received -5");
}

}  // namespace
