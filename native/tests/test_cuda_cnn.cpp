// CPU-vs-CUDA parity of the convolutional network's ops: conv2d (TF32 implicit GEMM), batch norm,
// ReLU, dropout, 2×2 max-pooling and the align-corners bilinear resize. Device outputs sit between
// guard words (out-of-bounds writes fail the test) and start as NaN where the op must write every
// element. Argument checks are compared with the CPU ops' messages without a GPU; everything
// else is a SAFL_CUDA_TEST, skipped when no GPU answers.
//
// Note [TF32 tolerance]: the conv kernels round both operands to TF32 (10-bit mantissa, round to
// nearest: relative error <= 2^-11 each) and accumulate in FP32. Each product is then off by at
// most about 2^-10 of |a·b|, and a sum of K products by at most 2^-10·Σ|a·b| plus the FP32
// accumulation error of either side (K·2^-24·Σ|a·b| at worst). So an element passes when
//     |cuda − cpu| <= (2^-9 + K·2^-22)·Σ|a·b| + 2^-22·|cpu| + 1e-6,
// twice the worst case of each term; Σ|a·b| is the same conv run on |x|, |w|, |dout| (and |bias|).
// That bound cannot see one wrong tap among thousands, so every shape also runs on small
// integers, where TF32 and every sum are exact: there CUDA must equal the CPU exactly.
#ifdef SAFL_WITH_CUDA
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "ops/activation.h"
#include "ops/batchnorm.h"
#include "ops/conv.h"
#include "ops/pool.h"
#include "ops/resize.h"
#include "tests/harness.h"

namespace {

using safl::test::Rng;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A device array of n T between kGuard sentinel elements on each side.
template <class T = float>
class DeviceGuarded {
  static_assert(sizeof(T) == 4, "the sentinel is 32 bits");

 public:
  DeviceGuarded(size_t n, T fill) : n_(n), buffer_(n + 2 * kGuard) {
    std::vector<T> host(n + 2 * kGuard, sentinel());
    std::fill(host.begin() + kGuard, host.begin() + kGuard + n, fill);
    buffer_.upload(host.data());
  }
  explicit DeviceGuarded(const std::vector<T>& values) : DeviceGuarded(values.size(), T()) {
    SAFL_CUDA_CHECK(cudaMemcpy(data(), values.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  T* data() { return buffer_.data() + kGuard; }
  std::vector<T> to_host() const {
    const std::vector<T> all = buffer_.to_host();
    return std::vector<T>(all.begin() + kGuard, all.begin() + kGuard + n_);
  }
  bool guards_intact() const {
    const std::vector<T> all = buffer_.to_host();
    const T s = sentinel();
    for (size_t i = 0; i < kGuard; ++i) {
      if (std::memcmp(&all[i], &s, sizeof s) != 0 || std::memcmp(&all[kGuard + n_ + i], &s, sizeof s) != 0)
        return false;
    }
    return true;
  }

 private:
  static constexpr size_t kGuard = 64;
  static T sentinel() {
    const uint32_t bits = 0x7FA5A5A5u;  // a quiet NaN (as float), or a large int32
    T value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  }
  size_t n_;
  safl::cuda::DeviceBuffer<T> buffer_;
};
#define EXPECT_DEVICE_GUARDS(buf) EXPECT((buf).guards_intact())

// Identical bits, except that any two NaNs match: GPU arithmetic returns one canonical NaN where
// x86 propagates an operand's payload (NaN·0 in dropout).
template <class T>
bool same_bits(const char* label, const std::vector<T>& actual, const std::vector<T>& expected) {
  size_t bad = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (std::memcmp(&actual[i], &expected[i], sizeof(T)) == 0) continue;
    if (std::isnan(double(actual[i])) && std::isnan(double(expected[i]))) continue;
    if (bad++ < 5)
      std::printf("    bits differ %s [%zu]: %.9g vs %.9g\n", label, i, double(actual[i]), double(expected[i]));
  }
  if (bad) std::printf("    %zu of %zu elements differ in bits: %s\n", bad, expected.size(), label);
  return actual.size() == expected.size() && bad == 0;
}
#define EXPECT_SAME_BITS(actual, expected) EXPECT(same_bits(#actual " vs " #expected, (actual), (expected)))

// Equal as numbers (±0 alike), NaN never.
bool exactly_equal(const char* label, const std::vector<float>& actual, const std::vector<float>& expected) {
  size_t bad = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (actual[i] == expected[i]) continue;
    if (bad++ < 5) std::printf("    differs %s [%zu]: %.9g vs %.9g\n", label, i, actual[i], expected[i]);
  }
  if (bad) std::printf("    %zu of %zu elements differ: %s\n", bad, expected.size(), label);
  return actual.size() == expected.size() && bad == 0;
}
#define EXPECT_EXACTLY_EQUAL(actual, expected) EXPECT(exactly_equal(#actual " vs " #expected, (actual), (expected)))

// Note [TF32 tolerance]: `magnitude` holds Σ|a·b| per element, `terms` the K of the sums.
bool within_tf32_bound(const char* label, const std::vector<float>& actual, const std::vector<float>& expected,
                       const std::vector<float>& magnitude, int64_t terms) {
  const double relative = std::ldexp(1.0, -9) + double(terms) * std::ldexp(1.0, -22);
  size_t bad = 0;
  double worst = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double bound = relative * magnitude[i] + std::ldexp(1.0, -22) * std::fabs(expected[i]) + 1e-6;
    const double error = std::fabs(double(actual[i]) - double(expected[i]));
    if (!(error / bound <= worst)) worst = error / bound;
    if (error <= bound) continue;  // false for NaN
    if (bad++ < 5)
      std::printf("    mismatch %s [%zu]: %.9g vs %.9g (bound %.3g)\n", label, i, actual[i], expected[i], bound);
  }
  std::printf("    %-8s worst error / bound %.3f\n", label, worst);
  if (bad) std::printf("    %zu of %zu elements beyond the TF32 bound: %s\n", bad, expected.size(), label);
  return actual.size() == expected.size() && bad == 0;
}

std::vector<float> absolute(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = std::fabs(v[i]);
  return out;
}

// Small integers in [-2, 2]: exact in TF32, and every conv sum of them is exact in FP32.
void fill_integers(Rng& rng, std::vector<float>& v) {
  for (float& x : v) x = float(int64_t(rng.next() % 5) - 2);
}

// ---- conv2d ----------------------------------------------------------------------------------

struct ConvShape {
  int64_t B, Ci, H, W, Co, kh, kw, sh, sw, ph, pw;
  bool bias;
  const char* what;
  int64_t Ho() const { return safl::conv2d_output_size(H, kh, sh, ph); }
  int64_t Wo() const { return safl::conv2d_output_size(W, kw, sw, pw); }
  size_t x_size() const { return size_t(B * Ci * H * W); }
  size_t w_size() const { return size_t(Co * Ci * kh * kw); }
  size_t out_size() const { return size_t(B * Co * Ho() * Wo()); }
};

const std::vector<ConvShape>& conv_shapes() {
  static const std::vector<ConvShape> all = {
      {2, 3, 32, 100, 32, 3, 3, 1, 1, 1, 1, true, "stem, Ci = 3, base width"},
      {4, 3, 32, 64, 16, 3, 3, 1, 1, 1, 1, true, "localisation stem, split weight gradient"},
      {2, 16, 8, 25, 32, 3, 3, 1, 1, 1, 1, true, "3x3 pad 1, narrow tiles (Co = 32)"},
      {3, 32, 5, 13, 48, 3, 3, 1, 1, 1, 1, false, "3x3 pad 1, Co not a multiple of the tile"},
      {2, 128, 4, 13, 96, 3, 3, 1, 1, 1, 1, true, "3x3, K = 1152: many reduction steps"},
      {2, 256, 2, 25, 512, 3, 3, 1, 1, 1, 1, false, "base stage 5 width on a 2x25 map"},
      {3, 64, 1, 25, 40, 3, 3, 1, 1, 1, 1, true, "H = 1: kernel rows that see only padding"},
      {2, 32, 16, 50, 64, 1, 1, 2, 2, 0, 0, false, "1x1 stride (2,2) shortcut"},
      {2, 64, 8, 25, 128, 1, 1, 2, 1, 0, 0, false, "1x1 stride (2,1) shortcut"},
      {2, 16, 7, 9, 24, 1, 1, 2, 1, 0, 0, true, "1x1 stride (2,1), odd H and W"},
      {2, 3, 7, 9, 5, 3, 3, 2, 2, 1, 1, true, "3x3 stride 2, odd sizes"},
      {1, 8, 9, 11, 5, 3, 3, 2, 1, 1, 1, true, "B = 1, stride (2,1)"},
      {1, 2, 5, 7, 3, 2, 3, 2, 1, 0, 1, true, "non-square kernel"},
      {3, 1, 4, 3, 2, 1, 1, 1, 1, 1, 2, true, "padding beyond the kernel: borders are bias"},
      {2, 2, 8, 7, 3, 3, 2, 3, 2, 2, 0, false, "stride larger than the kernel"},
      {1, 2, 3, 3, 2, 3, 3, 1, 1, 0, 0, true, "kernel covers the input: 1x1 output"},
      {2, 2, 1, 4, 2, 3, 1, 1, 1, 3, 0, true, "padding so wide some rows see no input"},
      {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, true, "1x1x1x1"},
      {8, 16, 16, 50, 16, 3, 3, 1, 1, 1, 1, true, "weight gradient split 25 ways"},
      {0, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, true, "B = 0"},
      {2, 0, 5, 5, 4, 3, 3, 1, 1, 1, 1, true, "Ci = 0: the output is the bias"},
      {2, 3, 5, 5, 0, 3, 3, 1, 1, 1, 1, true, "Co = 0: dx is zero"},
  };
  return all;
}

void conv_parity(const ConvShape& s, bool integers, Rng& rng) {
  std::printf("    %s: B=%lld Ci=%lld %lldx%lld Co=%lld k%lldx%lld s%lld,%lld p%lld,%lld%s\n", s.what, (long long)s.B,
              (long long)s.Ci, (long long)s.H, (long long)s.W, (long long)s.Co, (long long)s.kh, (long long)s.kw,
              (long long)s.sh, (long long)s.sw, (long long)s.ph, (long long)s.pw, integers ? " (integers)" : "");
  std::vector<float> x(s.x_size()), w(s.w_size()), b(size_t(s.Co)), dout(s.out_size());
  if (integers) {
    for (auto* v : {&x, &w, &b, &dout}) fill_integers(rng, *v);
  } else {
    rng.fill_uniform(x.data(), x.size());
    rng.fill_uniform(w.data(), w.size(), -0.5f, 0.5f);
    rng.fill_uniform(b.data(), b.size());
    rng.fill_uniform(dout.data(), dout.size());
  }
  const float* bias = s.bias ? b.data() : nullptr;
  const auto conv = [&s](auto fn, auto... args) {
    fn(args..., s.B, s.Ci, s.H, s.W, s.Co, s.kh, s.kw, s.sh, s.sw, s.ph, s.pw);
  };

  // CPU: the production op; dweight and dbias start non-zero (backward adds).
  std::vector<float> cpu_ws(size_t(safl::cpu::conv2d_workspace_floats(s.B, s.Ci, s.H, s.W, s.Co, s.kh, s.kw, s.sh,
                                                                       s.sw, s.ph, s.pw)));
  std::vector<float> out(s.out_size()), dx(s.x_size()), dw(s.w_size(), 0.5f), db(size_t(s.Co), -0.25f);
  conv(safl::cpu::conv2d_forward, out.data(), cpu_ws.data(), x.data(), w.data(), bias);
  conv(safl::cpu::conv2d_backward, dx.data(), dw.data(), s.bias ? db.data() : nullptr, cpu_ws.data(), dout.data(),
       x.data(), w.data());

  // CUDA.
  const int64_t ws_floats =
      safl::cuda::conv2d_workspace_floats(s.B, s.Ci, s.H, s.W, s.Co, s.kh, s.kw, s.sh, s.sw, s.ph, s.pw);
  DeviceGuarded<> d_x(x), d_w(w), d_b(b), d_dout(dout), d_ws(size_t(ws_floats), kNaN);
  DeviceGuarded<> d_out(s.out_size(), kNaN), d_out_again(s.out_size(), kNaN), d_dx(s.x_size(), kNaN),
      d_dw(s.w_size(), 0.5f), d_db(size_t(s.Co), -0.25f), d_dw_again(s.w_size(), 0.5f),
      d_dw_only(s.w_size(), 0.5f);
  const float* d_bias = s.bias ? d_b.data() : nullptr;
  conv(safl::cuda::conv2d_forward, d_out.data(), d_ws.data(), d_x.data(), d_w.data(), d_bias);
  conv(safl::cuda::conv2d_forward, d_out_again.data(), d_ws.data(), d_x.data(), d_w.data(), d_bias);
  conv(safl::cuda::conv2d_backward, d_dx.data(), d_dw.data(), s.bias ? d_db.data() : nullptr, d_ws.data(),
       d_dout.data(), d_x.data(), d_w.data());
  conv(safl::cuda::conv2d_backward, nullptr, d_dw_again.data(), nullptr, d_ws.data(), d_dout.data(), d_x.data(),
       d_w.data());
  // The workspace is scratch: the same call with it holding the previous call's partials.
  conv(safl::cuda::conv2d_backward, nullptr, d_dw_only.data(), nullptr, d_ws.data(), d_dout.data(), d_x.data(),
       d_w.data());
  SAFL_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> c_out = d_out.to_host(), c_dx = d_dx.to_host(), c_dw = d_dw.to_host(),
                           c_db = d_db.to_host();

  if (integers) {
    EXPECT_EXACTLY_EQUAL(c_out, out);
    EXPECT_EXACTLY_EQUAL(c_dx, dx);
    EXPECT_EXACTLY_EQUAL(c_dw, dw);
    EXPECT_EXACTLY_EQUAL(c_db, db);
  } else {
    // Σ|a·b| per element (Note [TF32 tolerance]), by the CPU op on absolute values.
    const std::vector<float> ax = absolute(x), aw = absolute(w), ab = absolute(b), adout = absolute(dout);
    std::vector<float> out_mag(s.out_size()), dx_mag(s.x_size()), dw_mag(s.w_size(), 0.0f);
    conv(safl::cpu::conv2d_forward, out_mag.data(), cpu_ws.data(), ax.data(), aw.data(), s.bias ? ab.data() : nullptr);
    conv(safl::cpu::conv2d_backward, dx_mag.data(), dw_mag.data(), nullptr, cpu_ws.data(), adout.data(), ax.data(),
         aw.data());
    EXPECT(within_tf32_bound("out", c_out, out, out_mag, s.Ci * s.kh * s.kw));
    EXPECT(within_tf32_bound("dx", c_dx, dx, dx_mag, s.Co * s.kh * s.kw));
    EXPECT(within_tf32_bound("dweight", c_dw, dw, dw_mag, s.B * s.Ho() * s.Wo()));
    // The bias gradient is a double sum on both sides.
    EXPECT_ALL_CLOSE(c_db.data(), db.data(), db.size(), 1e-6, 1e-6);
  }
  // Deterministic: a rerun gives the same bits, with or without dx and dbias.
  EXPECT_SAME_BITS(d_out_again.to_host(), c_out);
  EXPECT_SAME_BITS(d_dw_again.to_host(), c_dw);
  EXPECT_SAME_BITS(d_dw_only.to_host(), c_dw);
  for (const auto* buffer : {&d_out, &d_out_again, &d_dx, &d_dw, &d_db, &d_dw_again, &d_dw_only, &d_ws})
    EXPECT_DEVICE_GUARDS(*buffer);
}

// ---- argument errors (no GPU needed: the checks run before any device work) -------------------

// Both calls throw safl::Error with the same message, containing `substring`.
void expect_same_error(const std::function<void()>& cpu_call, const std::function<void()>& cuda_call,
                       const char* substring) {
  std::string messages[2];
  const std::function<void()>* calls[2] = {&cpu_call, &cuda_call};
  for (int i = 0; i < 2; ++i) {
    try {
      (*calls[i])();
    } catch (const safl::Error& e) {
      messages[i] = e.what();
    }
  }
  const bool ok = messages[0] == messages[1] && messages[0].find(substring) != std::string::npos;
  if (!ok) std::printf("    cpu: \"%s\"\n    cuda: \"%s\"\n", messages[0].c_str(), messages[1].c_str());
  EXPECT(ok);
}

}  // namespace

SAFL_TEST(cnn_cuda_argument_errors_match_cpu) {
  namespace cpu = safl::cpu;
  namespace cuda = safl::cuda;
  float* p = nullptr;
  int32_t* index = nullptr;
#define SAME_ERROR(call, substring) expect_same_error([&] { cpu::call; }, [&] { cuda::call; }, substring)
  SAME_ERROR(conv2d_forward(p, p, p, p, p, 1, 1, 3, 3, 1, 3, 3, 0, 1, 1, 1),
             "conv2d_forward: expected stride_h >= 1 but received 0");
  SAME_ERROR(conv2d_backward(p, p, p, p, p, p, p, 1, -1, 3, 3, 1, 3, 3, 1, 1, 1, 1),
             "conv2d_backward: expected Ci >= 0 but received -1");
  SAME_ERROR(conv2d_workspace_floats(1, 1, 2, 3, 1, 5, 3, 1, 1, 1, 1),
             "conv2d_workspace_floats: expected H + 2*pad_h >= kernel_h (5) but received 4");
  SAME_ERROR(conv2d_forward(p, p, p, p, p, 1, 1, 3, 3, 1, 3, 3, 1, 1, 1, -2),
             "conv2d_forward: expected pad_w >= 0 but received -2");
  SAME_ERROR(batchnorm_forward_train(p, p, p, p, p, p, p, p, 1, 3, 1, 1, 1e-5f, 0.1f),
             "batchnorm_forward_train: expected more than 1 value per channel (B*H*W) but received 1");
  SAME_ERROR(batchnorm_forward_train(p, p, p, p, p, p, p, p, 2, 3, 1, 1, 0.0f, 0.1f),
             "batchnorm_forward_train: expected eps > 0 but received 0");
  SAME_ERROR(batchnorm_forward_train(p, p, p, p, p, p, p, p, 2, 3, 1, 1, 1e-5f, 1.5f),
             "batchnorm_forward_train: expected 0 <= momentum <= 1 but received 1.5");
  SAME_ERROR(batchnorm_forward_inference(p, p, p, p, p, p, 2, -3, 1, 1, 1e-5f),
             "batchnorm_forward_inference: expected C >= 0 but received -3");
  SAME_ERROR(batchnorm_backward(p, p, p, p, p, p, p, p, 2, 3, -1, 1),
             "batchnorm_backward: expected H >= 0 but received -1");
  SAME_ERROR(relu_forward(p, p, -1), "relu_forward: expected n >= 0 but received -1");
  SAME_ERROR(relu_backward(p, p, p, -2), "relu_backward: expected n >= 0 but received -2");
  SAME_ERROR(dropout_forward(p, p, p, 4, 1.0f, 7), "dropout_forward: expected 0 <= p < 1 but received 1");
  SAME_ERROR(dropout_backward(p, p, p, -3), "dropout_backward: expected n >= 0 but received -3");
  SAME_ERROR(maxpool2x2_forward(p, index, p, 1, 1, -2, 2), "maxpool2x2_forward: expected H >= 0 but received -2");
  SAME_ERROR(maxpool2x2_backward(p, index, p, 1, 1, 65536, 65536),
             "maxpool2x2_backward: expected H*W <= 2147483647 (int32 indices) but received 4294967296");
  SAME_ERROR(bilinear_resize_forward(p, p, 1, 1, 4, 4, 0, 2), "bilinear_resize_forward: expected Ho >= 1 but received 0");
  SAME_ERROR(bilinear_resize_backward(p, p, 1, 1, 4, 0, 2, 2), "bilinear_resize_backward: expected W >= 1 but received 0");
#undef SAME_ERROR
  // The CUDA kernels index with int (checked on the host) and need their workspace.
  EXPECT_THROWS(cuda::conv2d_forward(p, p, p, p, p, int64_t(1) << 31, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0), safl::Error,
                "conv2d_forward: expected every tensor and the workspace to hold fewer than 2^30 elements on CUDA");
  const int64_t ws = cuda::conv2d_workspace_floats(8, 16, 16, 50, 16, 3, 3, 1, 1, 1, 1);
  EXPECT(ws > 0);
  EXPECT_THROWS(cuda::conv2d_backward(p, p, p, nullptr, p, p, p, 8, 16, 16, 50, 16, 3, 3, 1, 1, 1, 1), safl::Error,
                "conv2d_backward: expected a workspace of");
  EXPECT(cuda::conv2d_workspace_floats(2, 256, 2, 25, 512, 3, 3, 1, 1, 1, 1) == 0);  // enough tiles: no split
}

SAFL_CUDA_TEST(conv2d_cuda_exact_on_integers) {
  Rng rng(601);
  for (const ConvShape& s : conv_shapes()) conv_parity(s, /*integers=*/true, rng);
}

SAFL_CUDA_TEST(conv2d_cuda_parity_tf32) {
  Rng rng(602);
  for (const ConvShape& s : conv_shapes()) conv_parity(s, /*integers=*/false, rng);
}

// ---- batch norm ------------------------------------------------------------------------------

SAFL_CUDA_TEST(batchnorm_cuda_parity) {
  namespace cpu = safl::cpu;
  namespace cuda = safl::cuda;
  struct Shape {
    int64_t B, C, H, W;
  };
  Rng rng(603);
  for (const Shape s : {Shape{4, 16, 8, 25}, Shape{64, 256, 1, 1}, Shape{3, 5, 7, 9}, Shape{2, 3, 1, 1},
                        Shape{1, 4, 1, 2}, Shape{8, 4, 32, 100}, Shape{0, 4, 3, 3}, Shape{2, 0, 3, 3},
                        Shape{2, 3, 0, 5}}) {
    std::printf("    B=%lld C=%lld %lldx%lld\n", (long long)s.B, (long long)s.C, (long long)s.H, (long long)s.W);
    const size_t n = size_t(s.B * s.C * s.H * s.W), C = size_t(s.C);
    std::vector<float> x(n), gamma(C), beta(C), running_mean(C), running_var(C), dout(n);
    rng.fill_normal(x.data(), n, 2.0f);
    for (size_t i = 0; i < n; ++i) x[i] += 0.5f;  // a mean well away from 0
    rng.fill_uniform(gamma.data(), C, 0.5f, 1.5f);
    rng.fill_uniform(beta.data(), C);
    rng.fill_uniform(running_mean.data(), C);
    rng.fill_uniform(running_var.data(), C, 0.5f, 2.0f);
    rng.fill_normal(dout.data(), n);
    const float eps = safl::kBatchNormEps, momentum = safl::kBatchNormMomentum;

    // Training forward.
    std::vector<float> out(n), mean(C), inv_std(C), rm = running_mean, rv = running_var;
    cpu::batchnorm_forward_train(out.data(), mean.data(), inv_std.data(), rm.data(), rv.data(), x.data(),
                                 gamma.data(), beta.data(), s.B, s.C, s.H, s.W, eps, momentum);
    DeviceGuarded<> d_x(x), d_gamma(gamma), d_beta(beta), d_rm(running_mean), d_rv(running_var), d_dout(dout);
    DeviceGuarded<> d_out(n, kNaN), d_mean(C, kNaN), d_inv_std(C, kNaN);
    cuda::batchnorm_forward_train(d_out.data(), d_mean.data(), d_inv_std.data(), d_rm.data(), d_rv.data(), d_x.data(),
                                  d_gamma.data(), d_beta.data(), s.B, s.C, s.H, s.W, eps, momentum);
    if (s.B * s.H * s.W > 0) {
      // The statistics are double sums in another order, rounded to float: equal or one ulp apart.
      EXPECT_ALL_CLOSE(d_mean.to_host().data(), mean.data(), C, 1e-6, 1e-7);
      EXPECT_ALL_CLOSE(d_inv_std.to_host().data(), inv_std.data(), C, 1e-6, 1e-7);
      EXPECT_ALL_CLOSE(d_out.to_host().data(), out.data(), n, 1e-5, 1e-6);
    }
    EXPECT_ALL_CLOSE(d_rm.to_host().data(), rm.data(), C, 1e-6, 1e-7);  // unchanged when n = 0
    EXPECT_ALL_CLOSE(d_rv.to_host().data(), rv.data(), C, 1e-6, 1e-7);

    // Inference forward: per-element float arithmetic in the CPU's order.
    std::vector<float> inference(n);
    cpu::batchnorm_forward_inference(inference.data(), x.data(), gamma.data(), beta.data(), running_mean.data(),
                                     running_var.data(), s.B, s.C, s.H, s.W, eps);
    DeviceGuarded<> d_running_mean(running_mean), d_running_var(running_var), d_inference(n, kNaN);
    cuda::batchnorm_forward_inference(d_inference.data(), d_x.data(), d_gamma.data(), d_beta.data(),
                                      d_running_mean.data(), d_running_var.data(), s.B, s.C, s.H, s.W, eps);
    EXPECT_ALL_CLOSE(d_inference.to_host().data(), inference.data(), n, 1e-6, 1e-7);

    // Backward from the training forward's statistics (the CPU's, uploaded, so both sides start
    // from the same bits); dgamma and dbeta start non-zero; then in place (dx = dout).
    std::vector<float> dx(n), dgamma(C, 0.3f), dbeta(C, -0.2f);
    cpu::batchnorm_backward(dx.data(), dgamma.data(), dbeta.data(), mean.data(), inv_std.data(), dout.data(),
                            x.data(), gamma.data(), s.B, s.C, s.H, s.W);
    DeviceGuarded<> d_saved_mean(mean), d_saved_inv_std(inv_std), d_dx(n, kNaN), d_dgamma(C, 0.3f),
        d_dbeta(C, -0.2f), d_in_place(dout), d_dgamma2(C, 0.3f), d_dbeta2(C, -0.2f);
    cuda::batchnorm_backward(d_dx.data(), d_dgamma.data(), d_dbeta.data(), d_saved_mean.data(),
                             d_saved_inv_std.data(), d_dout.data(), d_x.data(), d_gamma.data(), s.B, s.C, s.H, s.W);
    cuda::batchnorm_backward(d_in_place.data(), d_dgamma2.data(), d_dbeta2.data(), d_saved_mean.data(),
                             d_saved_inv_std.data(), d_in_place.data(), d_x.data(), d_gamma.data(), s.B, s.C, s.H,
                             s.W);
    const std::vector<float> c_dx = d_dx.to_host();
    EXPECT_ALL_CLOSE(c_dx.data(), dx.data(), n, 1e-5, 1e-6);
    EXPECT_ALL_CLOSE(d_dgamma.to_host().data(), dgamma.data(), C, 1e-6, 1e-6);
    EXPECT_ALL_CLOSE(d_dbeta.to_host().data(), dbeta.data(), C, 1e-6, 1e-6);
    EXPECT_SAME_BITS(d_in_place.to_host(), c_dx);
    EXPECT_SAME_BITS(d_dgamma2.to_host(), d_dgamma.to_host());
    for (const auto* buffer : {&d_out, &d_mean, &d_inv_std, &d_rm, &d_rv, &d_inference, &d_dx, &d_dgamma, &d_dbeta,
                               &d_in_place})
      EXPECT_DEVICE_GUARDS(*buffer);
  }
}

// ---- ReLU and dropout ------------------------------------------------------------------------

SAFL_CUDA_TEST(activation_cuda_parity_bitwise) {
  namespace cpu = safl::cpu;
  namespace cuda = safl::cuda;
  Rng rng(604);
  // 65535 blocks of 256 cover 16 776 960 elements: the largest n makes the grid-stride loops turn.
  for (const int64_t n : {int64_t(0), int64_t(1), int64_t(1000), int64_t(65535) * 256 + 1001}) {
    std::printf("    n=%lld\n", (long long)n);
    std::vector<float> x(static_cast<size_t>(n)), dout(static_cast<size_t>(n));
    rng.fill_normal(x.data(), x.size());
    rng.fill_normal(dout.data(), dout.size());
    if (n >= 1000) {
      x[3] = 0.0f;
      x[4] = -0.0f;
      x[5] = kNaN;
      x[6] = -std::numeric_limits<float>::infinity();
    }
    // ReLU, out of place and in place; backward from the saved output, out of place and in place.
    std::vector<float> relu(x.size()), relu_dx(x.size());
    cpu::relu_forward(relu.data(), x.data(), n);
    cpu::relu_backward(relu_dx.data(), dout.data(), relu.data(), n);
    DeviceGuarded<> d_x(x), d_dout(dout), d_relu(x.size(), kNaN), d_in_place(x), d_dx(x.size(), kNaN),
        d_dx_in_place(dout);
    cuda::relu_forward(d_relu.data(), d_x.data(), n);
    cuda::relu_forward(d_in_place.data(), d_in_place.data(), n);
    cuda::relu_backward(d_dx.data(), d_dout.data(), d_relu.data(), n);
    cuda::relu_backward(d_dx_in_place.data(), d_dx_in_place.data(), d_relu.data(), n);
    EXPECT_SAME_BITS(d_relu.to_host(), relu);
    EXPECT_SAME_BITS(d_in_place.to_host(), relu);
    EXPECT_SAME_BITS(d_dx.to_host(), relu_dx);
    EXPECT_SAME_BITS(d_dx_in_place.to_host(), relu_dx);
    for (const auto* buffer : {&d_relu, &d_in_place, &d_dx, &d_dx_in_place}) EXPECT_DEVICE_GUARDS(*buffer);

    // Dropout: the same hash on both sides, so masks and outputs agree bit for bit.
    for (const float p : {0.0f, 0.1f, 0.5f, 0.9f}) {
      const uint64_t seed = rng.next();
      std::vector<float> out(x.size()), mask(x.size()), dx(x.size());
      cpu::dropout_forward(out.data(), mask.data(), x.data(), n, p, seed);
      cpu::dropout_backward(dx.data(), mask.data(), dout.data(), n);
      DeviceGuarded<> d_out(x.size(), kNaN), d_mask(x.size(), kNaN), d_out_in_place(x), d_mask2(x.size(), kNaN),
          d_dropout_dx(x.size(), kNaN), d_dropout_in_place(dout);
      cuda::dropout_forward(d_out.data(), d_mask.data(), d_x.data(), n, p, seed);
      cuda::dropout_forward(d_out_in_place.data(), d_mask2.data(), d_out_in_place.data(), n, p, seed);
      cuda::dropout_backward(d_dropout_dx.data(), d_mask.data(), d_dout.data(), n);
      cuda::dropout_backward(d_dropout_in_place.data(), d_mask.data(), d_dropout_in_place.data(), n);
      EXPECT_SAME_BITS(d_mask.to_host(), mask);
      EXPECT_SAME_BITS(d_out.to_host(), out);
      EXPECT_SAME_BITS(d_mask2.to_host(), mask);
      EXPECT_SAME_BITS(d_out_in_place.to_host(), out);
      EXPECT_SAME_BITS(d_dropout_dx.to_host(), dx);
      EXPECT_SAME_BITS(d_dropout_in_place.to_host(), dx);
      for (const auto* buffer : {&d_out, &d_mask, &d_out_in_place, &d_mask2, &d_dropout_dx, &d_dropout_in_place})
        EXPECT_DEVICE_GUARDS(*buffer);
    }
  }
}

// ---- max-pooling -----------------------------------------------------------------------------

SAFL_CUDA_TEST(maxpool_cuda_parity_bitwise) {
  namespace cpu = safl::cpu;
  namespace cuda = safl::cuda;
  struct Shape {
    int64_t B, C, H, W;
  };
  Rng rng(605);
  for (const bool ties : {false, true}) {
    for (const Shape s : {Shape{2, 3, 8, 10}, Shape{1, 1, 5, 7}, Shape{4, 16, 32, 100}, Shape{2, 5, 3, 3},
                          Shape{3, 2, 1, 6}, Shape{2, 2, 3, 1}, Shape{0, 2, 4, 4}, Shape{2, 0, 4, 4}}) {
      std::printf("    B=%lld C=%lld %lldx%lld%s\n", (long long)s.B, (long long)s.C, (long long)s.H, (long long)s.W,
                  ties ? " (ties and NaN)" : "");
      const int64_t Ho = s.H / 2, Wo = s.W / 2;
      const size_t n = size_t(s.B * s.C * s.H * s.W), m = size_t(s.B * s.C * Ho * Wo);
      std::vector<float> x(n), dout(m);
      if (ties) {
        fill_integers(rng, x);  // many equal values in a window
        for (size_t i = 0; i < n; i += 7) x[i] = kNaN;
      } else {
        rng.fill_normal(x.data(), n);
      }
      rng.fill_normal(dout.data(), m);
      std::vector<float> out(m), dx(n);
      std::vector<int32_t> argmax(m);
      cpu::maxpool2x2_forward(out.data(), argmax.data(), x.data(), s.B, s.C, s.H, s.W);
      cpu::maxpool2x2_backward(dx.data(), argmax.data(), dout.data(), s.B, s.C, s.H, s.W);
      DeviceGuarded<> d_x(x), d_dout(dout), d_out(m, kNaN), d_dx(n, kNaN);
      DeviceGuarded<int32_t> d_argmax(m, -1);
      cuda::maxpool2x2_forward(d_out.data(), d_argmax.data(), d_x.data(), s.B, s.C, s.H, s.W);
      cuda::maxpool2x2_backward(d_dx.data(), d_argmax.data(), d_dout.data(), s.B, s.C, s.H, s.W);
      EXPECT_SAME_BITS(d_out.to_host(), out);
      EXPECT_SAME_BITS(d_argmax.to_host(), argmax);
      EXPECT_SAME_BITS(d_dx.to_host(), dx);
      EXPECT_DEVICE_GUARDS(d_out);
      EXPECT_DEVICE_GUARDS(d_argmax);
      EXPECT_DEVICE_GUARDS(d_dx);
    }
  }
}

// ---- bilinear resize -------------------------------------------------------------------------

SAFL_CUDA_TEST(bilinear_resize_cuda_parity) {
  namespace cpu = safl::cpu;
  namespace cuda = safl::cuda;
  struct Shape {
    int64_t B, C, H, W, Ho, Wo;
  };
  Rng rng(606);
  for (const Shape s : {Shape{4, 3, 64, 256, 32, 64}, Shape{1, 2, 5, 7, 9, 4}, Shape{2, 1, 1, 1, 3, 5},
                        Shape{1, 1, 4, 6, 1, 1}, Shape{3, 2, 7, 5, 7, 5}, Shape{1, 1, 2, 2, 100, 77},
                        Shape{2, 3, 1, 9, 4, 3}, Shape{1, 1, 37, 53, 36, 2}, Shape{0, 3, 4, 4, 2, 2},
                        Shape{2, 0, 4, 4, 2, 2}}) {
    std::printf("    B=%lld C=%lld %lldx%lld -> %lldx%lld\n", (long long)s.B, (long long)s.C, (long long)s.H,
                (long long)s.W, (long long)s.Ho, (long long)s.Wo);
    const size_t n = size_t(s.B * s.C * s.H * s.W), m = size_t(s.B * s.C * s.Ho * s.Wo);
    std::vector<float> x(n), dout(m), out(m), dx(n);
    rng.fill_uniform(x.data(), n);
    rng.fill_uniform(dout.data(), m);
    cpu::bilinear_resize_forward(out.data(), x.data(), s.B, s.C, s.H, s.W, s.Ho, s.Wo);
    cpu::bilinear_resize_backward(dx.data(), dout.data(), s.B, s.C, s.H, s.W, s.Ho, s.Wo);
    DeviceGuarded<> d_x(x), d_dout(dout), d_out(m, kNaN), d_dx(n, kNaN);
    cuda::bilinear_resize_forward(d_out.data(), d_x.data(), s.B, s.C, s.H, s.W, s.Ho, s.Wo);
    cuda::bilinear_resize_backward(d_dx.data(), d_dout.data(), s.B, s.C, s.H, s.W, s.Ho, s.Wo);
    const std::vector<float> c_out = d_out.to_host(), c_dx = d_dx.to_host();
    // The kernels repeat the CPU's float operations in its order (same_bits reports any
    // difference); the assertion allows a last-bit difference should the CPU build contract.
    same_bits("resize out (report only)", c_out, out);
    same_bits("resize dx (report only)", c_dx, dx);
    EXPECT_ALL_CLOSE(c_out.data(), out.data(), m, 1e-6, 1e-6);
    EXPECT_ALL_CLOSE(c_dx.data(), dx.data(), n, 1e-6, 1e-6);
    EXPECT_DEVICE_GUARDS(d_out);
    EXPECT_DEVICE_GUARDS(d_dx);
  }
}

#endif  // SAFL_WITH_CUDA
