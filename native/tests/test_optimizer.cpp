// Adam/AdamW and gradient-norm clipping (ops/optimizer.h): a hand-written Adam over a few steps,
// a first step by hand, AdamW's decoupled decay against Adam's L2 term, clip factors and exact
// scaling, zero gradients, a grad norm independent of the thread count, zero sizes, argument
// errors, and CUDA parity when a GPU is present.
#include <cmath>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"
#include "ops/optimizer.h"
#include "tests/harness.h"

#ifdef SAFL_WITH_CUDA
#include "cuda/cuda_check.h"
#endif

using safl::test::Guarded;

namespace {

// Adam / AdamW as written in the papers (Kingma & Ba; Loshchilov & Hutter), in double.
struct HandAdam {
  std::vector<double> p, m, v;
  void step(const std::vector<float>& grad, int t, double scale, const safl::AdamOptions& o) {
    for (size_t i = 0; i < p.size(); ++i) {
      double g = scale * grad[i];
      if (!o.decoupled_weight_decay) g += o.weight_decay * p[i];
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
      const double m_hat = m[i] / (1 - std::pow(double(o.beta1), t));
      const double v_hat = v[i] / (1 - std::pow(double(o.beta2), t));
      if (o.decoupled_weight_decay) p[i] -= o.lr * o.weight_decay * p[i];
      p[i] -= o.lr * m_hat / (std::sqrt(v_hat) + o.eps);
    }
  }
};

bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

}  // namespace

SAFL_TEST(adam_matches_hand_written) {
  for (bool decoupled : {false, true}) {
    const int64_t P = 37;
    safl::AdamOptions o;
    o.lr = 0.01f;
    o.weight_decay = 0.1f;
    o.decoupled_weight_decay = decoupled;
    safl::test::Rng rng(61);
    Guarded params(P), m(P, 0.0f), v(P, 0.0f);
    rng.fill_normal(params.data(), P);
    HandAdam hand{std::vector<double>(params.data(), params.data() + P), std::vector<double>(P, 0.0),
                  std::vector<double>(P, 0.0)};
    std::vector<float> grad(P);
    for (int t = 1; t <= 4; ++t) {
      rng.fill_normal(grad.data(), P);
      safl::cpu::adam_step(params.data(), m.data(), v.data(), grad.data(), P, t, 0.5f, o);
      hand.step(grad, t, 0.5, o);
    }
    std::vector<float> expected_p(hand.p.begin(), hand.p.end()), expected_m(hand.m.begin(), hand.m.end()),
        expected_v(hand.v.begin(), hand.v.end());
    EXPECT_ALL_CLOSE(params.data(), expected_p.data(), P, 1e-6, 1e-7);
    EXPECT_ALL_CLOSE(m.data(), expected_m.data(), P, 1e-5, 1e-8);
    EXPECT_ALL_CLOSE(v.data(), expected_v.data(), P, 1e-5, 1e-9);
    EXPECT_GUARDS(params, "params");
    EXPECT_GUARDS(m, "m");
    EXPECT_GUARDS(v, "v");
  }
}

SAFL_TEST(adam_first_step_by_hand) {
  // Step 1 from m = v = 0: m̂ = g, v̂ = g², so every parameter moves by lr · g / (|g| + eps).
  const float grad[] = {0.5f, -2.0f, 1e-3f};
  float params[] = {1.0f, 1.0f, 1.0f}, m[3] = {}, v[3] = {};
  safl::AdamOptions o;
  o.lr = 0.1f;
  safl::cpu::adam_step(params, m, v, grad, 3, 1, 1.0f, o);
  EXPECT_NEAR(params[0], 0.9, 1e-7);
  EXPECT_NEAR(params[1], 1.1, 1e-7);
  EXPECT_NEAR(params[2], 0.9, 1e-6);
  EXPECT_NEAR(m[0], 0.05, 1e-7);  // (1 - β1) and (1 - β2) are rounded in float
  EXPECT_NEAR(v[1], 0.02 * 4.0, 1e-7);
}

SAFL_TEST(adamw_decay_is_decoupled) {
  // Zero gradient, fresh state: AdamW only shrinks the parameters by (1 - lr·wd); Adam turns the
  // decay into a gradient, which the normalisation makes a full step of lr·sign(p).
  const float grad[] = {0.0f, 0.0f};
  safl::AdamOptions o;
  o.lr = 0.1f;
  o.weight_decay = 0.5f;
  o.decoupled_weight_decay = true;
  float p_w[] = {2.0f, -4.0f}, m_w[2] = {}, v_w[2] = {};
  safl::cpu::adam_step(p_w, m_w, v_w, grad, 2, 1, 1.0f, o);
  EXPECT(p_w[0] == 2.0f * float(1.0 - 0.1f * 0.5f) && p_w[1] == -4.0f * float(1.0 - 0.1f * 0.5f));
  EXPECT(m_w[0] == 0.0f && v_w[1] == 0.0f);
  o.decoupled_weight_decay = false;
  float p_a[] = {2.0f, -4.0f}, m_a[2] = {}, v_a[2] = {};
  safl::cpu::adam_step(p_a, m_a, v_a, grad, 2, 1, 1.0f, o);
  EXPECT_NEAR(p_a[0], 1.9, 1e-6);
  EXPECT_NEAR(p_a[1], -3.9, 1e-6);
}

SAFL_TEST(adam_zero_gradient_leaves_params) {
  const int64_t P = 100;
  safl::test::Rng rng(62);
  std::vector<float> params(P), grad(P, 0.0f), m(P, 0.0f), v(P, 0.0f);
  rng.fill_normal(params.data(), P);
  const std::vector<float> before = params;
  safl::AdamOptions o;
  for (int t = 1; t <= 3; ++t)
    safl::cpu::adam_step(params.data(), m.data(), v.data(), grad.data(), P, t, 1.0f, o);
  EXPECT(same_bits(params.data(), before.data(), P));
  // A grad_scale of 0 (a skipped batch) is the same as a zero gradient.
  rng.fill_normal(grad.data(), P);
  safl::cpu::adam_step(params.data(), m.data(), v.data(), grad.data(), P, 4, 0.0f, o);
  EXPECT(same_bits(params.data(), before.data(), P));
}

SAFL_TEST(grad_norm_and_clipping) {
  const float three_four[] = {3.0f, 4.0f};
  EXPECT(safl::cpu::grad_norm(three_four, 2) == 5.0);
  EXPECT(safl::cpu::grad_norm(nullptr, 0) == 0.0);
  // clip_factor = min(1, max_norm / (norm + 1e-6)).
  EXPECT(safl::clip_factor(5.0, 1.0f) == float(1.0 / (5.0 + 1e-6)));
  EXPECT(safl::clip_factor(0.5, 1.0f) == 1.0f);
  EXPECT(safl::clip_factor(0.0, 1.0f) == 1.0f);
  EXPECT(safl::clip_factor(NAN, 1.0f) == 1.0f);
  EXPECT_THROWS(safl::clip_factor(1.0, 0.0f), safl::Error,
                "clip_factor: expected max_norm > 0 but received 0");
  // The step with grad_scale s is the step on the gradient pre-multiplied by s, bit for bit, and
  // the clipped gradient has norm max_norm (up to the 1e-6).
  const int64_t P = 1000;
  safl::test::Rng rng(63);
  std::vector<float> grad(P), params(P);
  rng.fill_normal(grad.data(), P, 3.0f);
  rng.fill_normal(params.data(), P);
  const double norm = safl::cpu::grad_norm(grad.data(), P);
  const float scale = safl::clip_factor(norm, 1.0f);
  std::vector<float> scaled(P);
  for (int64_t i = 0; i < P; ++i) scaled[i] = grad[i] * scale;
  EXPECT_NEAR(safl::cpu::grad_norm(scaled.data(), P), 1.0, 1e-5);
  safl::AdamOptions o;
  o.weight_decay = 0.01f;
  std::vector<float> p1 = params, m1(P, 0.0f), v1(P, 0.0f), p2 = params, m2(P, 0.0f), v2(P, 0.0f);
  for (int t = 1; t <= 2; ++t) {
    safl::cpu::adam_step(p1.data(), m1.data(), v1.data(), grad.data(), P, t, scale, o);
    safl::cpu::adam_step(p2.data(), m2.data(), v2.data(), scaled.data(), P, t, 1.0f, o);
  }
  EXPECT(same_bits(p1.data(), p2.data(), P));
  EXPECT(same_bits(m1.data(), m2.data(), P));
  EXPECT(same_bits(v1.data(), v2.data(), P));
}

SAFL_TEST(grad_norm_independent_of_threads) {
  const int64_t P = 3 * safl::kGradNormChunk + 17;
  safl::test::Rng rng(64);
  std::vector<float> grad(P);
  rng.fill_normal(grad.data(), P);
  double serial = 0.0;
  for (float g : grad) serial += double(g) * g;
  serial = std::sqrt(serial);
  safl::set_num_threads(1);
  const double one = safl::cpu::grad_norm(grad.data(), P);
  for (int threads : {2, 3, 7}) {
    safl::set_num_threads(threads);
    EXPECT(safl::cpu::grad_norm(grad.data(), P) == one);
  }
  safl::set_num_threads(safl::hardware_threads());
  EXPECT_NEAR(one, serial, 1e-12 * serial);
}

SAFL_TEST(optimizer_zero_size_and_errors) {
  safl::AdamOptions o;
  Guarded empty(0);
  safl::cpu::adam_step(empty.data(), empty.data(), empty.data(), empty.data(), 0, 1, 1.0f, o);
  EXPECT_GUARDS(empty, "empty");
  float x[1] = {};
  EXPECT_THROWS(safl::cpu::adam_step(x, x, x, x, -1, 1, 1.0f, o), safl::Error,
                "adam_step: expected P >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::adam_step(x, x, x, x, 1, 0, 1.0f, o), safl::Error,
                "adam_step: expected step >= 1 but received 0");
  EXPECT_THROWS(safl::cpu::adam_step(x, x, x, x, 1, 1, -1.0f, o), safl::Error,
                "adam_step: expected a finite grad_scale >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::grad_norm(x, -5), safl::Error, "grad_norm: expected P >= 0 but received -5");
  safl::AdamOptions bad = o;
  bad.beta1 = 1.0f;
  EXPECT_THROWS(safl::cpu::adam_step(x, x, x, x, 1, 1, 1.0f, bad), safl::Error,
                "adam_step: expected 0 <= beta1 < 1 but received 1");
  bad = o;
  bad.beta2 = -0.5f;
  EXPECT_THROWS(safl::cpu::adam_step(x, x, x, x, 1, 1, 1.0f, bad), safl::Error,
                "adam_step: expected 0 <= beta2 < 1 but received -0.5");
  bad = o;
  bad.eps = 0.0f;
  EXPECT_THROWS(safl::cpu::adam_step(x, x, x, x, 1, 1, 1.0f, bad), safl::Error,
                "adam_step: expected a finite eps > 0 but received 0");
  bad = o;
  bad.lr = NAN;
  EXPECT_THROWS(safl::cpu::adam_step(x, x, x, x, 1, 1, 1.0f, bad), safl::Error,
                "adam_step: expected a finite lr >= 0 but received nan");
  bad = o;
  bad.weight_decay = -1.0f;
  EXPECT_THROWS(safl::cpu::adam_step(x, x, x, x, 1, 1, 1.0f, bad), safl::Error,
                "adam_step: expected a finite weight_decay >= 0 but received -1");
}

#ifdef SAFL_WITH_CUDA
SAFL_CUDA_TEST(optimizer_cuda_parity) {
  using safl::cuda::DeviceBuffer;
  for (int64_t P : {int64_t(1), int64_t(255), int64_t(100003), int64_t(1) << 20 | 7}) {
    safl::test::Rng rng(65);
    std::vector<float> params(P), grad(P), m(P, 0.0f), v(P, 0.0f);
    rng.fill_normal(params.data(), P);
    rng.fill_normal(grad.data(), P, 2.0f);
    // Norms: the same to double rounding, and the same bits on a rerun.
    DeviceBuffer<float> d_grad(grad);
    const double cpu_norm = safl::cpu::grad_norm(grad.data(), P);
    const double cuda_norm = safl::cuda::grad_norm(d_grad.data(), P);
    std::printf("    P %lld norm cpu %.17g cuda %.17g\n", (long long)P, cpu_norm, cuda_norm);
    EXPECT_NEAR(cuda_norm, cpu_norm, 1e-12 * cpu_norm);
    EXPECT(safl::cuda::grad_norm(d_grad.data(), P) == cuda_norm);
    for (bool decoupled : {false, true}) {
      safl::AdamOptions o;
      o.lr = 1e-3f;
      o.weight_decay = 0.05f;
      o.decoupled_weight_decay = decoupled;
      std::vector<float> p_cpu = params, m_cpu = m, v_cpu = v;
      DeviceBuffer<float> d_p(params), d_m(m), d_v(v);
      for (int t = 1; t <= 3; ++t) {
        safl::cpu::adam_step(p_cpu.data(), m_cpu.data(), v_cpu.data(), grad.data(), P, t, 0.7f, o);
        safl::cuda::adam_step(d_p.data(), d_m.data(), d_v.data(), d_grad.data(), P, t, 0.7f, o);
      }
      const std::vector<float> p_got = d_p.to_host(), m_got = d_m.to_host(), v_got = d_v.to_host();
      EXPECT_ALL_CLOSE(p_got.data(), p_cpu.data(), P, 1e-6, 1e-7);
      EXPECT_ALL_CLOSE(m_got.data(), m_cpu.data(), P, 1e-5, 1e-7);
      EXPECT_ALL_CLOSE(v_got.data(), v_cpu.data(), P, 1e-5, 1e-7);
    }
  }
  EXPECT(safl::cuda::grad_norm(nullptr, 0) == 0.0);
  float* none = nullptr;
  safl::cuda::adam_step(none, none, none, none, 0, 1, 1.0f, safl::AdamOptions());
  EXPECT_THROWS(safl::cuda::adam_step(none, none, none, none, 1, 0, 1.0f, safl::AdamOptions()), safl::Error,
                "adam_step: expected step >= 1 but received 0");
}
#endif
