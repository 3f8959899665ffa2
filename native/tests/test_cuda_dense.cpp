// CPU-vs-CUDA parity of the dense op families: sgemm (the TF32 tensor-core path and the tiny FP32
// path), linear, layernorm, embedding with the sinusoid table and add_positions, and softmax /
// log-softmax. Each test uploads its inputs with DeviceBuffer, runs the safl::cuda op, downloads
// the result and compares it with the safl::cpu op on the same data, printing the first
// mismatches; odd, 1×1 and zero sizes, every transpose and padded or misaligned strides for sgemm,
// a large K, accumulation onto existing gradients, aliasing (dx = dout, out = x) and run-to-run
// determinism are covered. The argument checks run on the host before any CUDA call, so
// cuda_dense_argument_errors compares the CUDA ops' messages with the CPU ops' without a GPU.
//
// Note [parity tolerances for TF32]: products on the tensor-core path round A and B to TF32
// (Note [TF32 precision] in cuda/gemm.cu), so an element of C may differ from the CPU's FP32
// result by about sqrt(K) · 2^-11 · rms|a·b| (a random walk of K rounding errors). The tests allow
// kTf32Slack · sqrt(K) · 2^-10 · max|A| · max|B| · |alpha|, about 20 standard deviations for
// uniform inputs, while an indexing or layout mistake moves C by about sqrt(K) · rms|a·b|, a
// hundred times more. The bound also holds for the FP32 path of tiny products. Products of the
// linear layer get the same bound with K its reduction length (in_features for the forward,
// out_features for dx, N for dweight). The other ops are FP32 on both sides and differ only in
// summation order (tree reductions on the GPU, index order or double on the CPU).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/layernorm.h"
#include "ops/linear.h"
#include "ops/softmax.h"
#include "tests/harness.h"

#ifdef SAFL_WITH_CUDA
#include "cuda/cuda_check.h"

namespace {

using safl::cuda::DeviceBuffer;
using safl::test::Rng;

constexpr double kTf32Slack = 3.0;  // Note [parity tolerances for TF32]

double max_abs(const std::vector<float>& v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// Note [parity tolerances for TF32].
double tf32_bound(int64_t K, double a_max, double b_max, double alpha = 1.0) {
  return kTf32Slack * std::sqrt(double(K)) * std::ldexp(1.0, -10) * a_max * b_max * std::fabs(alpha);
}

// The largest |actual - expected| as a fraction of atol + rtol·|expected| (1 = at the limit).
double worst_fraction(const std::vector<float>& actual, const std::vector<float>& expected, double rtol,
                      double atol) {
  double worst = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double limit = atol + rtol * std::fabs(double(expected[i]));
    const double diff = std::fabs(double(actual[i]) - double(expected[i]));
    if (limit > 0.0) worst = std::max(worst, diff / limit);
    else if (diff > 0.0) worst = INFINITY;
  }
  return worst;
}

// The RangeError message of call(), "" when it does not throw, or a note when it throws another
// kind of error.
template <class Call>
std::string range_error_message(Call call) {
  try {
    call();
  } catch (const safl::Error& e) {
    if (e.kind() == safl::ErrorKind::Range) return e.what();
    return std::string("(not a RangeError) ") + e.what();
  }
  return "";
}

template <class CpuCall, class CudaCall>
void expect_same_range_error(CpuCall cpu_call, CudaCall cuda_call, const char* file, int line) {
  const std::string cpu_message = range_error_message(cpu_call);
  const std::string cuda_message = range_error_message(cuda_call);
  const bool same = !cpu_message.empty() && cpu_message == cuda_message;
  if (!same) std::printf("    cpu: \"%s\"\n    cuda: \"%s\"\n", cpu_message.c_str(), cuda_message.c_str());
  safl::test::expect(same, "the CUDA op throws the CPU op's RangeError", file, line);
}
#define EXPECT_SAME_RANGE_ERROR(cpu_call, cuda_call) \
  expect_same_range_error([&] { cpu_call; }, [&] { cuda_call; }, __FILE__, __LINE__)

// ---- sgemm -----------------------------------------------------------------------------------

struct GemmCase {
  int64_t M, N, K;
  bool trans_a, trans_b;
  int64_t pad_a, pad_b, pad_c;  // extra floats at the end of each stored row
  int64_t offset;               // floats before the first element of A, B and C (1 misaligns them)
  float alpha, beta;
};

// Runs one case on both backends; C's row padding (and the floats before it) must come back
// unchanged, and with beta == 0 C starts as NaN, which must not leak into the result.
void check_gemm_case(const GemmCase& c, uint64_t seed) {
  Rng rng(seed);
  const int64_t a_rows = c.trans_a ? c.K : c.M, a_cols = c.trans_a ? c.M : c.K;
  const int64_t b_rows = c.trans_b ? c.N : c.K, b_cols = c.trans_b ? c.K : c.N;
  const int64_t lda = a_cols + c.pad_a, ldb = b_cols + c.pad_b, ldc = c.N + c.pad_c;
  std::vector<float> A(size_t(c.offset + a_rows * lda)), B(size_t(c.offset + b_rows * ldb));
  std::vector<float> C(size_t(c.offset + c.M * ldc));
  rng.fill_uniform(A.data(), A.size());
  rng.fill_uniform(B.data(), B.size(), -2.0f, 2.0f);
  rng.fill_uniform(C.data(), C.size());
  if (c.beta == 0.0f)
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) C[size_t(c.offset + i * ldc + j)] = std::nanf("");

  std::vector<float> expected = C;
  safl::cpu::sgemm(expected.data() + c.offset, ldc, A.data() + c.offset, lda, c.trans_a, B.data() + c.offset, ldb,
                   c.trans_b, c.M, c.N, c.K, c.alpha, c.beta);
  DeviceBuffer<float> d_A(A), d_B(B), d_C(C);
  safl::cuda::sgemm(d_C.data() + c.offset, ldc, d_A.data() + c.offset, lda, c.trans_a, d_B.data() + c.offset, ldb,
                    c.trans_b, c.M, c.N, c.K, c.alpha, c.beta);
  const std::vector<float> got = d_C.to_host();

  double c_max = 0.0;
  for (size_t i = 0; i < C.size(); ++i)
    if (std::isfinite(C[i])) c_max = std::max(c_max, double(std::fabs(C[i])));
  const double atol = tf32_bound(c.K, max_abs(A), max_abs(B), c.alpha) + 1e-6 * std::fabs(c.beta) * c_max;
  const double rtol = 1e-6;
  const double worst = worst_fraction(got, expected, rtol, atol);
  std::printf("    %5lld x %5lld x %6lld %c%c pads %lld/%lld/%lld offset %lld alpha %g beta %g: worst %.3f of tolerance\n",
              (long long)c.M, (long long)c.N, (long long)c.K, c.trans_a ? 'T' : 'N', c.trans_b ? 'T' : 'N',
              (long long)c.pad_a, (long long)c.pad_b, (long long)c.pad_c, (long long)c.offset, c.alpha, c.beta,
              worst);
  EXPECT_ALL_CLOSE(got.data(), expected.data(), expected.size(), rtol, atol);

  // A second run gives the same bits.
  d_C.upload(C.data());
  safl::cuda::sgemm(d_C.data() + c.offset, ldc, d_A.data() + c.offset, lda, c.trans_a, d_B.data() + c.offset, ldb,
                    c.trans_b, c.M, c.N, c.K, c.alpha, c.beta);
  EXPECT(same_bits(d_C.to_host(), got));
}

struct Layout {
  int64_t pad_a, pad_b, pad_c, offset;
  float alpha, beta;
};

}  // namespace

// Shapes on both sides of the tiny-product threshold (40³ multiply-adds, Note [tiny products] in
// cuda/gemm.cu), on exact tile multiples and one past them, fewer 128 × 128 tiles than SMs (the
// 64 × 64 tiles) and more (1537 × 1531), one row (a decoding step), K = 1, and large K; every
// transpose combination, each with packed strides, odd pads (rows not 16-byte aligned: the 4-byte
// cp.async path) and pads of 4 with every pointer one float off (misaligned bases).
SAFL_CUDA_TEST(sgemm_cuda_parity) {
  struct Shape {
    int64_t M, N, K;
  };
  const Shape shapes[] = {{1, 1, 1},      {7, 5, 3},       {17, 13, 11},   {40, 40, 40},     {41, 40, 40},
                          {64, 64, 32},   {128, 128, 32},  {129, 131, 67}, {200, 77, 300},   {1, 2048, 512},
                          {1600, 97, 256}, {33, 1000, 5},  {256, 256, 1},  {1537, 1531, 67}, {64, 48, 20000},
                          {5, 3, 70000}};
  const Layout layouts[] = {{0, 0, 0, 0, 1.0f, 0.0f}, {3, 5, 7, 0, -1.5f, 0.5f}, {4, 4, 4, 1, 0.75f, 1.0f}};
  uint64_t seed = 100;
  for (const Shape& s : shapes)
    for (int trans = 0; trans < 4; ++trans)
      for (const Layout& l : layouts)
        check_gemm_case({s.M, s.N, s.K, (trans & 1) != 0, (trans & 2) != 0, l.pad_a, l.pad_b, l.pad_c, l.offset,
                         l.alpha, l.beta},
                        ++seed);
}

// K = 0 or alpha = 0 scale C by beta without reading A or B (nullptr here when K = 0); beta = 0
// gives zeros over NaN, beta = 1 leaves C alone; M = 0 or N = 0 touches nothing.
SAFL_CUDA_TEST(sgemm_cuda_zero_sizes_and_zero_alpha) {
  const int64_t M = 5, N = 3, ldc = 4;
  Rng rng(7);
  std::vector<float> C(size_t(M * ldc)), A(size_t(M * 6)), B(size_t(6 * N));
  rng.fill_uniform(C.data(), C.size());
  rng.fill_uniform(A.data(), A.size());
  rng.fill_uniform(B.data(), B.size());
  DeviceBuffer<float> d_A(A), d_B(B);
  for (float beta : {0.0f, 1.0f, -0.5f}) {
    for (int64_t K : {int64_t(0), int64_t(6)}) {
      std::vector<float> initial = C;
      if (beta == 0.0f)
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) initial[size_t(i * ldc + j)] = std::nanf("");
      const float alpha = K == 0 ? 1.0f : 0.0f;
      const float* a = K == 0 ? nullptr : A.data();
      const float* b = K == 0 ? nullptr : B.data();
      std::vector<float> expected = initial;
      safl::cpu::sgemm(expected.data(), ldc, a, 6, false, b, N, false, M, N, K, alpha, beta);
      DeviceBuffer<float> d_C(initial);
      safl::cuda::sgemm(d_C.data(), ldc, K == 0 ? nullptr : d_A.data(), 6, false, K == 0 ? nullptr : d_B.data(), N,
                        false, M, N, K, alpha, beta);
      const std::vector<float> got = d_C.to_host();
      std::printf("    K %lld alpha %g beta %g\n", (long long)K, alpha, beta);
      EXPECT_ALL_CLOSE(got.data(), expected.data(), expected.size(), 0.0, 0.0);
    }
  }
  DeviceBuffer<float> d_C(C);
  safl::cuda::sgemm(d_C.data(), ldc, d_A.data(), 6, false, d_B.data(), N, false, 0, N, 6, 1.0f, 0.0f);
  safl::cuda::sgemm(d_C.data(), ldc, d_A.data(), 6, false, d_B.data(), 0, false, M, 0, 6, 1.0f, 0.0f);
  safl::cuda::sgemm(nullptr, 0, nullptr, 0, false, nullptr, 0, false, 0, 0, 0, 1.0f, 0.0f);
  EXPECT(same_bits(d_C.to_host(), C));
}

// ---- linear ----------------------------------------------------------------------------------

SAFL_CUDA_TEST(linear_cuda_parity) {
  struct Case {
    int64_t N, I, O;
    bool bias;
  };
  uint64_t seed = 300;
  for (const Case c : {Case{1600, 256, 97, true}, Case{64, 512, 2048, true}, Case{13, 7, 5, true},
                       Case{1, 1, 1, true}, Case{300, 129, 65, false}, Case{3, 256, 97, true},
                       Case{5, 0, 3, true}, Case{0, 4, 3, true}, Case{5, 4, 0, true}}) {
    Rng rng(++seed);
    std::vector<float> x(size_t(c.N * c.I)), W(size_t(c.O * c.I)), b(size_t(c.O)), dout(size_t(c.N * c.O));
    std::vector<float> dW0(W.size()), db0(b.size());
    rng.fill_uniform(x.data(), x.size());
    rng.fill_uniform(W.data(), W.size(), -0.5f, 0.5f);
    rng.fill_uniform(b.data(), b.size());
    rng.fill_uniform(dout.data(), dout.size());
    rng.fill_uniform(dW0.data(), dW0.size());
    rng.fill_uniform(db0.data(), db0.size());
    const float* bias = c.bias ? b.data() : nullptr;

    std::vector<float> out(size_t(c.N * c.O)), dx(x.size()), dW = dW0, db = db0;
    safl::cpu::linear_forward(out.data(), x.data(), W.data(), bias, c.N, c.I, c.O);
    safl::cpu::linear_backward(dx.data(), dW.data(), c.bias ? db.data() : nullptr, dout.data(), x.data(), W.data(),
                               c.N, c.I, c.O);

    DeviceBuffer<float> d_x(x), d_W(W), d_b(b), d_dout(dout), d_out(out.size()), d_dx(dx.size()), d_dW(dW0),
        d_db(db0);
    safl::cuda::linear_forward(d_out.data(), d_x.data(), d_W.data(), c.bias ? d_b.data() : nullptr, c.N, c.I, c.O);
    safl::cuda::linear_backward(d_dx.data(), d_dW.data(), c.bias ? d_db.data() : nullptr, d_dout.data(), d_x.data(),
                                d_W.data(), c.N, c.I, c.O);
    const std::vector<float> got_out = d_out.to_host(), got_dx = d_dx.to_host(), got_dW = d_dW.to_host(),
                             got_db = d_db.to_host();

    std::printf("    N %lld in %lld out %lld bias %d\n", (long long)c.N, (long long)c.I, (long long)c.O, int(c.bias));
    const double x_max = max_abs(x), W_max = max_abs(W), dout_max = max_abs(dout);
    EXPECT_ALL_CLOSE(got_out.data(), out.data(), out.size(), 1e-6, tf32_bound(c.I, x_max, W_max) + 1e-6);
    EXPECT_ALL_CLOSE(got_dx.data(), dx.data(), dx.size(), 1e-6, tf32_bound(c.O, dout_max, W_max) + 1e-6);
    EXPECT_ALL_CLOSE(got_dW.data(), dW.data(), dW.size(), 1e-6, tf32_bound(c.N, dout_max, x_max) + 1e-6);
    // dbias: float column sums in a tree against the CPU's double sums.
    EXPECT_ALL_CLOSE(got_db.data(), db.data(), db.size(), 1e-6, 2e-7 * double(c.N + 1) * dout_max + 1e-6);

    // Without dx: dweight gets the same bits; and a rerun of the backward gives the same bits.
    DeviceBuffer<float> d_dW2(dW0), d_db2(db0);
    safl::cuda::linear_backward(nullptr, d_dW2.data(), c.bias ? d_db2.data() : nullptr, d_dout.data(), d_x.data(),
                                d_W.data(), c.N, c.I, c.O);
    EXPECT(same_bits(d_dW2.to_host(), got_dW));
    EXPECT(same_bits(d_db2.to_host(), got_db));
  }
}

// ---- layernorm -------------------------------------------------------------------------------

SAFL_CUDA_TEST(layernorm_cuda_parity) {
  struct Shape {
    int64_t N, D;
  };
  uint64_t seed = 400;
  for (const Shape s : {Shape{1600, 256}, Shape{1664, 512}, Shape{7, 1}, Shape{1, 1}, Shape{3, 1000},
                        Shape{33, 513}, Shape{5, 4099}, Shape{0, 5}}) {
    Rng rng(++seed);
    const size_t n = size_t(s.N * s.D);
    std::vector<float> x(n), gamma(size_t(s.D)), beta(size_t(s.D)), dout(n), dgamma0(gamma.size()),
        dbeta0(beta.size());
    rng.fill_normal(x.data(), n);
    for (float& v : x) v += 3.0f;  // rows whose mean is far from 0
    rng.fill_uniform(gamma.data(), gamma.size(), 0.5f, 1.5f);
    rng.fill_uniform(beta.data(), beta.size());
    rng.fill_uniform(dout.data(), n);
    rng.fill_uniform(dgamma0.data(), dgamma0.size());
    rng.fill_uniform(dbeta0.data(), dbeta0.size());

    std::vector<float> out(n), mean(size_t(s.N)), rstd(size_t(s.N)), dx(n), dgamma = dgamma0, dbeta = dbeta0;
    safl::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), gamma.data(), beta.data(), s.N,
                                 s.D);
    safl::cpu::layernorm_backward(dx.data(), dgamma.data(), dbeta.data(), dout.data(), x.data(), mean.data(),
                                  rstd.data(), gamma.data(), s.N, s.D);

    DeviceBuffer<float> d_x(x), d_gamma(gamma), d_beta(beta), d_dout(dout), d_out(n), d_mean(mean.size()),
        d_rstd(rstd.size()), d_dx(n), d_dgamma(dgamma0), d_dbeta(dbeta0);
    safl::cuda::layernorm_forward(d_out.data(), d_mean.data(), d_rstd.data(), d_x.data(), d_gamma.data(),
                                  d_beta.data(), s.N, s.D);
    // The backward takes the CPU's statistics, so that it is compared on the same inputs.
    DeviceBuffer<float> d_cpu_mean(mean), d_cpu_rstd(rstd);
    safl::cuda::layernorm_backward(d_dx.data(), d_dgamma.data(), d_dbeta.data(), d_dout.data(), d_x.data(),
                                   d_cpu_mean.data(), d_cpu_rstd.data(), d_gamma.data(), s.N, s.D);
    const std::vector<float> got_out = d_out.to_host(), got_mean = d_mean.to_host(), got_rstd = d_rstd.to_host(),
                             got_dx = d_dx.to_host(), got_dgamma = d_dgamma.to_host(),
                             got_dbeta = d_dbeta.to_host();

    std::printf("    N %lld D %lld\n", (long long)s.N, (long long)s.D);
    const double rstd_max = std::max(1.0, max_abs(rstd)), dout_max = max_abs(dout);
    EXPECT_ALL_CLOSE(got_mean.data(), mean.data(), mean.size(), 1e-6, 1e-6);
    EXPECT_ALL_CLOSE(got_rstd.data(), rstd.data(), rstd.size(), 1e-5, 0.0);
    EXPECT_ALL_CLOSE(got_out.data(), out.data(), n, 1e-5, 2e-5);
    EXPECT_ALL_CLOSE(got_dx.data(), dx.data(), n, 1e-5, 1e-5 * rstd_max * dout_max * max_abs(gamma));
    // x̂ is of order 1 (a few units at most); the column sums run over N rows.
    EXPECT_ALL_CLOSE(got_dgamma.data(), dgamma.data(), dgamma.size(), 1e-6, 1e-6 * double(s.N + 1) * dout_max);
    EXPECT_ALL_CLOSE(got_dbeta.data(), dbeta.data(), dbeta.size(), 1e-6, 2e-7 * double(s.N + 1) * dout_max);

    // dx written over dout gives the same bits, and so do the parameter gradients of a rerun.
    DeviceBuffer<float> d_grad(dout), d_dgamma2(dgamma0), d_dbeta2(dbeta0);
    safl::cuda::layernorm_backward(d_grad.data(), d_dgamma2.data(), d_dbeta2.data(), d_grad.data(), d_x.data(),
                                   d_cpu_mean.data(), d_cpu_rstd.data(), d_gamma.data(), s.N, s.D);
    EXPECT(same_bits(d_grad.to_host(), got_dx));
    EXPECT(same_bits(d_dgamma2.to_host(), got_dgamma));
    EXPECT(same_bits(d_dbeta2.to_host(), got_dbeta));
  }
}

// ---- embedding -------------------------------------------------------------------------------

// Forward is a copy and the backward adds in the CPU's order (Note [embedding backward by table
// row] in cuda/embedding.cu): both match to the bit.
SAFL_CUDA_TEST(embedding_cuda_parity) {
  struct Shape {
    int64_t N, rows, D;
  };
  uint64_t seed = 500;
  for (const Shape s : {Shape{1664, 98, 256}, Shape{3000, 5, 33}, Shape{1, 1, 1}, Shape{7, 3, 0}, Shape{0, 4, 8},
                        Shape{0, 0, 8}}) {
    Rng rng(++seed);
    std::vector<int32_t> ids(size_t(s.N));
    for (auto& id : ids) id = int32_t(rng.next() % uint64_t(s.rows));
    std::vector<float> table(size_t(s.rows * s.D)), dout(size_t(s.N * s.D)), dtable0(table.size());
    rng.fill_normal(table.data(), table.size());
    rng.fill_normal(dout.data(), dout.size());
    rng.fill_normal(dtable0.data(), dtable0.size());

    std::vector<float> out(dout.size()), dtable = dtable0;
    safl::cpu::embedding_forward(out.data(), ids.data(), table.data(), s.N, s.rows, s.D);
    safl::cpu::embedding_backward(dtable.data(), dout.data(), ids.data(), s.N, s.rows, s.D);

    DeviceBuffer<int32_t> d_ids(ids);
    DeviceBuffer<float> d_table(table), d_dout(dout), d_out(out.size()), d_dtable(dtable0);
    safl::cuda::embedding_forward(d_out.data(), d_ids.data(), d_table.data(), s.N, s.rows, s.D);
    safl::cuda::embedding_backward(d_dtable.data(), d_dout.data(), d_ids.data(), s.N, s.rows, s.D);
    std::printf("    N %lld rows %lld D %lld\n", (long long)s.N, (long long)s.rows, (long long)s.D);
    const std::vector<float> got_out = d_out.to_host(), got_dtable = d_dtable.to_host();
    EXPECT_ALL_CLOSE(got_out.data(), out.data(), out.size(), 0.0, 0.0);
    EXPECT_ALL_CLOSE(got_dtable.data(), dtable.data(), dtable.size(), 0.0, 0.0);
  }
}

// The first bad id and its position, as on the CPU, and nothing written.
SAFL_CUDA_TEST(embedding_cuda_id_errors) {
  const int64_t N = 9, rows = 4, D = 3;
  std::vector<int32_t> ids = {0, 1, 2, -1, 3, 7, 0, 1, 2};
  std::vector<float> table(size_t(rows * D), 1.0f), sentinel(size_t(N * D), 42.0f);
  DeviceBuffer<int32_t> d_ids(ids);
  DeviceBuffer<float> d_table(table), d_out(sentinel), d_dtable(table), d_dout(sentinel);
  EXPECT_SAME_RANGE_ERROR(
      safl::cpu::embedding_forward(sentinel.data(), ids.data(), table.data(), N, rows, D),
      safl::cuda::embedding_forward(d_out.data(), d_ids.data(), d_table.data(), N, rows, D));
  EXPECT_SAME_RANGE_ERROR(
      safl::cpu::embedding_backward(table.data(), sentinel.data(), ids.data(), N, rows, D),
      safl::cuda::embedding_backward(d_dtable.data(), d_dout.data(), d_ids.data(), N, rows, D));
  EXPECT_THROWS(safl::cuda::embedding_forward(d_out.data(), d_ids.data(), d_table.data(), N, rows, D), safl::Error,
                "embedding_forward: expected ids in [0, 4) but received -1 at position 3");
  ids[3] = 0;
  d_ids.upload(ids.data());
  EXPECT_THROWS(safl::cuda::embedding_backward(d_dtable.data(), d_dout.data(), d_ids.data(), N, rows, D),
                safl::Error, "embedding_backward: expected ids in [0, 4) but received 7 at position 5");
  EXPECT_THROWS(safl::cuda::embedding_forward(d_out.data(), d_ids.data(), d_table.data(), N, 0, D), safl::Error,
                "embedding_forward: expected ids in [0, 0) but received 0 at position 0");
  EXPECT(same_bits(d_out.to_host(), sentinel));
  EXPECT(same_bits(d_dtable.to_host(), table));
}

SAFL_CUDA_TEST(sinusoid_table_and_add_positions_cuda_parity) {
  struct TableShape {
    int64_t T, D;
  };
  for (const TableShape s : {TableShape{26, 256}, TableShape{26, 512}, TableShape{1, 1}, TableShape{5, 7},
                             TableShape{0, 4}, TableShape{3, 0}}) {
    std::vector<float> table(size_t(s.T * s.D));
    safl::cpu::sinusoid_table(table.data(), s.T, s.D);
    DeviceBuffer<float> d_table(table.size());
    safl::cuda::sinusoid_table(d_table.data(), s.T, s.D);
    const std::vector<float> got = d_table.to_host();
    std::printf("    sinusoid T %lld D %lld\n", (long long)s.T, (long long)s.D);
    // Both compute in double and round once; values lie in [-1, 1].
    EXPECT_ALL_CLOSE(got.data(), table.data(), table.size(), 0.0, 1.2e-7);
  }
  struct Shape {
    int64_t B, T, D;
    float scale;
  };
  uint64_t seed = 600;
  for (const Shape s : {Shape{64, 25, 256, 16.0f}, Shape{2, 3, 5, 1.0f}, Shape{1, 1, 1, -2.5f}, Shape{0, 4, 3, 1.0f},
                        Shape{3, 0, 3, 1.0f}, Shape{3, 4, 0, 1.0f}}) {
    Rng rng(++seed);
    std::vector<float> x(size_t(s.B * s.T * s.D)), positions(size_t(s.T * s.D));
    rng.fill_normal(x.data(), x.size());
    rng.fill_uniform(positions.data(), positions.size());
    std::vector<float> out(x.size());
    safl::cpu::add_positions(out.data(), x.data(), positions.data(), s.B, s.T, s.D, s.scale);
    DeviceBuffer<float> d_x(x), d_positions(positions), d_out(x.size());
    safl::cuda::add_positions(d_out.data(), d_x.data(), d_positions.data(), s.B, s.T, s.D, s.scale);
    safl::cuda::add_positions(d_x.data(), d_x.data(), d_positions.data(), s.B, s.T, s.D, s.scale);  // in place
    std::printf("    add_positions B %lld T %lld D %lld scale %g\n", (long long)s.B, (long long)s.T, (long long)s.D,
                s.scale);
    const std::vector<float> got = d_out.to_host();
    // One multiply and one add, which the GPU may fuse: a rounding of the largest term apart.
    const double atol = std::ldexp(1.0, -23) * (std::fabs(s.scale) * max_abs(x) + max_abs(positions));
    EXPECT_ALL_CLOSE(got.data(), out.data(), out.size(), 0.0, atol);
    EXPECT(same_bits(d_x.to_host(), got));
  }
}

// ---- softmax ---------------------------------------------------------------------------------

SAFL_CUDA_TEST(softmax_cuda_parity) {
  struct Shape {
    int64_t N, C;
  };
  uint64_t seed = 700;
  for (const Shape s : {Shape{1664, 97}, Shape{3, 1}, Shape{1, 1}, Shape{5, 1000}, Shape{2, 4097}, Shape{7, 129},
                        Shape{0, 5}}) {
    Rng rng(++seed);
    const size_t n = size_t(s.N * s.C);
    std::vector<float> x(n), dout(n);
    rng.fill_normal(x.data(), n, 3.0f);
    rng.fill_uniform(dout.data(), n);
    if (s.N >= 3) {  // rows of huge logits: one at +1e4 and one at -1e4 among normal values
      x[0] = 1e4f;
      x[size_t(s.C)] = -1e4f;
      for (int64_t c = 0; c < s.C; ++c) x[size_t(2 * s.C + c)] = c % 2 ? 1e4f : -1e4f;
    }
    std::vector<float> out(n), probs(n), dx(n);
    safl::cpu::log_softmax_forward(out.data(), x.data(), s.N, s.C);
    safl::cpu::softmax_forward(probs.data(), x.data(), s.N, s.C);
    safl::cpu::log_softmax_backward(dx.data(), dout.data(), out.data(), s.N, s.C);

    DeviceBuffer<float> d_x(x), d_dout(dout), d_out(n), d_probs(n), d_dx(n), d_cpu_out(out);
    safl::cuda::log_softmax_forward(d_out.data(), d_x.data(), s.N, s.C);
    safl::cuda::softmax_forward(d_probs.data(), d_x.data(), s.N, s.C);
    // The backward takes the CPU's forward output, so that it is compared on the same inputs.
    safl::cuda::log_softmax_backward(d_dx.data(), d_dout.data(), d_cpu_out.data(), s.N, s.C);
    const std::vector<float> got_out = d_out.to_host(), got_probs = d_probs.to_host(), got_dx = d_dx.to_host();

    std::printf("    N %lld C %lld\n", (long long)s.N, (long long)s.C);
    EXPECT_FINITE(got_out.data(), n);
    EXPECT_ALL_CLOSE(got_out.data(), out.data(), n, 1e-6, 1e-5);
    EXPECT_ALL_CLOSE(got_probs.data(), probs.data(), n, 1e-5, 1e-7);
    EXPECT_ALL_CLOSE(got_dx.data(), dx.data(), n, 1e-5, 4e-7 * double(s.C) * max_abs(dout) + 1e-7);

    DeviceBuffer<float> d_grad(dout);  // dx written over dout: the same bits
    safl::cuda::log_softmax_backward(d_grad.data(), d_grad.data(), d_cpu_out.data(), s.N, s.C);
    EXPECT(same_bits(d_grad.to_host(), got_dx));
  }
}

// ---- argument checks (host only: these run without a GPU) -------------------------------------

SAFL_TEST(cuda_dense_argument_errors) {
  namespace cpu = safl::cpu;
  namespace cuda = safl::cuda;
  float* p = nullptr;
  const int32_t* ids = nullptr;
  EXPECT_SAME_RANGE_ERROR(cpu::sgemm(p, 3, p, 3, false, p, 3, false, -1, 2, 3, 1.0f, 0.0f),
                          cuda::sgemm(p, 3, p, 3, false, p, 3, false, -1, 2, 3, 1.0f, 0.0f));
  EXPECT_SAME_RANGE_ERROR(cpu::sgemm(p, 4, p, 4, false, p, 4, false, 2, 4, 5, 1.0f, 0.0f),
                          cuda::sgemm(p, 4, p, 4, false, p, 4, false, 2, 4, 5, 1.0f, 0.0f));
  EXPECT_SAME_RANGE_ERROR(cpu::sgemm(p, 4, p, 1, true, p, 4, false, 2, 4, 5, 1.0f, 0.0f),
                          cuda::sgemm(p, 4, p, 1, true, p, 4, false, 2, 4, 5, 1.0f, 0.0f));
  EXPECT_SAME_RANGE_ERROR(cpu::sgemm(p, 4, p, 5, false, p, 2, true, 2, 4, 5, 1.0f, 0.0f),
                          cuda::sgemm(p, 4, p, 5, false, p, 2, true, 2, 4, 5, 1.0f, 0.0f));
  EXPECT_SAME_RANGE_ERROR(cpu::sgemm(p, 3, p, 5, false, p, 4, false, 2, 4, 5, 1.0f, 0.0f),
                          cuda::sgemm(p, 3, p, 5, false, p, 4, false, 2, 4, 5, 1.0f, 0.0f));
  EXPECT_THROWS(cuda::sgemm(p, 3, p, 5, false, p, 4, false, 2, 4, 5, 1.0f, 0.0f), safl::Error,
                "sgemm: expected ldc >= N (4) but received 3");

  EXPECT_SAME_RANGE_ERROR(cpu::linear_forward(p, p, p, p, -1, 2, 3), cuda::linear_forward(p, p, p, p, -1, 2, 3));
  EXPECT_SAME_RANGE_ERROR(cpu::linear_forward(p, p, p, p, 1, -2, 3), cuda::linear_forward(p, p, p, p, 1, -2, 3));
  EXPECT_SAME_RANGE_ERROR(cpu::linear_backward(p, p, p, p, p, p, 1, 2, -3),
                          cuda::linear_backward(p, p, p, p, p, p, 1, 2, -3));

  EXPECT_SAME_RANGE_ERROR(cpu::layernorm_forward(p, p, p, p, p, p, 2, 0),
                          cuda::layernorm_forward(p, p, p, p, p, p, 2, 0));
  EXPECT_SAME_RANGE_ERROR(cpu::layernorm_forward(p, p, p, p, p, p, -2, 4),
                          cuda::layernorm_forward(p, p, p, p, p, p, -2, 4));
  EXPECT_SAME_RANGE_ERROR(cpu::layernorm_forward(p, p, p, p, p, p, 2, 4, 0.0f),
                          cuda::layernorm_forward(p, p, p, p, p, p, 2, 4, 0.0f));
  EXPECT_SAME_RANGE_ERROR(cpu::layernorm_backward(p, p, p, p, p, p, p, p, -3, 4),
                          cuda::layernorm_backward(p, p, p, p, p, p, p, p, -3, 4));
  EXPECT_THROWS(cuda::layernorm_backward(p, p, p, p, p, p, p, p, 3, 0), safl::Error,
                "layernorm_backward: expected D >= 1 but received 0");

  EXPECT_SAME_RANGE_ERROR(cpu::embedding_forward(p, ids, p, -1, 2, 3), cuda::embedding_forward(p, ids, p, -1, 2, 3));
  EXPECT_SAME_RANGE_ERROR(cpu::embedding_forward(p, ids, p, 1, -2, 3), cuda::embedding_forward(p, ids, p, 1, -2, 3));
  EXPECT_SAME_RANGE_ERROR(cpu::embedding_backward(p, p, ids, 1, 2, -3),
                          cuda::embedding_backward(p, p, ids, 1, 2, -3));
  EXPECT_SAME_RANGE_ERROR(cpu::sinusoid_table(p, -1, 4), cuda::sinusoid_table(p, -1, 4));
  EXPECT_SAME_RANGE_ERROR(cpu::sinusoid_table(p, 1, -4), cuda::sinusoid_table(p, 1, -4));
  EXPECT_SAME_RANGE_ERROR(cpu::add_positions(p, p, p, -1, 2, 3), cuda::add_positions(p, p, p, -1, 2, 3));
  EXPECT_SAME_RANGE_ERROR(cpu::add_positions(p, p, p, 1, 2, 3, INFINITY),
                          cuda::add_positions(p, p, p, 1, 2, 3, INFINITY));
  EXPECT_SAME_RANGE_ERROR(cpu::add_positions(p, p, p, 1, 2, 3, NAN), cuda::add_positions(p, p, p, 1, 2, 3, NAN));

  EXPECT_SAME_RANGE_ERROR(cpu::log_softmax_forward(p, p, 2, 0), cuda::log_softmax_forward(p, p, 2, 0));
  EXPECT_SAME_RANGE_ERROR(cpu::log_softmax_backward(p, p, p, -2, 3), cuda::log_softmax_backward(p, p, p, -2, 3));
  EXPECT_SAME_RANGE_ERROR(cpu::softmax_forward(p, p, 2, 0), cuda::softmax_forward(p, p, 2, 0));
  EXPECT_THROWS(cuda::softmax_forward(p, p, int64_t(1) << 31, 3), safl::Error,
                "softmax_forward: expected N <= 2147483647 on CUDA but received 2147483648");
}

#endif  // SAFL_WITH_CUDA
