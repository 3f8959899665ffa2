// Focal loss fused with the log-softmax gradient (ops/focal_loss.h, ops/focal_math.h): gradient
// checks of the mean loss for γ = 0, 0.5, 2 with pad rows; γ = 0 against a plain cross-entropy
// bit for bit; a double-precision reference of the formula; hand cases (1×1, equal logits,
// all pad, p_t -> 1 with γ < 1, ±1e4 logits); optional outputs; zero rows; argument errors; and
// CUDA parity when a GPU is present.
#include <cmath>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "ops/focal_loss.h"
#include "ops/focal_math.h"
#include "tests/harness.h"

#ifdef SAFL_WITH_CUDA
#include "cuda/cuda_check.h"
#endif

using safl::test::Guarded;

namespace {

// A plain cross-entropy with the log-softmax arithmetic of the fused op (Note [log-sum-exp near
// p_t = 1] in ops/focal_loss.h): the mean of -log p_t over non-pad rows, and
// grad_scale / count · (p - onehot) as its gradient, p_t - 1 taken as expm1(log p_t).
float plain_cross_entropy(std::vector<float>& token_loss, std::vector<float>& dlogits,
                          const std::vector<float>& logits, const std::vector<int32_t>& targets,
                          int64_t C, int32_t pad, float grad_scale) {
  const int64_t N = int64_t(targets.size());
  int64_t count = 0;
  for (int32_t t : targets) count += t != pad;
  const float scale = grad_scale / float(count);
  token_loss.assign(N, 0.0f);
  dlogits.assign(N * C, 0.0f);
  double total = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    const int32_t t = targets[n];
    if (t == pad) continue;
    const float* z = &logits[n * C];
    float max = z[0];
    for (int64_t c = 1; c < C; ++c) max = z[c] > max ? z[c] : max;
    int64_t ties = 0;
    float rest = 0.0f;
    for (int64_t c = 0; c < C; ++c) {
      if (z[c] == max) ++ties;
      else rest += std::exp(z[c] - max);
    }
    const float log_sum = std::log1p(float(ties - 1) + rest);
    const float log_p = (z[t] - max) - log_sum;
    token_loss[n] = -log_p;
    total += token_loss[n];
    for (int64_t c = 0; c < C; ++c)
      dlogits[n * C + c] = scale * (c == t ? std::expm1(log_p) : std::exp((z[c] - max) - log_sum));
  }
  return float(total / double(count));
}

// The focal loss of one row and its gradient, in double, straight from the formula.
double reference_focal_row(double* grad, const float* z, int64_t C, int32_t t, double gamma,
                           double alpha) {
  double max = z[0];
  for (int64_t c = 1; c < C; ++c) max = std::fmax(max, double(z[c]));
  double sum = 0.0;
  for (int64_t c = 0; c < C; ++c) sum += std::exp(z[c] - max);
  const double log_p = z[t] - max - std::log(sum);
  const double p_t = std::exp(log_p), q = 1.0 - p_t;
  const double factor =
      alpha * ((gamma > 0 ? gamma * std::pow(q, gamma - 1.0) * p_t * log_p : 0.0) - std::pow(q, gamma));
  for (int64_t c = 0; c < C; ++c) {
    const double p = std::exp(z[c] - max - std::log(sum));
    grad[c] = factor * ((c == t ? 1.0 : 0.0) - p);
  }
  return -alpha * std::pow(q, gamma) * log_p;
}

struct Batch {
  int64_t N, C;
  int32_t pad;
  std::vector<float> logits;
  std::vector<int32_t> targets;
};

// N rows of C classes, every pad_every-th row padded (pad_every 0: none).
Batch random_batch(uint64_t seed, int64_t N, int64_t C, int32_t pad, int pad_every, float scale) {
  safl::test::Rng rng(seed);
  Batch b{N, C, pad, std::vector<float>(N * C), std::vector<int32_t>(N)};
  rng.fill_normal(b.logits.data(), b.logits.size(), scale);
  for (int64_t n = 0; n < N; ++n) {
    int32_t t = int32_t(rng.next() % C);
    while (t == pad) t = int32_t(rng.next() % C);
    b.targets[n] = pad_every > 0 && n % pad_every == pad_every - 1 ? pad : t;
  }
  return b;
}

bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

}  // namespace

SAFL_TEST(focal_loss_gradcheck) {
  for (float gamma : {0.0f, 0.5f, 2.0f}) {
    Batch b = random_batch(51, 7, 6, /*pad=*/5, /*pad_every=*/3, 1.5f);
    std::vector<float> dlogits(b.N * b.C);
    float loss = 0.0f;
    auto forward = [&] {
      safl::cpu::focal_loss(&loss, nullptr, nullptr, b.logits.data(), b.targets.data(), b.N, b.C,
                            b.pad, gamma, 0.75f);
      return double(loss);
    };
    auto backward = [&] {
      safl::cpu::focal_loss(&loss, nullptr, dlogits.data(), b.logits.data(), b.targets.data(), b.N,
                            b.C, b.pad, gamma, 0.75f);
    };
    // The loss is a float scalar: a step of 1e-2 keeps its rounding below the tolerance.
    safl::test::GradCheckOptions options;
    options.eps = 1e-2;
    const std::string name = "focal_loss(gamma=" + std::to_string(gamma).substr(0, 3) + ")";
    safl::test::gradcheck(name, {{"logits", b.logits.data(), dlogits.data(), dlogits.size()}},
                          forward, backward, options);
  }
}

SAFL_TEST(focal_loss_gamma0_is_cross_entropy_bitwise) {
  // Note [gamma = 0 is cross-entropy]: identical bits, not merely close.
  for (float grad_scale : {1.0f, 0.37f}) {
    Batch b = random_batch(52, 29, 97, /*pad=*/96, /*pad_every=*/4, 3.0f);
    Guarded loss(1), token_loss(b.N), dlogits(b.N * b.C);
    safl::cpu::focal_loss(loss.data(), token_loss.data(), dlogits.data(), b.logits.data(),
                          b.targets.data(), b.N, b.C, b.pad, /*gamma=*/0.0f, /*alpha=*/1.0f, grad_scale);
    std::vector<float> ce_token_loss, ce_dlogits;
    const float ce =
        plain_cross_entropy(ce_token_loss, ce_dlogits, b.logits, b.targets, b.C, b.pad, grad_scale);
    EXPECT(same_bits(loss.data(), &ce, 1));
    EXPECT(same_bits(token_loss.data(), ce_token_loss.data(), b.N));
    EXPECT(same_bits(dlogits.data(), ce_dlogits.data(), ce_dlogits.size()));
    EXPECT_GUARDS(loss, "loss");
    EXPECT_GUARDS(token_loss, "token_loss");
    EXPECT_GUARDS(dlogits, "dlogits");
  }
}

SAFL_TEST(focal_loss_matches_double_reference) {
  for (float gamma : {0.0f, 0.5f, 1.0f, 2.0f, 5.0f}) {
    for (float alpha : {1.0f, 0.25f}) {
      Batch b = random_batch(53, 19, 37, /*pad=*/-1, /*pad_every=*/5, 2.5f);
      Guarded loss(1), token_loss(b.N), dlogits(b.N * b.C);
      safl::cpu::focal_loss(loss.data(), token_loss.data(), dlogits.data(), b.logits.data(),
                            b.targets.data(), b.N, b.C, b.pad, gamma, alpha, 2.0f);
      std::vector<float> expected_token(b.N, 0.0f), expected_grad(b.N * b.C, 0.0f);
      std::vector<double> grad_row(b.C);
      int64_t count = 0;
      for (int32_t t : b.targets) count += t != b.pad;
      double total = 0.0;
      for (int64_t n = 0; n < b.N; ++n) {
        if (b.targets[n] == b.pad) continue;
        const double fl =
            reference_focal_row(grad_row.data(), &b.logits[n * b.C], b.C, b.targets[n], gamma, alpha);
        expected_token[n] = float(fl);
        total += fl;
        for (int64_t c = 0; c < b.C; ++c)
          expected_grad[n * b.C + c] = float(2.0 * grad_row[c] / double(count));
      }
      EXPECT_NEAR(loss[0], total / double(count), 1e-5 * (total / double(count)));
      EXPECT_ALL_CLOSE(token_loss.data(), expected_token.data(), b.N, 1e-5, 1e-7);
      EXPECT_ALL_CLOSE(dlogits.data(), expected_grad.data(), expected_grad.size(), 1e-4, 1e-8);
      EXPECT_GUARDS(dlogits, "dlogits");
    }
  }
}

SAFL_TEST(focal_loss_hand_cases) {
  // 1×1: p_t = 1, so the loss and the gradient are 0 for every γ.
  for (float gamma : {0.0f, 0.5f, 2.0f}) {
    const float z = 3.0f;
    const int32_t t = 0;
    Guarded loss(1), token_loss(1), dlogits(1);
    safl::cpu::focal_loss(loss.data(), token_loss.data(), dlogits.data(), &z, &t, 1, 1, -1, gamma);
    EXPECT(loss[0] == 0.0f && token_loss[0] == 0.0f && dlogits[0] == 0.0f);
    EXPECT_GUARDS(dlogits, "dlogits");
  }
  // A row of equal logits: p_t = 1/C, log p_t = log(1/C).
  {
    const int64_t C = 10;
    std::vector<float> z(C, -2.5f);
    const int32_t t = 3;
    float loss = 0.0f;
    safl::cpu::focal_loss(&loss, nullptr, nullptr, z.data(), &t, 1, C, -1, 0.0f, 1.0f);
    EXPECT_NEAR(loss, -std::log(1.0 / C), 1e-6);
    safl::cpu::focal_loss(&loss, nullptr, nullptr, z.data(), &t, 1, C, -1, 2.0f, 0.5f);
    EXPECT_NEAR(loss, -0.5 * 0.81 * std::log(1.0 / C), 1e-6);
  }
  // Every row pad: the loss is 0 and so are all the gradients and token losses.
  {
    Batch b = random_batch(54, 6, 5, /*pad=*/2, /*pad_every=*/1, 1.0f);
    Guarded loss(1), token_loss(b.N), dlogits(b.N * b.C);
    safl::cpu::focal_loss(loss.data(), token_loss.data(), dlogits.data(), b.logits.data(),
                          b.targets.data(), b.N, b.C, b.pad);
    EXPECT(loss[0] == 0.0f);
    bool zero = true;
    for (size_t i = 0; i < dlogits.size(); ++i) zero = zero && dlogits[i] == 0.0f;
    for (size_t i = 0; i < token_loss.size(); ++i) zero = zero && token_loss[i] == 0.0f;
    EXPECT(zero);
    EXPECT_GUARDS(dlogits, "dlogits");
  }
  // grad_scale multiplies the gradient; the loss is unchanged.
  {
    Batch b = random_batch(55, 5, 7, -1, 0, 1.0f);
    std::vector<float> g1(b.N * b.C), g4(b.N * b.C);
    float l1 = 0, l4 = 0;
    safl::cpu::focal_loss(&l1, nullptr, g1.data(), b.logits.data(), b.targets.data(), b.N, b.C, -1,
                          2.0f, 1.0f, 1.0f);
    safl::cpu::focal_loss(&l4, nullptr, g4.data(), b.logits.data(), b.targets.data(), b.N, b.C, -1,
                          2.0f, 1.0f, 4.0f);
    EXPECT(l1 == l4);
    for (auto& g : g1) g *= 4.0f;
    EXPECT_ALL_CLOSE(g4.data(), g1.data(), g1.size(), 1e-6, 0.0);
  }
}

SAFL_TEST(focal_loss_extreme_logits) {
  // ±1e4 logits: p_t is exactly 1 (loss and gradient 0) or vanishingly small (loss 2e4·α).
  const int64_t C = 4;
  const float z[] = {1e4f, -1e4f, -1e4f, 0.0f,
                     1e4f, -1e4f, -1e4f, 0.0f};
  const int32_t targets[] = {0, 1};
  for (float gamma : {0.0f, 0.25f, 0.5f, 2.0f}) {
    Guarded loss(1), token_loss(2), dlogits(2 * C);
    safl::cpu::focal_loss(loss.data(), token_loss.data(), dlogits.data(), z, targets, 2, C, -1, gamma);
    EXPECT_FINITE(loss.data(), 1);
    EXPECT_FINITE(token_loss.data(), 2);
    EXPECT_FINITE(dlogits.data(), 2 * C);
    EXPECT(token_loss[0] == 0.0f);
    for (int64_t c = 0; c < C; ++c) EXPECT(dlogits[c] == 0.0f);
    EXPECT_NEAR(token_loss[1], 2e4, 1.0);
    EXPECT_NEAR(dlogits[C + 1], -0.5, 1e-6);  // factor -α, halved by the mean over 2 rows
    EXPECT_NEAR(dlogits[C + 0], 0.5, 1e-6);
  }
  // p_t just below 1 with γ < 1: (1 - p_t)^(γ-1) is huge but the factor tends to 0 smoothly.
  for (float gamma : {0.25f, 0.5f}) {
    const float row[] = {20.0f, 0.0f, 0.0f};
    const int32_t t = 0;
    Guarded dlogits(3);
    float loss = 0.0f;
    safl::cpu::focal_loss(&loss, nullptr, dlogits.data(), row, &t, 1, 3, -1, gamma);
    std::vector<double> expected(3);
    const double fl = reference_focal_row(expected.data(), row, 3, 0, gamma, 1.0);
    EXPECT_NEAR(loss, fl, 1e-6 * fl);
    for (int c = 0; c < 3; ++c) EXPECT_NEAR(dlogits[c], expected[c], 1e-5 * std::fabs(expected[c]));
    EXPECT_FINITE(dlogits.data(), 3);
  }
  // The shared per-token math at log p_t = 0 exactly, and just below.
  EXPECT(safl::focal_grad_factor(0.0f, 0.5f, 1.0f) == 0.0f);
  EXPECT(safl::focal_grad_factor(0.0f, 0.0f, 1.0f) == -1.0f);
  EXPECT(safl::focal_loss_term(0.0f, 0.5f, 1.0f) == 0.0f);
  EXPECT(std::isfinite(safl::focal_grad_factor(-1e-30f, 0.5f, 1.0f)));
  EXPECT_NEAR(safl::focal_one_minus_p(-1e-10f), 1e-10, 1e-16);
}

SAFL_TEST(focal_loss_optional_outputs_and_zero_rows) {
  Batch b = random_batch(56, 11, 13, /*pad=*/0, /*pad_every=*/3, 2.0f);
  float full = 0, no_grad = 0, no_token = 0;
  std::vector<float> token(b.N), grad(b.N * b.C), grad_again(b.N * b.C);
  safl::cpu::focal_loss(&full, token.data(), grad.data(), b.logits.data(), b.targets.data(), b.N, b.C, b.pad);
  safl::cpu::focal_loss(&no_grad, nullptr, nullptr, b.logits.data(), b.targets.data(), b.N, b.C, b.pad);
  safl::cpu::focal_loss(&no_token, nullptr, grad_again.data(), b.logits.data(), b.targets.data(), b.N,
                        b.C, b.pad);
  EXPECT(full == no_grad && full == no_token);
  EXPECT(same_bits(grad.data(), grad_again.data(), grad.size()));
  // N = 0: the loss is 0, nothing else is touched.
  Guarded loss(1), empty(0);
  safl::cpu::focal_loss(loss.data(), empty.data(), empty.data(), nullptr, nullptr, 0, 5, -1);
  EXPECT(loss[0] == 0.0f);
  EXPECT_GUARDS(loss, "loss");
  EXPECT_GUARDS(empty, "empty");
}

SAFL_TEST(focal_loss_argument_errors) {
  const float z[20] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  const int32_t bad_high[] = {1, 4, 7, 2};
  const int32_t bad_low[] = {-2};
  Guarded loss(1), dlogits(20);
  EXPECT_THROWS(safl::cpu::focal_loss(loss.data(), nullptr, dlogits.data(), z, bad_high, 4, 5, 4),
                safl::Error,
                "focal_loss: expected targets in [0, 5) or the pad index 4 but received 7 at position 2");
  EXPECT(std::isnan(loss[0]) && std::isnan(dlogits[0]));  // nothing written
  EXPECT_THROWS(safl::cpu::focal_loss(loss.data(), nullptr, nullptr, z, bad_low, 1, 5, -1),
                safl::Error,
                "focal_loss: expected targets in [0, 5) or the pad index -1 but received -2 at position 0");
  EXPECT_THROWS(safl::cpu::focal_loss(loss.data(), nullptr, nullptr, z, bad_low, 1, 5, -2, -1.0f),
                safl::Error, "focal_loss: expected a finite gamma >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::focal_loss(loss.data(), nullptr, nullptr, z, bad_low, 1, 5, -2, 2.0f, 0.0f),
                safl::Error, "focal_loss: expected a finite alpha > 0 but received 0");
  EXPECT_THROWS(safl::cpu::focal_loss(loss.data(), nullptr, nullptr, z, bad_low, 1, 5, -2, 2.0f, 1.0f, NAN),
                safl::Error, "focal_loss: expected a finite grad_scale but received nan");
  EXPECT_THROWS(safl::cpu::focal_loss(loss.data(), nullptr, nullptr, z, bad_low, 1, 0, -2),
                safl::Error, "focal_loss: expected C >= 1 but received 0");
  EXPECT_THROWS(safl::cpu::focal_loss(loss.data(), nullptr, nullptr, z, bad_low, -1, 5, -2),
                safl::Error, "focal_loss: expected N >= 0 but received -1");
  try {
    safl::cpu::focal_loss(loss.data(), nullptr, nullptr, z, bad_low, 1, 5, -1);
  } catch (const safl::Error& e) {
    EXPECT(e.kind() == safl::ErrorKind::Range);
  }
}

#ifdef SAFL_WITH_CUDA
SAFL_CUDA_TEST(focal_loss_cuda_parity) {
  using safl::cuda::DeviceBuffer;
  struct Shape {
    int64_t N, C;
    int pad_every;
  };
  // C = 1, below a warp, the ASCII charset, not a multiple of the block, several blocks wide.
  for (Shape s : {Shape{1, 1, 0}, Shape{37, 5, 3}, Shape{37, 97, 4}, Shape{64, 300, 5}, Shape{9, 1000, 2}}) {
    for (float gamma : {0.0f, 0.5f, 2.0f}) {
      const int32_t pad = int32_t(s.C) - 1;
      Batch b = random_batch(57 + s.C, s.N, s.C, s.C > 1 ? pad : -1, s.C > 1 ? s.pad_every : 0, 3.0f);
      std::vector<float> loss(1), token(b.N), grad(b.N * b.C);
      safl::cpu::focal_loss(loss.data(), token.data(), grad.data(), b.logits.data(), b.targets.data(),
                            b.N, b.C, b.pad, gamma, 0.5f, 3.0f);
      DeviceBuffer<float> d_logits(b.logits), d_loss(1), d_token(b.N), d_grad(b.N * b.C);
      DeviceBuffer<int32_t> d_targets(b.targets);
      safl::cuda::focal_loss(d_loss.data(), d_token.data(), d_grad.data(), d_logits.data(),
                             d_targets.data(), b.N, b.C, b.pad, gamma, 0.5f, 3.0f);
      const std::vector<float> got_loss = d_loss.to_host(), got_token = d_token.to_host(),
                               got_grad = d_grad.to_host();
      std::printf("    N %lld C %lld gamma %.1f\n", (long long)s.N, (long long)s.C, gamma);
      EXPECT_ALL_CLOSE(got_loss.data(), loss.data(), 1, 1e-5, 1e-7);
      EXPECT_ALL_CLOSE(got_token.data(), token.data(), token.size(), 1e-5, 1e-6);
      EXPECT_ALL_CLOSE(got_grad.data(), grad.data(), grad.size(), 1e-4, 1e-7);
      // Without the optional outputs the loss is the same.
      DeviceBuffer<float> d_loss_only(1);
      safl::cuda::focal_loss(d_loss_only.data(), nullptr, nullptr, d_logits.data(), d_targets.data(),
                             b.N, b.C, b.pad, gamma, 0.5f, 3.0f);
      EXPECT(d_loss_only.to_host()[0] == got_loss[0]);
    }
  }
  // All pad, N = 0 and a bad target.
  Batch all_pad = random_batch(58, 4, 6, 2, 1, 1.0f);
  DeviceBuffer<float> d_logits(all_pad.logits), d_loss(1), d_grad(all_pad.N * all_pad.C);
  DeviceBuffer<int32_t> d_targets(all_pad.targets);
  safl::cuda::focal_loss(d_loss.data(), nullptr, d_grad.data(), d_logits.data(), d_targets.data(),
                         all_pad.N, all_pad.C, all_pad.pad);
  EXPECT(d_loss.to_host()[0] == 0.0f);
  const std::vector<float> zeros(all_pad.N * all_pad.C, 0.0f);
  const std::vector<float> got = d_grad.to_host();
  EXPECT_ALL_CLOSE(got.data(), zeros.data(), zeros.size(), 0.0, 0.0);
  safl::cuda::focal_loss(d_loss.data(), nullptr, nullptr, nullptr, nullptr, 0, 6, -1);
  EXPECT(d_loss.to_host()[0] == 0.0f);
  const std::vector<int32_t> bad = {1, 0, 9, 3};
  DeviceBuffer<int32_t> d_bad(bad);
  EXPECT_THROWS(
      safl::cuda::focal_loss(d_loss.data(), nullptr, nullptr, d_logits.data(), d_bad.data(), 4, 6, 0),
      safl::Error,
      "focal_loss: expected targets in [0, 6) or the pad index 0 but received 9 at position 2");
}
#endif
