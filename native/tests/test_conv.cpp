// conv2d: gradient checks of x, weight and bias over kernel/stride/padding combinations, the
// im2col + GEMM path (whole batch, chunks of images, bands of rows) and the Winograd forward
// against the direct-loop reference at several thread counts, hand-computed cases, the workspace
// size, zero-size shapes and argument errors.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"
#include "ops/conv.h"
#include "tests/harness.h"

namespace {

using safl::test::Guarded;
using safl::test::Rng;

struct ConvCase {
  int64_t B, Ci, H, W, Co, kh, kw, sh, sw, ph, pw;
  bool bias;

  int64_t Ho() const { return safl::conv2d_output_size(H, kh, sh, ph); }
  int64_t Wo() const { return safl::conv2d_output_size(W, kw, sw, pw); }
  size_t x_size() const { return size_t(B * Ci * H * W); }
  size_t w_size() const { return size_t(Co * Ci * kh * kw); }
  size_t out_size() const { return size_t(B * Co * Ho() * Wo()); }
  int64_t workspace() const {
    return safl::cpu::conv2d_workspace_floats(B, Ci, H, W, Co, kh, kw, sh, sw, ph, pw);
  }
  void forward(float* out, float* ws, const float* x, const float* w, const float* b) const {
    safl::cpu::conv2d_forward(out, ws, x, w, bias ? b : nullptr, B, Ci, H, W, Co, kh, kw, sh, sw, ph, pw);
  }
  void backward(float* dx, float* dw, float* db, float* ws, const float* dout, const float* x,
                const float* w) const {
    safl::cpu::conv2d_backward(dx, dw, bias ? db : nullptr, ws, dout, x, w, B, Ci, H, W, Co, kh, kw,
                               sh, sw, ph, pw);
  }
  void forward_reference(float* out, const float* x, const float* w, const float* b) const {
    safl::cpu::conv2d_forward_reference(out, x, w, bias ? b : nullptr, B, Ci, H, W, Co, kh, kw, sh,
                                        sw, ph, pw);
  }
  void backward_reference(float* dx, float* dw, float* db, const float* dout, const float* x,
                          const float* w) const {
    safl::cpu::conv2d_backward_reference(dx, dw, bias ? db : nullptr, dout, x, w, B, Ci, H, W, Co,
                                         kh, kw, sh, sw, ph, pw);
  }
};

// The shapes the model uses (3×3 pad 1, 1×1 carrying a stride) and awkward ones: non-square
// kernels and strides, odd sizes, padding wider than the kernel reach, a single image.
const std::vector<ConvCase>& cases() {
  static const std::vector<ConvCase> all = {
      {2, 3, 4, 5, 4, 1, 1, 1, 1, 0, 0, true},   // pointwise, batched
      {1, 3, 4, 5, 4, 1, 1, 1, 1, 0, 0, true},   // pointwise, B = 1: x is col
      {2, 2, 5, 6, 3, 3, 3, 1, 1, 1, 1, true},   // 3×3 same
      {2, 3, 7, 9, 2, 3, 3, 2, 2, 1, 1, true},   // 3×3 stride 2, odd sizes
      {2, 3, 6, 5, 4, 1, 1, 2, 2, 0, 0, false},  // 1×1 carrying the stride
      {1, 2, 5, 7, 3, 2, 3, 2, 1, 0, 1, true},   // non-square kernel, stride and padding
      {3, 1, 4, 3, 2, 1, 1, 1, 1, 1, 2, true},   // padding beyond the kernel: borders are bias
      {2, 2, 8, 7, 3, 3, 2, 3, 2, 2, 0, false},  // stride larger than the kernel
      {1, 2, 3, 3, 2, 3, 3, 1, 1, 0, 0, true},   // kernel covers the whole input: 1×1 output
      // Short maps, where kernel rows see only padding (Note [kernel rows that only see padding]),
      // wide enough to be cut into bands:
      {2, 3, 1, 70, 4, 3, 3, 1, 1, 1, 1, true},   // H = 1: the middle kernel row alone
      {2, 3, 2, 40, 3, 3, 3, 1, 1, 1, 1, false},  // H = 2: each output row misses one kernel row
      {1, 2, 2, 70, 3, 5, 3, 1, 1, 2, 1, true},   // 5×3 kernel, H = 2, B = 1
      {2, 2, 1, 64, 2, 3, 1, 1, 1, 3, 0, true},   // padding so wide that some rows see no input
      {2, 3, 1, 7, 4, 3, 3, 1, 1, 1, 1, true},    // H = 1 but too few columns: the whole GEMM
  };
  return all;
}

SAFL_TEST(conv2d_gradcheck) {
  Rng rng(11);
  for (const ConvCase& c : cases()) {
    std::vector<float> x(c.x_size()), w(c.w_size()), b(c.Co), proj(c.out_size());
    rng.fill_uniform(x.data(), x.size());
    rng.fill_uniform(w.data(), w.size(), -0.5f, 0.5f);
    rng.fill_uniform(b.data(), b.size());
    rng.fill_uniform(proj.data(), proj.size());
    Guarded out(c.out_size()), ws(size_t(c.workspace())), dx(c.x_size()), dw(c.w_size()), db(c.Co);
    auto loss = [&] {
      c.forward(out.data(), ws.data(), x.data(), w.data(), b.data());
      return safl::test::dot(out.data(), proj.data(), proj.size());
    };
    auto backward = [&] {
      dw.fill(0.0f);
      db.fill(0.0f);
      c.backward(dx.data(), dw.data(), db.data(), ws.data(), proj.data(), x.data(), w.data());
    };
    std::vector<safl::test::GradVar> vars = {{"x", x.data(), dx.data(), x.size()},
                                             {"weight", w.data(), dw.data(), w.size()}};
    if (c.bias) vars.push_back({"bias", b.data(), db.data(), b.size()});
    const std::string name = "conv2d " + std::to_string(c.kh) + "x" + std::to_string(c.kw) + " s" +
                             std::to_string(c.sh) + "," + std::to_string(c.sw) + " p" +
                             std::to_string(c.ph) + "," + std::to_string(c.pw) + " B" + std::to_string(c.B);
    // conv2d is linear in each input, so a large step adds no truncation error and less rounding.
    safl::test::GradCheckOptions options;
    options.eps = 1e-2;
    safl::test::gradcheck(name, vars, loss, backward, options);
    EXPECT_GUARDS(out, "out");
    EXPECT_GUARDS(ws, "workspace");
    EXPECT_GUARDS(dx, "dx");
    EXPECT_GUARDS(dw, "dweight");
    EXPECT_GUARDS(db, "dbias");
    EXPECT_FINITE(out.data(), out.size());
    EXPECT_FINITE(dx.data(), dx.size());
  }
}

// Note [Winograd rows] in conv.cpp: whether the forward of c takes the F(4, 3) path.
bool takes_winograd(const ConvCase& c) {
  return c.kh == 3 && c.kw == 3 && c.sh == 1 && c.sw == 1 && c.ph == 1 && c.pw == 1 && c.Ci >= 64 &&
         c.Co > 0 && c.B * c.Ho() * ((c.Wo() + 3) / 4) >= 96;
}

// The largest Σ |x|·|w| over the terms of one output: the scale of a sum's rounding error.
double largest_term_sum(const ConvCase& c, const std::vector<float>& x, const std::vector<float>& w) {
  std::vector<float> ax(x.size()), aw(w.size()), sums(c.out_size());
  std::transform(x.begin(), x.end(), ax.begin(), [](float v) { return std::abs(v); });
  std::transform(w.begin(), w.end(), aw.begin(), [](float v) { return std::abs(v); });
  safl::cpu::conv2d_forward_reference(sums.data(), ax.data(), aw.data(), nullptr, c.B, c.Ci, c.H, c.W, c.Co, c.kh,
                                      c.kw, c.sh, c.sw, c.ph, c.pw);
  return sums.empty() ? 0.0 : double(*std::max_element(sums.begin(), sums.end()));
}

// The forward's absolute tolerance: im2col's GEMM rounds as the reference's sum does; F(4, 3)'s
// transforms scale values by up to 25 before the products and 8 after, which the error bound
// of a sum (about its length · eps · Σ|terms|, far less in practice) grows with: 2e-6 · Σ|terms|
// is some 30 units of rounding of the largest sum.
double forward_atol(const ConvCase& c, const std::vector<float>& x, const std::vector<float>& w) {
  return takes_winograd(c) ? std::max(1e-5, 2e-6 * largest_term_sum(c, x, w)) : 1e-5;
}

SAFL_TEST(conv2d_fast_matches_reference) {
  std::vector<ConvCase> all = cases();
  all.push_back({3, 8, 12, 20, 16, 3, 3, 1, 1, 1, 1, true});  // enough work to split into chunks
  all.push_back({4, 16, 6, 10, 8, 1, 1, 1, 1, 0, 0, false});
  all.push_back({1, 8, 9, 11, 5, 3, 3, 2, 1, 1, 1, true});
  all.push_back({10, 16, 16, 32, 8, 3, 3, 1, 1, 1, 1, true});  // forward in chunks of images
  all.push_back({8, 8, 64, 128, 8, 1, 1, 1, 1, 0, 0, false});  // pointwise, in chunks
  all.push_back({4, 16, 2, 25, 8, 3, 3, 1, 1, 1, 1, false});  // the last ResNet stages' maps
  all.push_back({3, 16, 1, 25, 8, 3, 3, 1, 1, 1, 1, true});
  Rng rng(12);
  for (int threads : {1, 2, 3}) {
    safl::set_num_threads(threads);
    for (const ConvCase& c : all) {
      std::vector<float> x(c.x_size()), w(c.w_size()), b(c.Co), dout(c.out_size());
      rng.fill_uniform(x.data(), x.size());
      rng.fill_uniform(w.data(), w.size());
      rng.fill_uniform(b.data(), b.size());
      rng.fill_uniform(dout.data(), dout.size());
      Guarded out(c.out_size()), out_ref(c.out_size()), ws(size_t(c.workspace()));
      c.forward(out.data(), ws.data(), x.data(), w.data(), b.data());
      c.forward_reference(out_ref.data(), x.data(), w.data(), b.data());
      EXPECT_ALL_CLOSE(out.data(), out_ref.data(), out.size(), 1e-4, forward_atol(c, x, w));

      // dweight and dbias start non-zero: backward must add to them.
      Guarded dx(c.x_size()), dx_ref(c.x_size()), dw(c.w_size(), 0.5f), dw_ref(c.w_size(), 0.5f),
          db(c.Co, -0.25f), db_ref(c.Co, -0.25f);
      c.backward(dx.data(), dw.data(), db.data(), ws.data(), dout.data(), x.data(), w.data());
      c.backward_reference(dx_ref.data(), dw_ref.data(), db_ref.data(), dout.data(), x.data(), w.data());
      // The reference sums each weight's gradient in float over B·Ho·Wo terms: its rounding grows
      // with that count, which the large cases (thousands of terms) need room for.
      const double dw_atol = 1e-5 * std::max(1.0, double(c.B * c.Ho() * c.Wo()) / 1000.0);
      EXPECT_ALL_CLOSE(dx.data(), dx_ref.data(), dx.size(), 1e-4, 1e-5);
      EXPECT_ALL_CLOSE(dw.data(), dw_ref.data(), dw.size(), 1e-4, dw_atol);
      EXPECT_ALL_CLOSE(db.data(), db_ref.data(), db.size(), 1e-4, 1e-5);

      // Without dx: the weight gradient is the same, dx untouched.
      Guarded dw_only(c.w_size(), 0.5f);
      c.backward(nullptr, dw_only.data(), nullptr, ws.data(), dout.data(), x.data(), w.data());
      EXPECT_ALL_CLOSE(dw_only.data(), dw_ref.data(), dw.size(), 1e-4, dw_atol);

      EXPECT_GUARDS(out, "out");
      EXPECT_GUARDS(ws, "workspace");
      EXPECT_GUARDS(dx, "dx");
      EXPECT_GUARDS(dw, "dweight");
      EXPECT_GUARDS(db, "dbias");
      EXPECT_GUARDS(dw_only, "dweight without dx");
    }
  }
  safl::set_num_threads(safl::hardware_threads());
}

SAFL_TEST(conv2d_winograd_matches_reference) {
  // Note [Winograd rows]: rows of 25 (a last tile of 1), 32, 50, 3 (one short tile) and 4 columns;
  // maps of 1 and 2 rows (bands), 3 and more (the whole kernel, zero rows at the borders); chunks
  // spread over the threads and wide pieces; one image; the model's channel counts.
  const std::vector<ConvCase> all = {
      {64, 64, 1, 25, 8, 3, 3, 1, 1, 1, 1, true},   // H = 1: the middle kernel row
      {32, 64, 2, 25, 8, 3, 3, 1, 1, 1, 1, false},  // H = 2: two bands
      {8, 64, 3, 32, 12, 3, 3, 1, 1, 1, 1, true},
      {6, 96, 4, 25, 40, 3, 3, 1, 1, 1, 1, true},
      {1, 64, 16, 50, 16, 3, 3, 1, 1, 1, 1, true},  // one image
      {64, 64, 4, 3, 8, 3, 3, 1, 1, 1, 1, true},    // a row shorter than a tile
      {40, 64, 3, 4, 8, 3, 3, 1, 1, 1, 1, false},   // one whole tile per row
      {64, 128, 2, 25, 64, 3, 3, 1, 1, 1, 1, true}, // pieces: products too wide for chunks
      {16, 256, 1, 25, 128, 3, 3, 1, 1, 1, 1, true},
      {24, 64, 8, 50, 16, 3, 3, 1, 1, 1, 1, false},  // chunks spread over the threads
  };
  Rng rng(15);
  for (int threads : {1, 2}) {
    safl::set_num_threads(threads);
    for (const ConvCase& c : all) {
      EXPECT(takes_winograd(c));
      std::vector<float> x(c.x_size()), w(c.w_size()), b(c.Co);
      rng.fill_uniform(x.data(), x.size());
      rng.fill_uniform(w.data(), w.size());
      rng.fill_uniform(b.data(), b.size());
      Guarded out(c.out_size(), std::nanf("")), out_ref(c.out_size()), ws(size_t(c.workspace()));
      c.forward(out.data(), ws.data(), x.data(), w.data(), b.data());
      c.forward_reference(out_ref.data(), x.data(), w.data(), b.data());
      EXPECT_ALL_CLOSE(out.data(), out_ref.data(), out.size(), 1e-4, forward_atol(c, x, w));
      EXPECT_GUARDS(out, "out");
      EXPECT_GUARDS(ws, "workspace");
    }
  }
  safl::set_num_threads(safl::hardware_threads());
}

SAFL_TEST(conv2d_chunks_same_bits_for_any_thread_count) {
  // A batch in chunks of images (Note [images in chunks] in conv.cpp), im2col's and the Winograd
  // forward's (in chunks and in pieces): forward and backward give the same bits whatever the
  // number of threads.
  Rng rng(14);
  for (const ConvCase& c : {ConvCase{10, 16, 16, 32, 8, 3, 3, 1, 1, 1, 1, true},
                            ConvCase{24, 64, 8, 50, 16, 3, 3, 1, 1, 1, 1, true},
                            ConvCase{64, 128, 2, 25, 64, 3, 3, 1, 1, 1, 1, true}}) {
    std::vector<float> x(c.x_size()), w(c.w_size()), b(c.Co), dout(c.out_size());
    rng.fill_uniform(x.data(), x.size());
    rng.fill_uniform(w.data(), w.size());
    rng.fill_uniform(b.data(), b.size());
    rng.fill_uniform(dout.data(), dout.size());
    std::vector<float> first_out, first_dx, first_dw;
    for (int threads : {1, 2, 3}) {
      safl::set_num_threads(threads);
      Guarded out(c.out_size()), ws(size_t(c.workspace())), dx(c.x_size()), dw(c.w_size(), 0.5f), db(c.Co, 0.0f);
      c.forward(out.data(), ws.data(), x.data(), w.data(), b.data());
      c.backward(dx.data(), dw.data(), db.data(), ws.data(), dout.data(), x.data(), w.data());
      if (first_out.empty()) {
        first_out.assign(out.data(), out.data() + out.size());
        first_dx.assign(dx.data(), dx.data() + dx.size());
        first_dw.assign(dw.data(), dw.data() + dw.size());
      }
      EXPECT_ALL_CLOSE(out.data(), first_out.data(), out.size(), 0.0, 0.0);
      EXPECT_ALL_CLOSE(dx.data(), first_dx.data(), dx.size(), 0.0, 0.0);
      EXPECT_ALL_CLOSE(dw.data(), first_dw.data(), dw.size(), 0.0, 0.0);
      EXPECT_GUARDS(ws, "workspace");
      EXPECT_GUARDS(dw, "dweight");
    }
    safl::set_num_threads(safl::hardware_threads());
  }
}

SAFL_TEST(conv2d_hand_computed) {
  // A 3×3 all-ones kernel with padding 1 sums each 3×3 neighbourhood of 1..9.
  const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const float w[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  const float bias[1] = {0.5f};
  const float expected[9] = {12.5f, 21.5f, 16.5f, 27.5f, 45.5f, 33.5f, 24.5f, 39.5f, 28.5f};
  Guarded out(9), ws(size_t(safl::cpu::conv2d_workspace_floats(1, 1, 3, 3, 1, 3, 3, 1, 1, 1, 1)));
  safl::cpu::conv2d_forward(out.data(), ws.data(), x, w, bias, 1, 1, 3, 3, 1, 3, 3, 1, 1, 1, 1);
  EXPECT_ALL_CLOSE(out.data(), expected, 9, 0.0, 1e-6);
  // Stride 2 keeps the corners: 12, 16, 24, 28.
  Guarded corners(4), ws2(size_t(safl::cpu::conv2d_workspace_floats(1, 1, 3, 3, 1, 3, 3, 2, 2, 1, 1)));
  safl::cpu::conv2d_forward(corners.data(), ws2.data(), x, w, nullptr, 1, 1, 3, 3, 1, 3, 3, 2, 2, 1, 1);
  const float expected_corners[4] = {12, 16, 24, 28};
  EXPECT_ALL_CLOSE(corners.data(), expected_corners, 4, 0.0, 1e-6);
  // Backward of the all-ones kernel with dout = 1: dx counts the windows covering each pixel.
  const float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  const float coverage[9] = {4, 6, 4, 6, 9, 6, 4, 6, 4};
  Guarded dx(9), dw(9, 0.0f), db(1, 0.0f);
  safl::cpu::conv2d_backward(dx.data(), dw.data(), db.data(), ws.data(), ones, x, w, 1, 1, 3, 3, 1,
                             3, 3, 1, 1, 1, 1);
  EXPECT_ALL_CLOSE(dx.data(), coverage, 9, 0.0, 1e-6);
  // dweight[ki, kj] sums the input shifted by (ki − 1, kj − 1): the centre sees all of 1..9.
  const float dw_expected[9] = {12, 21, 16, 27, 45, 33, 24, 39, 28};
  EXPECT_ALL_CLOSE(dw.data(), dw_expected, 9, 0.0, 1e-5);
  EXPECT_NEAR(db[0], 9.0, 1e-6);
  EXPECT_GUARDS(out, "out");
  EXPECT_GUARDS(corners, "corners");
  EXPECT_GUARDS(dx, "dx");
}

SAFL_TEST(conv2d_pointwise_is_matrix_product) {
  // A 1×1 conv of one image is weight (Co, Ci) × x (Ci, H·W), plus the bias per row.
  const int64_t Ci = 5, Co = 4, H = 3, W = 7, P = H * W;
  Rng rng(13);
  std::vector<float> x(Ci * P), w(Co * Ci), b(Co);
  rng.fill_uniform(x.data(), x.size());
  rng.fill_uniform(w.data(), w.size());
  rng.fill_uniform(b.data(), b.size());
  std::vector<float> expected(Co * P);
  for (int64_t co = 0; co < Co; ++co) {
    for (int64_t p = 0; p < P; ++p) {
      double acc = b[co];
      for (int64_t ci = 0; ci < Ci; ++ci) acc += double(w[co * Ci + ci]) * x[ci * P + p];
      expected[co * P + p] = float(acc);
    }
  }
  EXPECT(safl::cpu::conv2d_workspace_floats(1, Ci, H, W, Co, 1, 1, 1, 1, 0, 0) == 0);
  Guarded out(Co * P);
  safl::cpu::conv2d_forward(out.data(), nullptr, x.data(), w.data(), b.data(), 1, Ci, H, W, Co, 1, 1,
                            1, 1, 0, 0);
  EXPECT_ALL_CLOSE(out.data(), expected.data(), out.size(), 1e-5, 1e-6);
  EXPECT_GUARDS(out, "out");
}

SAFL_TEST(conv2d_workspace_size) {
  using safl::cpu::conv2d_workspace_floats;
  // B = 1: col only (K·N). B > 1: col and the (Co, N) product before reordering.
  EXPECT(conv2d_workspace_floats(1, 3, 32, 64, 16, 3, 3, 1, 1, 1, 1) == 27 * 32 * 64);
  EXPECT(conv2d_workspace_floats(2, 3, 32, 64, 16, 3, 3, 1, 1, 1, 1) == (27 + 16) * 2 * 32 * 64);
  EXPECT(conv2d_workspace_floats(4, 8, 6, 10, 16, 1, 1, 1, 1, 0, 0) == (8 + 16) * 4 * 60);
  EXPECT(conv2d_workspace_floats(1, 8, 6, 10, 16, 1, 1, 2, 1, 0, 0) == 8 * 3 * 10);
  // H = 1, 3×3 pad 1: one band of the middle kernel row, K = 4·3, N = 2·70: its col, the (Co, N)
  // product and two (Co, K) weight slices. With 2·7 columns, the whole GEMM (K = 4·9).
  EXPECT(conv2d_workspace_floats(2, 4, 1, 70, 3, 3, 3, 1, 1, 1, 1) == 12 * 140 + 3 * 140 + 2 * 3 * 12);
  EXPECT(conv2d_workspace_floats(2, 4, 1, 7, 3, 3, 3, 1, 1, 1, 1) == (36 + 3) * 14);
  EXPECT(conv2d_workspace_floats(0, 8, 6, 10, 16, 3, 3, 1, 1, 1, 1) == 0);
  EXPECT(conv2d_workspace_floats(2, 0, 6, 10, 16, 3, 3, 1, 1, 1, 1) == 0);
  EXPECT(conv2d_workspace_floats(2, 8, 6, 10, 0, 3, 3, 1, 1, 1, 1) == 0);
}

SAFL_TEST(conv2d_zero_sizes) {
  const float w[4] = {1, 2, 3, 4}, b[2] = {0.5f, -1.5f};
  const float x[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  // B = 0 and Co = 0: nothing to write.
  Guarded empty(0), ws(size_t(safl::cpu::conv2d_workspace_floats(2, 1, 2, 2, 0, 1, 1, 1, 1, 0, 0)));
  safl::cpu::conv2d_forward(empty.data(), nullptr, x, w, b, 0, 1, 2, 2, 2, 1, 1, 1, 1, 0, 0);
  safl::cpu::conv2d_forward(empty.data(), ws.data(), x, w, b, 2, 1, 2, 2, 0, 1, 1, 1, 1, 0, 0);
  safl::cpu::conv2d_backward(empty.data(), empty.data(), empty.data(), nullptr, x, x, w, 0, 1, 2, 2,
                             2, 1, 1, 1, 1, 0, 0);
  EXPECT_GUARDS(empty, "empty");
  // Co = 0 backward: no output depends on x, so dx is zero.
  Guarded dx(8);
  safl::cpu::conv2d_backward(dx.data(), empty.data(), empty.data(), ws.data(), x, x, w, 2, 1, 2, 2, 0,
                             1, 1, 1, 1, 0, 0);
  const float zeros[8] = {};
  EXPECT_ALL_CLOSE(dx.data(), zeros, 8, 0.0, 0.0);
  EXPECT_GUARDS(dx, "dx");
  EXPECT_GUARDS(ws, "workspace");
  // Ci = 0: the output is the bias, and only dbias has a gradient.
  Guarded out(2 * 2 * 3), db(2, 1.0f);
  safl::cpu::conv2d_forward(out.data(), nullptr, x, w, b, 2, 0, 1, 3, 2, 1, 1, 1, 1, 0, 0);
  const float bias_map[12] = {0.5f, 0.5f, 0.5f, -1.5f, -1.5f, -1.5f, 0.5f, 0.5f, 0.5f, -1.5f, -1.5f, -1.5f};
  EXPECT_ALL_CLOSE(out.data(), bias_map, 12, 0.0, 0.0);
  safl::cpu::conv2d_backward(empty.data(), empty.data(), db.data(), nullptr, x, x, w, 2, 0, 1, 3, 2, 1,
                             1, 1, 1, 0, 0);
  EXPECT_NEAR(db[0], 1.0 + (1 + 2 + 3 + 7 + 8 + 9), 1e-6);
  EXPECT_NEAR(db[1], 1.0 + (4 + 5 + 6 + 10 + 11 + 12), 1e-6);
  EXPECT_GUARDS(out, "out");
  EXPECT_GUARDS(db, "dbias");
}

SAFL_TEST(conv2d_argument_errors) {
  float buf[64] = {};
  using safl::cpu::conv2d_forward;
  EXPECT_THROWS(conv2d_forward(buf, buf, buf, buf, nullptr, 1, 1, 4, 4, 1, 3, 3, 0, 1, 1, 1),
                safl::Error, "conv2d_forward: expected stride_h >= 1 but received 0");
  EXPECT_THROWS(conv2d_forward(buf, buf, buf, buf, nullptr, 1, 1, 4, 4, 1, 3, 0, 1, 1, 1, 1),
                safl::Error, "conv2d_forward: expected kernel_w >= 1 but received 0");
  EXPECT_THROWS(conv2d_forward(buf, buf, buf, buf, nullptr, 1, 1, 4, 4, 1, 3, 3, 1, 1, -1, 1),
                safl::Error, "conv2d_forward: expected pad_h >= 0 but received -1");
  EXPECT_THROWS(conv2d_forward(buf, buf, buf, buf, nullptr, -2, 1, 4, 4, 1, 3, 3, 1, 1, 1, 1),
                safl::Error, "conv2d_forward: expected B >= 0 but received -2");
  EXPECT_THROWS(conv2d_forward(buf, buf, buf, buf, nullptr, 1, 1, 2, 4, 1, 5, 3, 1, 1, 1, 1),
                safl::Error, "conv2d_forward: expected H + 2*pad_h >= kernel_h (5) but received 4");
  EXPECT_THROWS(conv2d_forward(buf, nullptr, buf, buf, nullptr, 1, 1, 4, 4, 1, 3, 3, 1, 1, 1, 1),
                safl::Error, "conv2d_forward: expected a workspace of 144 floats (conv2d_workspace_floats) but received nullptr");
  EXPECT_THROWS(safl::cpu::conv2d_backward(buf, buf, nullptr, buf, buf, buf, buf, 1, 1, 4, 1, 1, 3, 3,
                                           1, 1, 1, -3),
                safl::Error, "conv2d_backward: expected pad_w >= 0 but received -3");
  EXPECT_THROWS(safl::cpu::conv2d_workspace_floats(1, -1, 4, 4, 1, 3, 3, 1, 1, 1, 1), safl::Error,
                "conv2d_workspace_floats: expected Ci >= 0 but received -1");
  bool range_kind = false;
  try {
    conv2d_forward(buf, buf, buf, buf, nullptr, 1, 1, 4, 4, 1, 3, 3, 0, 1, 1, 1);
  } catch (const safl::Error& e) {
    range_kind = e.kind() == safl::ErrorKind::Range;
  }
  EXPECT(range_kind);
}

}  // namespace
