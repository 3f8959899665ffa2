// Softmax and log-softmax (ops/softmax.h): gradient check of log-softmax, equal logits, huge
// logits, softmax = exp(log-softmax) summing to 1, dx aliasing dout, zero rows and errors.
#include <cmath>
#include <vector>

#include "common/error.h"
#include "ops/softmax.h"
#include "tests/harness.h"

using safl::test::Guarded;

SAFL_TEST(log_softmax_gradcheck) {
  const int64_t N = 4, C = 9;
  safl::test::Rng rng(31);
  std::vector<float> x(N * C), w(N * C), y(N * C), dx(N * C);
  rng.fill_normal(x.data(), x.size(), 2.0f);
  rng.fill_uniform(w.data(), w.size());
  auto loss = [&] {
    safl::cpu::log_softmax_forward(y.data(), x.data(), N, C);
    return safl::test::dot(y.data(), w.data(), y.size());
  };
  auto backward = [&] {
    loss();
    safl::cpu::log_softmax_backward(dx.data(), w.data(), y.data(), N, C);
  };
  // Every output of a row carries the same rounding of log Σ exp, so the numeric difference needs
  // a step larger than the default to stay above that noise.
  safl::test::GradCheckOptions options;
  options.eps = 1e-2;
  safl::test::gradcheck("log_softmax", {{"x", x.data(), dx.data(), x.size()}}, loss, backward, options);
}

SAFL_TEST(softmax_hand_cases) {
  // Equal logits: log(1/C) everywhere, probabilities 1/C.
  const int64_t C = 7;
  std::vector<float> x(C, 3.25f);
  Guarded y(C), p(C);
  safl::cpu::log_softmax_forward(y.data(), x.data(), 1, C);
  safl::cpu::softmax_forward(p.data(), x.data(), 1, C);
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_NEAR(y[c], std::log(1.0 / C), 1e-6);
    EXPECT_NEAR(p[c], 1.0 / C, 1e-7);
  }
  EXPECT_GUARDS(y, "y");
  EXPECT_GUARDS(p, "p");
  // 1×1: log-softmax 0, probability 1, gradient 0.
  const float one = -42.0f, dout = 5.0f;
  Guarded y1(1), p1(1), dx1(1);
  safl::cpu::log_softmax_forward(y1.data(), &one, 1, 1);
  safl::cpu::softmax_forward(p1.data(), &one, 1, 1);
  safl::cpu::log_softmax_backward(dx1.data(), &dout, y1.data(), 1, 1);
  EXPECT(y1[0] == 0.0f && p1[0] == 1.0f && dx1[0] == 0.0f);
  // [0, ln 3]: probabilities 1/4, 3/4.
  const float two[] = {0.0f, std::log(3.0f)};
  Guarded p2(2);
  safl::cpu::softmax_forward(p2.data(), two, 1, 2);
  EXPECT_NEAR(p2[0], 0.25, 1e-7);
  EXPECT_NEAR(p2[1], 0.75, 1e-7);
}

SAFL_TEST(softmax_huge_logits_stay_finite) {
  const float x[] = {1e4f, -1e4f, 0.0f, 1e4f, -1e4f, -1e4f};
  Guarded y(6), p(6), dx(6);
  safl::cpu::log_softmax_forward(y.data(), x, 2, 3);
  safl::cpu::softmax_forward(p.data(), x, 2, 3);
  const float dout[] = {1, 2, 3, -1, 0.5f, 0.25f};
  safl::cpu::log_softmax_backward(dx.data(), dout, y.data(), 2, 3);
  EXPECT_FINITE(y.data(), 6);
  EXPECT_FINITE(p.data(), 6);
  EXPECT_FINITE(dx.data(), 6);
  EXPECT(y[0] == 0.0f && y[3] == 0.0f && p[0] == 1.0f && p[3] == 1.0f);
  EXPECT_NEAR(y[1], -2e4, 1e-2);
  EXPECT_NEAR(y[2], -1e4, 1e-2);
  EXPECT(p[1] == 0.0f);
  EXPECT_NEAR(dx[0], 1.0 - 6.0, 0.0);
}

SAFL_TEST(softmax_odd_rows_alias) {
  const int64_t N = 13, C = 97;
  safl::test::Rng rng(32);
  std::vector<float> x(N * C), dout(N * C);
  rng.fill_normal(x.data(), x.size(), 4.0f);
  rng.fill_normal(dout.data(), dout.size());
  Guarded y(N * C), p(N * C), dx(N * C);
  safl::cpu::log_softmax_forward(y.data(), x.data(), N, C);
  safl::cpu::softmax_forward(p.data(), x.data(), N, C);
  for (int64_t n = 0; n < N; ++n) {
    double total = 0;
    for (int64_t c = 0; c < C; ++c) {
      total += p[n * C + c];
      EXPECT_NEAR(p[n * C + c], std::exp(double(y[n * C + c])), 1e-6);
    }
    EXPECT_NEAR(total, 1.0, 1e-5);
  }
  safl::cpu::log_softmax_backward(dx.data(), dout.data(), y.data(), N, C);
  std::vector<float> in_place = dout;
  safl::cpu::log_softmax_backward(in_place.data(), in_place.data(), y.data(), N, C);
  EXPECT_ALL_CLOSE(in_place.data(), dx.data(), dx.size(), 0.0, 0.0);
  EXPECT_FINITE(dx.data(), dx.size());
  EXPECT_GUARDS(y, "y");
  EXPECT_GUARDS(p, "p");
  EXPECT_GUARDS(dx, "dx");
}

SAFL_TEST(softmax_zero_rows_and_errors) {
  Guarded y(0);
  safl::cpu::log_softmax_forward(y.data(), nullptr, 0, 5);
  safl::cpu::log_softmax_backward(y.data(), nullptr, nullptr, 0, 5);
  safl::cpu::softmax_forward(y.data(), nullptr, 0, 5);
  EXPECT_GUARDS(y, "y");
  float buffer[2] = {};
  EXPECT_THROWS(safl::cpu::log_softmax_forward(buffer, buffer, 1, 0), safl::Error,
                "log_softmax_forward: expected C >= 1 but received 0");
  EXPECT_THROWS(safl::cpu::log_softmax_backward(buffer, buffer, buffer, -1, 2), safl::Error,
                "log_softmax_backward: expected N >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::softmax_forward(buffer, buffer, 1, -1), safl::Error,
                "softmax_forward: expected C >= 1 but received -1");
}
