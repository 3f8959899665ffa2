// Bilinear grid sampler (native/ops/sampler.h): identity and corner sampling exactly, zero
// padding just outside the image, a hand-computed 2×2 case with its gradients, gradient checks
// w.r.t. grid and input on odd shapes, the TPS identity grid end to end, 1×1, zero-size and
// non-finite inputs, thread-count independence, argument errors, and CUDA-vs-CPU parity.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"
#include "ops/sampler.h"
#include "ops/tps.h"
#include "tests/harness.h"

#ifdef SAFL_WITH_CUDA
#include "cuda/cuda_check.h"
#endif

namespace {

using safl::test::Guarded;
using safl::test::Rng;

struct Shape {
  int64_t B, C, Hi, Wi, Ho, Wo;
  size_t input() const { return size_t(B * C * Hi * Wi); }
  size_t output() const { return size_t(B * C * Ho * Wo); }
  size_t grid() const { return size_t(B * Ho * Wo * 2); }
};

// The identity grid of an H×W image, (B, H, W, 2), computed in float as a caller would.
std::vector<float> identity_grid(int64_t B, int64_t H, int64_t W) {
  std::vector<float> grid;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j) {
        grid.push_back(float(j) / float(W - 1) * 2.0f - 1.0f);
        grid.push_back(float(i) / float(H - 1) * 2.0f - 1.0f);
      }
  return grid;
}

// A grid coordinate whose pixel coordinate along an axis of `size` (>= 2) is k + f, k in
// [-1, size-1] and f in [0.2, 0.8]: away from the bilinear kinks at whole pixels, some points
// partly outside the image.
float kink_free_coordinate(Rng& rng, int64_t size) {
  const int64_t k = int64_t(rng.next() % uint64_t(size + 1)) - 1;
  return (float(k) + rng.uniform(0.2f, 0.8f)) / float(size - 1) * 2.0f - 1.0f;
}

std::vector<float> kink_free_grid(Rng& rng, const Shape& s) {
  std::vector<float> grid(s.grid());
  for (size_t i = 0; i < grid.size(); i += 2) {
    grid[i] = kink_free_coordinate(rng, s.Wi);
    grid[i + 1] = kink_free_coordinate(rng, s.Hi);
  }
  return grid;
}

bool all_zero(const float* x, size_t n) {
  return std::all_of(x, x + n, [](float v) { return v == 0.0f; });
}

}  // namespace

SAFL_TEST(sampler_identity_grid_returns_the_input) {
  Rng rng(11);
  // (H-1) and (W-1) powers of two: the identity grid round-trips to whole pixels exactly.
  for (const Shape s : {Shape{2, 3, 5, 9, 5, 9}, Shape{1, 2, 3, 17, 3, 17}, Shape{2, 1, 7, 11, 7, 11}}) {
    std::vector<float> input(s.input());
    rng.fill_uniform(input.data(), input.size(), -10.0f, 10.0f);
    const std::vector<float> grid = identity_grid(s.B, s.Ho, s.Wo);
    Guarded out(s.output());
    safl::cpu::grid_sample_forward(out.data(), input.data(), grid.data(), s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
    EXPECT_GUARDS(out, "out");
    const bool exact_sizes = s.Wi != 11;
    if (exact_sizes)
      EXPECT(std::equal(input.begin(), input.end(), out.data()));
    else  // 7×11: a coordinate may land one ulp below its pixel
      EXPECT_ALL_CLOSE(out.data(), input.data(), input.size(), 0.0, 1e-5);
  }
}

SAFL_TEST(sampler_grid_at_plus_minus_one_samples_the_corner_pixels) {
  Rng rng(12);
  const Shape s{2, 2, 3, 4, 2, 2};
  std::vector<float> input(s.input());
  rng.fill_uniform(input.data(), input.size(), -100.0f, 100.0f);
  std::vector<float> grid;
  for (int64_t b = 0; b < s.B; ++b)
    for (float y : {-1.0f, 1.0f})
      for (float x : {-1.0f, 1.0f}) grid.insert(grid.end(), {x, y});
  Guarded out(s.output());
  safl::cpu::grid_sample_forward(out.data(), input.data(), grid.data(), s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
  EXPECT_GUARDS(out, "out");
  for (int64_t bc = 0; bc < s.B * s.C; ++bc) {
    const float* plane = input.data() + bc * s.Hi * s.Wi;
    const float* o = out.data() + bc * 4;
    EXPECT(o[0] == plane[0]);                               // top-left
    EXPECT(o[1] == plane[s.Wi - 1]);                        // top-right
    EXPECT(o[2] == plane[(s.Hi - 1) * s.Wi]);               // bottom-left
    EXPECT(o[3] == plane[(s.Hi - 1) * s.Wi + s.Wi - 1]);    // bottom-right
  }
}

// Wi = 5: one pixel is 0.5 in grid units. Points on row 0 (y = -1) at and beyond the x borders.
SAFL_TEST(sampler_points_outside_blend_with_zero) {
  const Shape s{1, 1, 2, 5, 1, 8};
  const std::vector<float> input = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const float nan = std::nanf(""), inf = INFINITY;
  const std::vector<float> xs = {1.1f, -1.25f, 1.5f, -1.5f, -1.6f, nan, inf, -1e30f};
  const std::vector<float> expected = {0.8f * 5, 0.5f * 1, 0, 0, 0, 0, 0, 0};
  std::vector<float> grid;
  for (float x : xs) grid.insert(grid.end(), {x, -1.0f});
  Guarded out(s.output()), dgrid(s.grid()), dinput(s.input());
  safl::cpu::grid_sample_forward(out.data(), input.data(), grid.data(), s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
  EXPECT_ALL_CLOSE(out.data(), expected.data(), expected.size(), 1e-6, 1e-6);
  const std::vector<float> dout(s.output(), 1.0f);
  safl::cpu::grid_sample_backward(dgrid.data(), dinput.data(), dout.data(), input.data(), grid.data(), s.B, s.C,
                                  s.Hi, s.Wi, s.Ho, s.Wo);
  // d/dx at pixel 4.2 (row 0): 0 − 5 per pixel, × 2 pixels per grid unit; at pixel −0.5: 1 − 0.
  EXPECT_NEAR(dgrid[0], -10.0, 1e-4);
  EXPECT_NEAR(dgrid[2], 2.0, 1e-4);
  // Pixel −1 exactly (x = −1.5): value 0, one-sided gradient towards column 0, as PyTorch.
  EXPECT_NEAR(dgrid[6], 2.0, 1e-4);
  EXPECT(dgrid[4] == 0.0f && dgrid[5] == 0.0f && dgrid[7] == 0.0f);
  EXPECT(all_zero(dgrid.data() + 8, 8));  // wholly outside or non-finite: no gradient
  // d/dy towards row 1 (+5 per pixel on the columns inside), 0.5 pixel per grid unit.
  EXPECT_NEAR(dgrid[1], 0.8 * 5 * 0.5, 1e-4);
  EXPECT_NEAR(dgrid[3], 0.5 * 5 * 0.5, 1e-4);
  const std::vector<float> expected_dinput = {0.5f, 0, 0, 0, 0.8f, 0, 0, 0, 0, 0};
  EXPECT_ALL_CLOSE(dinput.data(), expected_dinput.data(), expected_dinput.size(), 1e-6, 1e-6);
  EXPECT_GUARDS(out, "out");
  EXPECT_GUARDS(dgrid, "dgrid");
  EXPECT_GUARDS(dinput, "dinput");
}

// input [[1, 2], [3, 4]] = f(x, y) = 1 + x + 2y. Point (−0.5, 0.5) is pixel (0.25, 0.75).
SAFL_TEST(sampler_hand_computed_2x2) {
  const Shape s{1, 1, 2, 2, 1, 2};
  const std::vector<float> input = {1, 2, 3, 4}, grid = {-0.5f, 0.5f, 0.0f, 0.0f}, dout = {2.0f, 0.0f};
  Guarded out(s.output()), dgrid(s.grid()), dinput(s.input());
  safl::cpu::grid_sample_forward(out.data(), input.data(), grid.data(), s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
  EXPECT_NEAR(out[0], 2.75, 1e-6);
  EXPECT_NEAR(out[1], 2.5, 1e-6);
  safl::cpu::grid_sample_backward(dgrid.data(), dinput.data(), dout.data(), input.data(), grid.data(), s.B, s.C,
                                  s.Hi, s.Wi, s.Ho, s.Wo);
  // df/dx = 1, df/dy = 2 per pixel; 0.5 pixel per grid unit; × dout = 2.
  const std::vector<float> expected_dgrid = {1.0f, 2.0f, 0.0f, 0.0f};
  // Corner weights (1−tx)(1−ty), tx(1−ty), (1−tx)ty, tx·ty at (0.25, 0.75), × dout = 2.
  const std::vector<float> expected_dinput = {0.375f, 0.125f, 1.125f, 0.375f};
  EXPECT_ALL_CLOSE(dgrid.data(), expected_dgrid.data(), 4, 1e-6, 1e-6);
  EXPECT_ALL_CLOSE(dinput.data(), expected_dinput.data(), 4, 1e-6, 1e-6);
  EXPECT_GUARDS(out, "out");
  EXPECT_GUARDS(dgrid, "dgrid");
  EXPECT_GUARDS(dinput, "dinput");
}

SAFL_TEST(sampler_gradcheck_odd_shapes) {
  Rng rng(13);
  for (const Shape s : {Shape{2, 3, 5, 7, 4, 6}, Shape{1, 1, 3, 2, 1, 3}, Shape{1, 2, 2, 3, 5, 1}}) {
    std::vector<float> input(s.input()), grid = kink_free_grid(rng, s), w(s.output());
    rng.fill_uniform(input.data(), input.size());
    rng.fill_uniform(w.data(), w.size());
    Guarded out(s.output()), dgrid(s.grid()), dinput(s.input());
    auto loss = [&] {
      safl::cpu::grid_sample_forward(out.data(), input.data(), grid.data(), s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
      return safl::test::dot(out.data(), w.data(), w.size());
    };
    auto backward = [&] {
      safl::cpu::grid_sample_backward(dgrid.data(), dinput.data(), w.data(), input.data(), grid.data(), s.B, s.C,
                                      s.Hi, s.Wi, s.Ho, s.Wo);
    };
    safl::test::gradcheck("grid_sample",
                          {{"grid", grid.data(), dgrid.data(), grid.size()},
                           {"input", input.data(), dinput.data(), input.size()}},
                          loss, backward);
    EXPECT_FINITE(out.data(), out.size());
    EXPECT_FINITE(dgrid.data(), dgrid.size());
    EXPECT_FINITE(dinput.data(), dinput.size());
    EXPECT_GUARDS(out, "out");
    EXPECT_GUARDS(dgrid, "dgrid");
    EXPECT_GUARDS(dinput, "dinput");

    // Without dinput the grid gradient is the same, and dinput is written, not accumulated.
    Guarded dgrid_only(s.grid()), dinput_again(s.input(), 7.0f);
    safl::cpu::grid_sample_backward(dgrid_only.data(), nullptr, w.data(), input.data(), grid.data(), s.B, s.C, s.Hi,
                                    s.Wi, s.Ho, s.Wo);
    EXPECT(std::equal(dgrid.data(), dgrid.data() + dgrid.size(), dgrid_only.data()));
    safl::cpu::grid_sample_backward(dgrid_only.data(), dinput_again.data(), w.data(), input.data(), grid.data(), s.B,
                                    s.C, s.Hi, s.Wi, s.Ho, s.Wo);
    EXPECT(std::equal(dinput.data(), dinput.data() + dinput.size(), dinput_again.data()));
    EXPECT_GUARDS(dgrid_only, "dgrid_only");
    EXPECT_GUARDS(dinput_again, "dinput_again");
  }
}

// The model's path at its sizes: the identity TPS grid (32×100) resamples a 32×100 image to itself.
SAFL_TEST(sampler_with_tps_identity_grid) {
  Rng rng(14);
  const int64_t K = 20, H = 32, W = 100;
  std::vector<float> M(size_t(safl::tps_grid_matrix_size(K, H, W))), points(2 * K), grid(H * W * 2);
  safl::tps_grid_matrix(M.data(), K, H, W);
  safl::fiducial_points(points.data(), K, safl::kTpsTargetMargin);
  safl::cpu::tps_grid_forward(grid.data(), points.data(), M.data(), 1, K, H, W);
  const Shape s{1, 3, H, W, H, W};
  std::vector<float> input(s.input());
  rng.fill_uniform(input.data(), input.size());
  Guarded out(s.output());
  safl::cpu::grid_sample_forward(out.data(), input.data(), grid.data(), s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
  EXPECT_ALL_CLOSE(out.data(), input.data(), input.size(), 0.0, 2e-3);
  EXPECT_GUARDS(out, "out");
}

SAFL_TEST(sampler_one_by_one) {
  // A 1×1 input: every finite grid point samples its only pixel, with zero grid gradient.
  const Shape s{2, 2, 1, 1, 2, 3};
  const std::vector<float> input = {3, -4, 5, 6};
  const std::vector<float> grid = {-1, -1, 0.3f, 0.9f, 1, 1, 2, -3, -0.7f, 0.1f, 0, 0,
                                   0, 0, 1, -1, -1, 1, 0.5f, 0.5f, -0.2f, 0.4f, 0.9f, 0.9f};
  Guarded out(s.output()), dgrid(s.grid()), dinput(s.input());
  safl::cpu::grid_sample_forward(out.data(), input.data(), grid.data(), s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
  for (size_t i = 0; i < out.size(); ++i) EXPECT(out[i] == input[i / 6]);
  std::vector<float> dout(s.output());
  for (size_t i = 0; i < dout.size(); ++i) dout[i] = float(i + 1);
  safl::cpu::grid_sample_backward(dgrid.data(), dinput.data(), dout.data(), input.data(), grid.data(), s.B, s.C,
                                  s.Hi, s.Wi, s.Ho, s.Wo);
  EXPECT(all_zero(dgrid.data(), dgrid.size()));
  const std::vector<float> expected_dinput = {21, 57, 93, 129};  // sums of each plane's dout
  EXPECT(std::equal(expected_dinput.begin(), expected_dinput.end(), dinput.data()));

  // A 1×1 output from a 1×1 input.
  const std::vector<float> one = {2.5f}, centre = {0, 0}, done = {1.5f};
  Guarded out1(1), dgrid1(2), dinput1(1);
  safl::cpu::grid_sample_forward(out1.data(), one.data(), centre.data(), 1, 1, 1, 1, 1, 1);
  safl::cpu::grid_sample_backward(dgrid1.data(), dinput1.data(), done.data(), one.data(), centre.data(), 1, 1, 1, 1,
                                  1, 1);
  EXPECT(out1[0] == 2.5f && dgrid1[0] == 0.0f && dgrid1[1] == 0.0f && dinput1[0] == 1.5f);
  EXPECT_GUARDS(out, "out");
  EXPECT_GUARDS(dgrid, "dgrid");
  EXPECT_GUARDS(dinput, "dinput");
  EXPECT_GUARDS(out1, "out1");
  EXPECT_GUARDS(dgrid1, "dgrid1");
  EXPECT_GUARDS(dinput1, "dinput1");
}

SAFL_TEST(sampler_zero_sizes) {
  Rng rng(15);
  for (const Shape s : {Shape{0, 3, 4, 5, 2, 3}, Shape{2, 0, 4, 5, 2, 3}, Shape{2, 3, 4, 5, 0, 3},
                        Shape{2, 3, 4, 5, 2, 0}, Shape{2, 3, 0, 5, 2, 3}, Shape{2, 3, 4, 0, 2, 3}}) {
    std::vector<float> input(s.input()), grid(s.grid()), dout(s.output());
    rng.fill_uniform(input.data(), input.size());
    rng.fill_uniform(grid.data(), grid.size());
    rng.fill_uniform(dout.data(), dout.size());
    Guarded out(s.output()), dgrid(s.grid()), dinput(s.input());
    safl::cpu::grid_sample_forward(out.data(), input.data(), grid.data(), s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
    safl::cpu::grid_sample_backward(dgrid.data(), dinput.data(), dout.data(), input.data(), grid.data(), s.B, s.C,
                                    s.Hi, s.Wi, s.Ho, s.Wo);
    // An empty input samples zeros; no channels gives a zero grid gradient.
    EXPECT(all_zero(out.data(), out.size()));
    EXPECT(all_zero(dgrid.data(), dgrid.size()));
    EXPECT(all_zero(dinput.data(), dinput.size()));
    EXPECT_GUARDS(out, "out");
    EXPECT_GUARDS(dgrid, "dgrid");
    EXPECT_GUARDS(dinput, "dinput");
  }
}

SAFL_TEST(sampler_non_finite_grid_samples_zero) {
  const Shape s{1, 2, 3, 4, 1, 4};
  std::vector<float> input(s.input(), 1.0f), dout(s.output(), 1.0f);
  const float nan = std::nanf(""), inf = INFINITY;
  const std::vector<float> grid = {nan, 0, 0, nan, inf, 0, 0, -inf};
  Guarded out(s.output()), dgrid(s.grid()), dinput(s.input());
  safl::cpu::grid_sample_forward(out.data(), input.data(), grid.data(), s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
  safl::cpu::grid_sample_backward(dgrid.data(), dinput.data(), dout.data(), input.data(), grid.data(), s.B, s.C,
                                  s.Hi, s.Wi, s.Ho, s.Wo);
  EXPECT(all_zero(out.data(), out.size()));
  EXPECT(all_zero(dgrid.data(), dgrid.size()));
  EXPECT(all_zero(dinput.data(), dinput.size()));
}

SAFL_TEST(sampler_results_do_not_depend_on_thread_count) {
  Rng rng(16);
  const Shape s{3, 3, 33, 65, 17, 50};
  std::vector<float> input(s.input()), dout(s.output());
  std::vector<float> grid = kink_free_grid(rng, s);
  rng.fill_uniform(input.data(), input.size());
  rng.fill_uniform(dout.data(), dout.size());
  std::vector<std::vector<float>> results;
  for (int threads : {1, 3}) {
    safl::set_num_threads(threads);
    std::vector<float> out(s.output()), dgrid(s.grid()), dinput(s.input());
    safl::cpu::grid_sample_forward(out.data(), input.data(), grid.data(), s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
    safl::cpu::grid_sample_backward(dgrid.data(), dinput.data(), dout.data(), input.data(), grid.data(), s.B, s.C,
                                    s.Hi, s.Wi, s.Ho, s.Wo);
    out.insert(out.end(), dgrid.begin(), dgrid.end());
    out.insert(out.end(), dinput.begin(), dinput.end());
    results.push_back(out);
  }
  safl::set_num_threads(safl::hardware_threads());
  EXPECT(results[0] == results[1]);
}

SAFL_TEST(sampler_argument_errors) {
  std::vector<float> buffer(64, 0.0f);
  float* p = buffer.data();
  EXPECT_THROWS(safl::cpu::grid_sample_forward(p, p, p, -1, 1, 2, 2, 2, 2),
                safl::Error, "grid_sample_forward: expected B >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::grid_sample_forward(p, p, p, 1, -2, 2, 2, 2, 2),
                safl::Error, "grid_sample_forward: expected C >= 0 but received -2");
  EXPECT_THROWS(safl::cpu::grid_sample_forward(p, p, p, 1, 1, -3, 2, 2, 2),
                safl::Error, "grid_sample_forward: expected Hi >= 0 but received -3");
  EXPECT_THROWS(safl::cpu::grid_sample_forward(p, p, p, 1, 1, 2, -4, 2, 2),
                safl::Error, "grid_sample_forward: expected Wi >= 0 but received -4");
  EXPECT_THROWS(safl::cpu::grid_sample_forward(p, p, p, 1, 1, 2, 2, -5, 2),
                safl::Error, "grid_sample_forward: expected Ho >= 0 but received -5");
  EXPECT_THROWS(safl::cpu::grid_sample_forward(p, p, p, 1, 1, 2, 2, 2, -6),
                safl::Error, "grid_sample_forward: expected Wo >= 0 but received -6");
  EXPECT_THROWS(safl::cpu::grid_sample_backward(p, p, p, p, p, 1, 1, 2, 2, 2, -1),
                safl::Error, "grid_sample_backward: expected Wo >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::grid_sample_backward(p, nullptr, p, p, p, -7, 1, 2, 2, 2, 2),
                safl::Error, "grid_sample_backward: expected B >= 0 but received -7");
}

#ifdef SAFL_WITH_CUDA
SAFL_CUDA_TEST(sampler_cuda_parity) {
  Rng rng(17);
  for (const Shape s : {Shape{4, 3, 64, 256, 32, 100}, Shape{2, 3, 5, 7, 4, 6}, Shape{1, 1, 1, 1, 2, 3},
                        Shape{2, 0, 4, 5, 2, 3}, Shape{2, 3, 0, 5, 2, 3}, Shape{0, 3, 4, 5, 2, 3}}) {
    std::vector<float> input(s.input()), grid(s.grid()), dout(s.output());
    rng.fill_uniform(input.data(), input.size());
    rng.fill_uniform(grid.data(), grid.size(), -1.05f, 1.05f);
    rng.fill_uniform(dout.data(), dout.size());

    std::vector<float> out_cpu(s.output()), dgrid_cpu(s.grid()), dinput_cpu(s.input());
    safl::cpu::grid_sample_forward(out_cpu.data(), input.data(), grid.data(), s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
    safl::cpu::grid_sample_backward(dgrid_cpu.data(), dinput_cpu.data(), dout.data(), input.data(), grid.data(), s.B,
                                    s.C, s.Hi, s.Wi, s.Ho, s.Wo);

    safl::cuda::DeviceBuffer<float> d_input(input), d_grid(grid), d_dout(dout), d_out(s.output()),
        d_dgrid(s.grid()), d_dinput(s.input()), d_dgrid_only(s.grid());
    safl::cuda::grid_sample_forward(d_out.data(), d_input.data(), d_grid.data(), s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
    safl::cuda::grid_sample_backward(d_dgrid.data(), d_dinput.data(), d_dout.data(), d_input.data(), d_grid.data(),
                                     s.B, s.C, s.Hi, s.Wi, s.Ho, s.Wo);
    safl::cuda::grid_sample_backward(d_dgrid_only.data(), nullptr, d_dout.data(), d_input.data(), d_grid.data(), s.B,
                                     s.C, s.Hi, s.Wi, s.Ho, s.Wo);
    const std::vector<float> out_cuda = d_out.to_host(), dgrid_cuda = d_dgrid.to_host(),
                             dinput_cuda = d_dinput.to_host(), dgrid_only_cuda = d_dgrid_only.to_host();

    std::printf("    B=%lld C=%lld %lldx%lld -> %lldx%lld\n", (long long)s.B, (long long)s.C, (long long)s.Hi,
                (long long)s.Wi, (long long)s.Ho, (long long)s.Wo);
    // Forward sums 4 products (FMA contraction on the GPU); dgrid scales value differences by
    // (size-1)/2; dinput's atomics add in a run-dependent order.
    EXPECT_ALL_CLOSE(out_cuda.data(), out_cpu.data(), out_cpu.size(), 1e-5, 1e-6);
    EXPECT_ALL_CLOSE(dgrid_cuda.data(), dgrid_cpu.data(), dgrid_cpu.size(), 1e-4, 1e-4);
    EXPECT_ALL_CLOSE(dgrid_only_cuda.data(), dgrid_cpu.data(), dgrid_cpu.size(), 1e-4, 1e-4);
    EXPECT_ALL_CLOSE(dinput_cuda.data(), dinput_cpu.data(), dinput_cpu.size(), 1e-4, 1e-5);
  }
}
#endif
