// 2×2 max-pooling: a known answer with its argmax indices, odd sizes (floor), ties and NaN, the
// gradient check on distinct values, the backward scatter, thread counts, sizes too small for one
// window, zero-size shapes and argument errors.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"
#include "ops/pool.h"
#include "tests/harness.h"

namespace {

using safl::test::Guarded;
using safl::test::Rng;

// Distinct values 0.05 apart in random order, so a gradient-check step never changes a maximum.
std::vector<float> distinct_values(size_t n, Rng& rng) {
  std::vector<float> v(n);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.next() % i]);
  for (size_t i = 0; i < n; ++i) v[i] = 0.05f * float(order[i]) - 0.025f * float(n);
  return v;
}

SAFL_TEST(maxpool2x2_known_answer) {
  // One 5×5 plane: the last row and column are dropped.
  const float x[25] = {1,  9, 2,  3, 100,  //
                       4,  5, 8,  7, 100,  //
                       -1, -2, 6, 6, 100,  //
                       -4, -3, 6, 6, 100,  //
                       100, 100, 100, 100, 100};
  Guarded out(4);
  std::vector<int32_t> argmax(4, -7);
  safl::cpu::maxpool2x2_forward(out.data(), argmax.data(), x, 1, 1, 5, 5);
  const float expected[4] = {9, 8, -1, 6};
  EXPECT_ALL_CLOSE(out.data(), expected, 4, 0.0, 0.0);
  // Indices within the input plane; the tie of four 6s goes to the first in row-major order.
  EXPECT(argmax[0] == 1 && argmax[1] == 7 && argmax[2] == 10 && argmax[3] == 12);
  Guarded dx(25);
  const float dout[4] = {1, 2, 3, 4};
  safl::cpu::maxpool2x2_backward(dx.data(), argmax.data(), dout, 1, 1, 5, 5);
  for (int i = 0; i < 25; ++i) {
    const float want = i == 1 ? 1.0f : i == 7 ? 2.0f : i == 10 ? 3.0f : i == 12 ? 4.0f : 0.0f;
    EXPECT(dx[i] == want);
  }
  EXPECT_GUARDS(out, "out");
  EXPECT_GUARDS(dx, "dx");
}

SAFL_TEST(maxpool2x2_nan_propagates) {
  const float nan = std::nanf("");
  const float x[8] = {1, nan, 3, 4,  //
                      5, 6, 7, nan};
  Guarded out(2);
  int32_t argmax[2];
  safl::cpu::maxpool2x2_forward(out.data(), argmax, x, 1, 1, 2, 4);
  EXPECT(std::isnan(out[0]) && argmax[0] == 1);
  EXPECT(std::isnan(out[1]) && argmax[1] == 7);
  EXPECT_GUARDS(out, "out");
}

SAFL_TEST(maxpool2x2_gradcheck) {
  Rng rng(41);
  struct Shape {
    int64_t B, C, H, W;
  };
  for (const Shape s : {Shape{2, 3, 5, 7}, Shape{1, 2, 4, 4}, Shape{3, 1, 2, 3}}) {
    const int64_t Ho = s.H / 2, Wo = s.W / 2;
    const size_t in_n = size_t(s.B * s.C * s.H * s.W), out_n = size_t(s.B * s.C * Ho * Wo);
    std::vector<float> x = distinct_values(in_n, rng), proj(out_n);
    rng.fill_uniform(proj.data(), proj.size());
    std::vector<int32_t> argmax(out_n);
    Guarded out(out_n), dx(in_n);
    auto loss = [&] {
      safl::cpu::maxpool2x2_forward(out.data(), argmax.data(), x.data(), s.B, s.C, s.H, s.W);
      return safl::test::dot(out.data(), proj.data(), proj.size());
    };
    auto backward = [&] {
      safl::cpu::maxpool2x2_forward(out.data(), argmax.data(), x.data(), s.B, s.C, s.H, s.W);
      safl::cpu::maxpool2x2_backward(dx.data(), argmax.data(), proj.data(), s.B, s.C, s.H, s.W);
    };
    safl::test::gradcheck("maxpool2x2 (" + std::to_string(s.H) + "x" + std::to_string(s.W) + ")",
                          {{"x", x.data(), dx.data(), x.size()}}, loss, backward);
    EXPECT_GUARDS(out, "out");
    EXPECT_GUARDS(dx, "dx");
    EXPECT_FINITE(dx.data(), dx.size());
  }
}

SAFL_TEST(maxpool2x2_threads) {
  // The localisation network's first pool at batch 8: many planes, several tasks.
  const int64_t B = 8, C = 16, H = 32, W = 64, out_n = B * C * (H / 2) * (W / 2);
  Rng rng(42);
  std::vector<float> x(B * C * H * W), dout(out_n);
  rng.fill_uniform(x.data(), x.size());
  rng.fill_uniform(dout.data(), dout.size());
  std::vector<int32_t> idx1(out_n), idx3(out_n);
  Guarded out1(out_n), out3(out_n), dx1(x.size()), dx3(x.size());
  safl::set_num_threads(1);
  safl::cpu::maxpool2x2_forward(out1.data(), idx1.data(), x.data(), B, C, H, W);
  safl::cpu::maxpool2x2_backward(dx1.data(), idx1.data(), dout.data(), B, C, H, W);
  safl::set_num_threads(3);
  safl::cpu::maxpool2x2_forward(out3.data(), idx3.data(), x.data(), B, C, H, W);
  safl::cpu::maxpool2x2_backward(dx3.data(), idx3.data(), dout.data(), B, C, H, W);
  safl::set_num_threads(safl::hardware_threads());
  EXPECT_ALL_CLOSE(out3.data(), out1.data(), out1.size(), 0.0, 0.0);
  EXPECT_ALL_CLOSE(dx3.data(), dx1.data(), dx1.size(), 0.0, 0.0);
  EXPECT(idx1 == idx3);
  // Every output is the maximum of its window.
  bool is_max = true;
  for (int64_t p = 0; p < B * C; ++p)
    for (int64_t oh = 0; oh < H / 2; ++oh)
      for (int64_t ow = 0; ow < W / 2; ++ow) {
        const float* plane = x.data() + p * H * W;
        const float m = std::max({plane[2 * oh * W + 2 * ow], plane[2 * oh * W + 2 * ow + 1],
                                  plane[(2 * oh + 1) * W + 2 * ow], plane[(2 * oh + 1) * W + 2 * ow + 1]});
        is_max = is_max && out1[(p * (H / 2) + oh) * (W / 2) + ow] == m;
      }
  EXPECT(is_max);
  for (const Guarded* g : {&out1, &out3, &dx1, &dx3}) EXPECT_GUARDS(*g, "pool buffer");
}

SAFL_TEST(maxpool2x2_zero_sizes) {
  // H = 1 (or W = 1) leaves no whole window: empty output, and backward writes dx = 0.
  const float x[6] = {1, 2, 3, 4, 5, 6};
  Guarded empty(0), dx(6);
  int32_t no_index[1] = {0};
  safl::cpu::maxpool2x2_forward(empty.data(), no_index, x, 2, 1, 1, 3);
  safl::cpu::maxpool2x2_backward(dx.data(), no_index, empty.data(), 2, 1, 1, 3);
  const float zeros[6] = {};
  EXPECT_ALL_CLOSE(dx.data(), zeros, 6, 0.0, 0.0);
  safl::cpu::maxpool2x2_forward(empty.data(), no_index, x, 0, 3, 4, 4);
  safl::cpu::maxpool2x2_backward(empty.data(), no_index, empty.data(), 2, 0, 4, 4);
  EXPECT_GUARDS(empty, "empty");
  EXPECT_GUARDS(dx, "dx");
}

SAFL_TEST(maxpool2x2_argument_errors) {
  float buf[16] = {};
  int32_t idx[16] = {};
  EXPECT_THROWS(safl::cpu::maxpool2x2_forward(buf, idx, buf, -1, 1, 4, 4), safl::Error,
                "maxpool2x2_forward: expected B >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::maxpool2x2_forward(buf, idx, buf, 1, 1, 4, -4), safl::Error,
                "maxpool2x2_forward: expected W >= 0 but received -4");
  EXPECT_THROWS(safl::cpu::maxpool2x2_backward(buf, idx, buf, 1, -2, 4, 4), safl::Error,
                "maxpool2x2_backward: expected C >= 0 but received -2");
  EXPECT_THROWS(safl::cpu::maxpool2x2_forward(buf, idx, buf, 1, 1, 65536, 65536), safl::Error,
                "maxpool2x2_forward: expected H*W <= 2147483647 (int32 indices) but received 4294967296");
}

}  // namespace
