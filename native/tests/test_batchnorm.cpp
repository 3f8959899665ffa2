// Batch norm: gradient checks in training mode (x, gamma, beta through the batch statistics), the
// normalised output's moments, running statistics after a step, inference with running
// statistics, folding into a conv, in-place backward, thread-count independence, zero-size
// shapes and argument errors.
#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"
#include "ops/batchnorm.h"
#include "ops/conv.h"
#include "tests/harness.h"

namespace {

using safl::kBatchNormEps;
using safl::kBatchNormMomentum;
using safl::test::Guarded;
using safl::test::Rng;

struct BnShape {
  int64_t B, C, H, W;
  size_t size() const { return size_t(B * C * H * W); }
};

SAFL_TEST(batchnorm_gradcheck) {
  Rng rng(21);
  // 2-D with odd sizes, BatchNorm1d (H = W = 1), a single image, and n = 2 (the fewest allowed).
  for (const BnShape s : {BnShape{3, 2, 3, 4}, BnShape{5, 3, 1, 1}, BnShape{1, 2, 3, 5}, BnShape{2, 2, 1, 1}}) {
    std::vector<float> x(s.size()), gamma(s.C), beta(s.C), proj(s.size());
    rng.fill_normal(x.data(), x.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] += float((i / (s.H * s.W)) % s.C);  // different means
    rng.fill_uniform(gamma.data(), gamma.size(), 0.5f, 1.5f);
    rng.fill_uniform(beta.data(), beta.size());
    rng.fill_uniform(proj.data(), proj.size());
    Guarded out(s.size()), mean(s.C), inv_std(s.C), running_mean(s.C, 0.0f), running_var(s.C, 1.0f),
        dx(s.size()), dgamma(s.C), dbeta(s.C);
    auto forward = [&] {
      safl::cpu::batchnorm_forward_train(out.data(), mean.data(), inv_std.data(), running_mean.data(),
                                         running_var.data(), x.data(), gamma.data(), beta.data(), s.B,
                                         s.C, s.H, s.W, kBatchNormEps, kBatchNormMomentum);
    };
    auto loss = [&] {
      forward();
      return safl::test::dot(out.data(), proj.data(), proj.size());
    };
    auto backward = [&] {
      forward();
      dgamma.fill(0.0f);
      dbeta.fill(0.0f);
      safl::cpu::batchnorm_backward(dx.data(), dgamma.data(), dbeta.data(), mean.data(), inv_std.data(),
                                    proj.data(), x.data(), gamma.data(), s.B, s.C, s.H, s.W);
    };
    const std::string name = "batchnorm_train (" + std::to_string(s.B) + "," + std::to_string(s.C) +
                             "," + std::to_string(s.H) + "," + std::to_string(s.W) + ")";
    // x has unit spread: a step of 1e-2 keeps the truncation error near 1e-4 and shrinks the float
    // rounding that every output of the channel adds (each x moves the batch statistics).
    safl::test::GradCheckOptions options;
    options.eps = 1e-2;
    safl::test::gradcheck(name,
                          {{"x", x.data(), dx.data(), x.size()},
                           {"gamma", gamma.data(), dgamma.data(), gamma.size()},
                           {"beta", beta.data(), dbeta.data(), beta.size()}},
                          loss, backward, options);
    for (const Guarded* g : {&out, &mean, &inv_std, &running_mean, &running_var, &dx, &dgamma, &dbeta})
      EXPECT_GUARDS(*g, "batchnorm buffer");
    EXPECT_FINITE(out.data(), out.size());
    EXPECT_FINITE(dx.data(), dx.size());
  }
}

SAFL_TEST(batchnorm_output_moments) {
  // Per channel, the output has mean beta and (biased) standard deviation gamma, up to eps.
  const BnShape s{4, 3, 5, 7};
  const int64_t n = s.B * s.H * s.W, HW = s.H * s.W;
  Rng rng(22);
  std::vector<float> x(s.size());
  rng.fill_normal(x.data(), x.size(), 3.0f);
  for (size_t i = 0; i < x.size(); ++i) x[i] += 10.0f * float((i / HW) % s.C);
  const float gamma[3] = {1.0f, 2.0f, 0.5f}, beta[3] = {0.0f, 3.0f, -1.0f};
  Guarded out(s.size()), mean(s.C), inv_std(s.C), rm(s.C, 0.0f), rv(s.C, 1.0f);
  safl::cpu::batchnorm_forward_train(out.data(), mean.data(), inv_std.data(), rm.data(), rv.data(),
                                     x.data(), gamma, beta, s.B, s.C, s.H, s.W, kBatchNormEps,
                                     kBatchNormMomentum);
  for (int64_t c = 0; c < s.C; ++c) {
    double sum = 0.0, squares = 0.0;
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t i = 0; i < HW; ++i) sum += out[(b * s.C + c) * HW + i];
    const double m = sum / double(n);
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t i = 0; i < HW; ++i) squares += std::pow(out[(b * s.C + c) * HW + i] - m, 2);
    EXPECT_NEAR(m, beta[c], 1e-5);
    EXPECT_NEAR(std::sqrt(squares / double(n)), gamma[c], 1e-5);
  }
  EXPECT_GUARDS(out, "out");
  EXPECT_GUARDS(rm, "running_mean");
  EXPECT_GUARDS(rv, "running_var");
}

SAFL_TEST(batchnorm_hand_computed_and_running_stats) {
  // Channel 0 holds 1, 2, 3, 4 (mean 2.5, biased var 1.25, unbiased var 5/3); channel 1 holds
  // −2, 0, 2, 8 (mean 2, biased var 14, unbiased var 56/3). Layout (B=2, C=2, H=1, W=2).
  const float x[8] = {1, 2, -2, 0, 3, 4, 2, 8};
  const float gamma[2] = {1, 1}, beta[2] = {0, 0};
  Guarded out(8), mean(2), inv_std(2), rm(2), rv(2);
  rm[0] = 1.0f;
  rm[1] = -1.0f;
  rv[0] = 1.0f;
  rv[1] = 2.0f;
  safl::cpu::batchnorm_forward_train(out.data(), mean.data(), inv_std.data(), rm.data(), rv.data(), x,
                                     gamma, beta, 2, 2, 1, 2, kBatchNormEps, kBatchNormMomentum);
  EXPECT_NEAR(mean[0], 2.5, 1e-6);
  EXPECT_NEAR(mean[1], 2.0, 1e-6);
  EXPECT_NEAR(inv_std[0], 1.0 / std::sqrt(1.25 + 1e-5), 1e-6);
  EXPECT_NEAR(inv_std[1], 1.0 / std::sqrt(14.0 + 1e-5), 1e-6);
  EXPECT_NEAR(rm[0], 0.9 * 1.0 + 0.1 * 2.5, 1e-6);
  EXPECT_NEAR(rm[1], 0.9 * -1.0 + 0.1 * 2.0, 1e-6);
  EXPECT_NEAR(rv[0], 0.9 * 1.0 + 0.1 * (5.0 / 3.0), 1e-6);
  EXPECT_NEAR(rv[1], 0.9 * 2.0 + 0.1 * (56.0 / 3.0), 1e-5);
  EXPECT_NEAR(out[0], (1 - 2.5) / std::sqrt(1.25 + 1e-5), 1e-6);
  EXPECT_NEAR(out[7], (8 - 2.0) / std::sqrt(14.0 + 1e-5), 1e-6);

  // Backward of dout = 1 (with gamma = 1): dbeta gains n = 4, dgamma gains Σ x̂ = 0, and dx = 0
  // since a constant shift of the output is undone by the normalisation.
  const float ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  Guarded dx(8), dgamma(2, 1.0f), dbeta(2, 1.0f);
  safl::cpu::batchnorm_backward(dx.data(), dgamma.data(), dbeta.data(), mean.data(), inv_std.data(),
                                ones, x, gamma, 2, 2, 1, 2);
  EXPECT_NEAR(dbeta[0], 5.0, 1e-6);
  EXPECT_NEAR(dbeta[1], 5.0, 1e-6);
  EXPECT_NEAR(dgamma[0], 1.0, 1e-6);
  EXPECT_NEAR(dgamma[1], 1.0, 1e-6);
  const float zeros[8] = {};
  EXPECT_ALL_CLOSE(dx.data(), zeros, 8, 0.0, 1e-6);

  // Inference uses the running statistics: (x − rm)/sqrt(rv + eps)·gamma + beta.
  const float g2[2] = {2.0f, -1.0f}, b2[2] = {0.5f, 1.0f}, rm2[2] = {1.0f, -3.0f}, rv2[2] = {4.0f, 0.25f};
  Guarded inf(8);
  safl::cpu::batchnorm_forward_inference(inf.data(), x, g2, b2, rm2, rv2, 2, 2, 1, 2, kBatchNormEps);
  for (int64_t i = 0; i < 8; ++i) {
    const int64_t c = (i / 2) % 2;
    EXPECT_NEAR(inf[i], (x[i] - rm2[c]) / std::sqrt(rv2[c] + 1e-5) * g2[c] + b2[c], 1e-5);
  }
  for (const Guarded* g : {&out, &mean, &inv_std, &rm, &rv, &dx, &dgamma, &dbeta, &inf})
    EXPECT_GUARDS(*g, "batchnorm buffer");
}

SAFL_TEST(batchnorm_fold_matches_conv_then_bn) {
  Rng rng(23);
  const int64_t B = 2, Ci = 3, H = 5, W = 6, Co = 4;
  for (bool with_bias : {true, false}) {
    std::vector<float> x(B * Ci * H * W), w(Co * Ci * 9), bias(Co), gamma(Co), beta(Co), rm(Co), rv(Co);
    rng.fill_uniform(x.data(), x.size());
    rng.fill_uniform(w.data(), w.size());
    rng.fill_uniform(bias.data(), bias.size());
    rng.fill_uniform(gamma.data(), gamma.size(), 0.5f, 2.0f);
    rng.fill_uniform(beta.data(), beta.size());
    rng.fill_uniform(rm.data(), rm.size());
    rng.fill_uniform(rv.data(), rv.size(), 0.2f, 3.0f);
    const float* b = with_bias ? bias.data() : nullptr;
    const size_t out_n = size_t(B * Co * H * W);
    std::vector<float> ws(size_t(safl::cpu::conv2d_workspace_floats(B, Ci, H, W, Co, 3, 3, 1, 1, 1, 1)));
    std::vector<float> conv_out(out_n), expected(out_n);
    safl::cpu::conv2d_forward(conv_out.data(), ws.data(), x.data(), w.data(), b, B, Ci, H, W, Co, 3, 3,
                              1, 1, 1, 1);
    safl::cpu::batchnorm_forward_inference(expected.data(), conv_out.data(), gamma.data(), beta.data(),
                                           rm.data(), rv.data(), B, Co, H, W, kBatchNormEps);
    Guarded folded_w(w.size()), folded_b(Co), folded_out(out_n);
    safl::cpu::batchnorm_fold(folded_w.data(), folded_b.data(), w.data(), b, gamma.data(), beta.data(),
                              rm.data(), rv.data(), Co, Ci * 9, kBatchNormEps);
    safl::cpu::conv2d_forward(folded_out.data(), ws.data(), x.data(), folded_w.data(), folded_b.data(),
                              B, Ci, H, W, Co, 3, 3, 1, 1, 1, 1);
    EXPECT_ALL_CLOSE(folded_out.data(), expected.data(), out_n, 1e-4, 1e-5);
    // In place: the folded tensors overwrite the originals.
    if (with_bias) {
      safl::cpu::batchnorm_fold(w.data(), bias.data(), w.data(), bias.data(), gamma.data(), beta.data(),
                                rm.data(), rv.data(), Co, Ci * 9, kBatchNormEps);
      EXPECT_ALL_CLOSE(w.data(), folded_w.data(), w.size(), 0.0, 0.0);
      EXPECT_ALL_CLOSE(bias.data(), folded_b.data(), size_t(Co), 0.0, 0.0);
    }
    EXPECT_GUARDS(folded_w, "folded weight");
    EXPECT_GUARDS(folded_b, "folded bias");
    EXPECT_GUARDS(folded_out, "folded out");
  }
}

SAFL_TEST(batchnorm_backward_in_place_and_threads) {
  // Enough channels × values for several tasks; results must not depend on the thread count, and
  // dx may overwrite dout.
  const BnShape s{4, 64, 16, 16};
  Rng rng(24);
  std::vector<float> x(s.size()), dout(s.size()), gamma(s.C), beta(s.C);
  rng.fill_normal(x.data(), x.size());
  rng.fill_normal(dout.data(), dout.size());
  rng.fill_uniform(gamma.data(), gamma.size());
  rng.fill_uniform(beta.data(), beta.size());
  auto run = [&](int threads, bool in_place, std::vector<float>* out, std::vector<float>* dx,
                 std::vector<float>* dgamma) {
    safl::set_num_threads(threads);
    std::vector<float> mean(s.C), inv_std(s.C), rm(s.C, 0.0f), rv(s.C, 1.0f), dbeta(s.C, 0.0f);
    out->assign(s.size(), 0.0f);
    dgamma->assign(s.C, 0.0f);
    safl::cpu::batchnorm_forward_train(out->data(), mean.data(), inv_std.data(), rm.data(), rv.data(),
                                       x.data(), gamma.data(), beta.data(), s.B, s.C, s.H, s.W,
                                       kBatchNormEps, kBatchNormMomentum);
    *dx = dout;
    const float* grad_in = in_place ? dx->data() : dout.data();
    safl::cpu::batchnorm_backward(dx->data(), dgamma->data(), dbeta.data(), mean.data(), inv_std.data(),
                                  grad_in, x.data(), gamma.data(), s.B, s.C, s.H, s.W);
  };
  std::vector<float> out1, dx1, dg1, out3, dx3, dg3, out_ip, dx_ip, dg_ip;
  run(1, false, &out1, &dx1, &dg1);
  run(3, false, &out3, &dx3, &dg3);
  run(2, true, &out_ip, &dx_ip, &dg_ip);
  safl::set_num_threads(safl::hardware_threads());
  EXPECT_ALL_CLOSE(out3.data(), out1.data(), out1.size(), 0.0, 0.0);
  EXPECT_ALL_CLOSE(dx3.data(), dx1.data(), dx1.size(), 0.0, 0.0);
  EXPECT_ALL_CLOSE(dg3.data(), dg1.data(), dg1.size(), 0.0, 0.0);
  EXPECT_ALL_CLOSE(dx_ip.data(), dx1.data(), dx1.size(), 0.0, 0.0);
  EXPECT_FINITE(dx1.data(), dx1.size());
}

SAFL_TEST(batchnorm_zero_sizes) {
  const float x[4] = {1, 2, 3, 4}, g[2] = {1, 1}, b[2] = {0, 0};
  Guarded empty(0), mean(2), inv_std(2), rm(2, 0.25f), rv(2, 2.0f), dgamma(2, 1.0f), dbeta(2, 1.0f);
  // B = 0: nothing normalised, running statistics unchanged.
  safl::cpu::batchnorm_forward_train(empty.data(), mean.data(), inv_std.data(), rm.data(), rv.data(), x,
                                     g, b, 0, 2, 3, 3, kBatchNormEps, kBatchNormMomentum);
  EXPECT(rm[0] == 0.25f && rm[1] == 0.25f && rv[0] == 2.0f && rv[1] == 2.0f);
  safl::cpu::batchnorm_forward_inference(empty.data(), x, g, b, rm.data(), rv.data(), 0, 2, 3, 3,
                                         kBatchNormEps);
  safl::cpu::batchnorm_backward(empty.data(), dgamma.data(), dbeta.data(), mean.data(), inv_std.data(),
                                x, x, g, 0, 2, 3, 3);
  EXPECT(dgamma[0] == 1.0f && dbeta[1] == 1.0f);
  // C = 0 and H = 0.
  safl::cpu::batchnorm_forward_train(empty.data(), empty.data(), empty.data(), empty.data(),
                                     empty.data(), x, g, b, 4, 0, 3, 3, kBatchNormEps,
                                     kBatchNormMomentum);
  safl::cpu::batchnorm_forward_train(empty.data(), mean.data(), inv_std.data(), rm.data(), rv.data(), x,
                                     g, b, 4, 2, 0, 3, kBatchNormEps, kBatchNormMomentum);
  safl::cpu::batchnorm_backward(empty.data(), empty.data(), empty.data(), empty.data(), empty.data(), x,
                                x, g, 4, 0, 3, 3);
  for (const Guarded* buf : {&empty, &mean, &inv_std, &rm, &rv, &dgamma, &dbeta})
    EXPECT_GUARDS(*buf, "batchnorm buffer");
}

SAFL_TEST(batchnorm_argument_errors) {
  float buf[16] = {};
  using safl::cpu::batchnorm_forward_train;
  EXPECT_THROWS(batchnorm_forward_train(buf, buf, buf, buf, buf, buf, buf, buf, 1, 2, 1, 1,
                                        kBatchNormEps, kBatchNormMomentum),
                safl::Error,
                "batchnorm_forward_train: expected more than 1 value per channel (B*H*W) but received 1");
  EXPECT_THROWS(batchnorm_forward_train(buf, buf, buf, buf, buf, buf, buf, buf, 2, 2, 1, 1, 0.0f,
                                        kBatchNormMomentum),
                safl::Error, "batchnorm_forward_train: expected eps > 0 but received 0");
  EXPECT_THROWS(batchnorm_forward_train(buf, buf, buf, buf, buf, buf, buf, buf, 2, 2, 1, 1,
                                        kBatchNormEps, 1.5f),
                safl::Error, "batchnorm_forward_train: expected 0 <= momentum <= 1 but received 1.5");
  EXPECT_THROWS(batchnorm_forward_train(buf, buf, buf, buf, buf, buf, buf, buf, 2, -1, 1, 1,
                                        kBatchNormEps, kBatchNormMomentum),
                safl::Error, "batchnorm_forward_train: expected C >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::batchnorm_forward_inference(buf, buf, buf, buf, buf, buf, 2, 2, -3, 1,
                                                       kBatchNormEps),
                safl::Error, "batchnorm_forward_inference: expected H >= 0 but received -3");
  EXPECT_THROWS(safl::cpu::batchnorm_backward(buf, buf, buf, buf, buf, buf, buf, buf, -1, 2, 1, 1),
                safl::Error, "batchnorm_backward: expected B >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::batchnorm_fold(buf, buf, buf, nullptr, buf, buf, buf, buf, 2, 4, -1.0f),
                safl::Error, "batchnorm_fold: expected eps > 0 but received -1");
}

}  // namespace
