// Layer normalisation (ops/layernorm.h): gradient checks of x, gamma and beta, hand-computed
// rows, saved statistics, a constant row, dx aliasing dout, zero rows and argument errors.
#include <cmath>
#include <vector>

#include "common/error.h"
#include "ops/layernorm.h"
#include "tests/harness.h"

using safl::test::Guarded;

SAFL_TEST(layernorm_gradcheck) {
  const int64_t N = 4, D = 7;
  safl::test::Rng rng(21);
  std::vector<float> x(N * D), gamma(D), beta(D), w(N * D);
  rng.fill_normal(x.data(), x.size());
  rng.fill_uniform(gamma.data(), D, 0.5f, 1.5f);
  rng.fill_uniform(beta.data(), D);
  rng.fill_uniform(w.data(), w.size());
  std::vector<float> y(N * D), mean(N), rstd(N), dx(N * D), dgamma(D), dbeta(D);
  auto loss = [&] {
    safl::cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), gamma.data(),
                                 beta.data(), N, D);
    return safl::test::dot(y.data(), w.data(), y.size());
  };
  auto backward = [&] {
    loss();
    std::fill(dgamma.begin(), dgamma.end(), 0.0f);
    std::fill(dbeta.begin(), dbeta.end(), 0.0f);
    safl::cpu::layernorm_backward(dx.data(), dgamma.data(), dbeta.data(), w.data(), x.data(),
                                  mean.data(), rstd.data(), gamma.data(), N, D);
  };
  safl::test::gradcheck("layernorm", {{"x", x.data(), dx.data(), x.size()},
                                      {"gamma", gamma.data(), dgamma.data(), D},
                                      {"beta", beta.data(), dbeta.data(), D}},
                        loss, backward);
}

SAFL_TEST(layernorm_hand_cases) {
  // Row [1, 2, 3]: mean 2, variance 2/3. Row [4, 4, 4]: variance 0, rstd = 1/sqrt(eps), out = beta.
  const float x[] = {1, 2, 3, 4, 4, 4};
  const float gamma[] = {1, 2, 0.5f};
  const float beta[] = {0, 1, -1};
  const float eps = 1e-5f;
  Guarded y(6), mean(2), rstd(2);
  safl::cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x, gamma, beta, 2, 3, eps);
  const double r = 1.0 / std::sqrt(2.0 / 3.0 + double(eps));
  EXPECT_NEAR(mean[0], 2.0, 1e-7);
  EXPECT_NEAR(rstd[0], r, 1e-6);
  EXPECT_NEAR(y[0], -r, 1e-6);
  EXPECT_NEAR(y[1], 1.0, 1e-7);
  EXPECT_NEAR(y[2], 0.5 * r - 1.0, 1e-6);
  EXPECT_NEAR(mean[1], 4.0, 0.0);
  EXPECT_NEAR(rstd[1], 1.0 / std::sqrt(double(eps)), 1e-3);
  EXPECT(y[3] == 0.0f && y[4] == 1.0f && y[5] == -1.0f);
  EXPECT_GUARDS(y, "y");
  EXPECT_GUARDS(mean, "mean");
  EXPECT_GUARDS(rstd, "rstd");
  // 1×1: the normalised value is 0, so out = beta and dx = 0; dbeta accumulates dout.
  const float one = 5, g = 3, b = 0.25f, dout = 2;
  Guarded y1(1), m1(1), r1(1), dx1(1), dg1(1, 1.0f), db1(1, 1.0f);
  safl::cpu::layernorm_forward(y1.data(), m1.data(), r1.data(), &one, &g, &b, 1, 1);
  EXPECT(y1[0] == 0.25f);
  safl::cpu::layernorm_backward(dx1.data(), dg1.data(), db1.data(), &dout, &one, m1.data(), r1.data(),
                                &g, 1, 1);
  EXPECT(dx1[0] == 0.0f && dg1[0] == 1.0f && db1[0] == 3.0f);
  EXPECT_GUARDS(dx1, "dx1");
}

SAFL_TEST(layernorm_odd_rows_alias_and_accumulate) {
  const int64_t N = 25, D = 257;
  safl::test::Rng rng(22);
  std::vector<float> x(N * D), gamma(D), beta(D), dout(N * D);
  rng.fill_normal(x.data(), x.size(), 3.0f);
  for (int64_t i = 0; i < N * D; ++i) x[i] += 100.0f;  // a large mean: the two-pass variance copes
  rng.fill_uniform(gamma.data(), D, 0.5f, 1.5f);
  rng.fill_uniform(beta.data(), D);
  rng.fill_normal(dout.data(), dout.size());
  Guarded y(N * D), mean(N), rstd(N), dx(N * D), dgamma(D, 0.0f), dbeta(D, 0.0f);
  safl::cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), gamma.data(),
                               beta.data(), N, D);
  // Each normalised row has mean 0 and variance 1 (up to eps).
  for (int64_t n = 0; n < N; ++n) {
    double s = 0, s2 = 0;
    for (int64_t d = 0; d < D; ++d) {
      const double xhat = (double(y[n * D + d]) - beta[d]) / gamma[d];
      s += xhat;
      s2 += xhat * xhat;
    }
    EXPECT_NEAR(s / D, 0.0, 1e-5);
    EXPECT_NEAR(s2 / D, 1.0, 1e-3);
  }
  safl::cpu::layernorm_backward(dx.data(), dgamma.data(), dbeta.data(), dout.data(), x.data(),
                                mean.data(), rstd.data(), gamma.data(), N, D);
  EXPECT_FINITE(y.data(), y.size());
  EXPECT_FINITE(dx.data(), dx.size());
  EXPECT_GUARDS(y, "y");
  EXPECT_GUARDS(dx, "dx");
  EXPECT_GUARDS(dgamma, "dgamma");
  EXPECT_GUARDS(dbeta, "dbeta");
  // dx may be dout itself; the parameter gradients accumulate (twice the first result).
  std::vector<float> in_place = dout;
  safl::cpu::layernorm_backward(in_place.data(), dgamma.data(), dbeta.data(), in_place.data(),
                                x.data(), mean.data(), rstd.data(), gamma.data(), N, D);
  EXPECT_ALL_CLOSE(in_place.data(), dx.data(), in_place.size(), 0.0, 0.0);
  std::vector<float> once_gamma(D, 0.0f), once_beta(D, 0.0f), scratch(N * D);
  safl::cpu::layernorm_backward(scratch.data(), once_gamma.data(), once_beta.data(), dout.data(),
                                x.data(), mean.data(), rstd.data(), gamma.data(), N, D);
  for (int64_t d = 0; d < D; ++d) {
    once_gamma[d] *= 2.0f;
    once_beta[d] *= 2.0f;
  }
  EXPECT_ALL_CLOSE(dgamma.data(), once_gamma.data(), D, 1e-6, 1e-6);
  EXPECT_ALL_CLOSE(dbeta.data(), once_beta.data(), D, 1e-6, 1e-6);
}

SAFL_TEST(layernorm_zero_rows_and_errors) {
  const float gamma[] = {1, 1};
  Guarded y(0), mean(0), rstd(0), dgamma(2, 0.5f), dbeta(2, 0.5f);
  safl::cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), nullptr, gamma, gamma, 0, 2);
  safl::cpu::layernorm_backward(nullptr, dgamma.data(), dbeta.data(), nullptr, nullptr, nullptr,
                                nullptr, gamma, 0, 2);
  EXPECT(dgamma[0] == 0.5f && dbeta[1] == 0.5f);
  EXPECT_GUARDS(y, "y");
  EXPECT_GUARDS(dgamma, "dgamma");
  float buffer[4] = {};
  EXPECT_THROWS(safl::cpu::layernorm_forward(buffer, buffer, buffer, buffer, buffer, buffer, -1, 2),
                safl::Error, "layernorm_forward: expected N >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::layernorm_forward(buffer, buffer, buffer, buffer, buffer, buffer, 1, 0),
                safl::Error, "layernorm_forward: expected D >= 1 but received 0");
  EXPECT_THROWS(safl::cpu::layernorm_forward(buffer, buffer, buffer, buffer, buffer, buffer, 1, 2, 0.0f),
                safl::Error, "layernorm_forward: expected eps > 0 but received 0");
  EXPECT_THROWS(safl::cpu::layernorm_backward(buffer, buffer, buffer, buffer, buffer, buffer, buffer,
                                              buffer, 2, 0),
                safl::Error, "layernorm_backward: expected D >= 1 but received 0");
}
