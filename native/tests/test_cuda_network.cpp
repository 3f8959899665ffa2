// The whole SAFL network on CUDA (model/network_cuda.h) against the CPU network (model/network.h)
// on a narrow configuration: teacher-forced logits in inference and training mode (and the running
// statistics the training forward updates, copied out and back), the focal loss and every
// parameter gradient of forward_backward (with dropout too: both backends draw the same masks),
// one Adam step, greedy recognition of a briefly trained network, batch sizes 1, 2 and odd ones,
// and the errors: no GPU, a bad device index, beam search.
//
// Note [whole-network tolerances]: every matrix product on the GPU rounds its inputs to TF32
// (Note [parity tolerances for TF32] in test_cuda_dense.cpp), and the errors of a dozen layers
// add up, with batch norm and layer norm rescaling them, so a tensor is compared as a whole: the
// relative L2 error ||cuda − cpu|| / ||cpu|| must stay below kTensorTolerance (measured errors of
// wiring mistakes — a wrong buffer, a missing scale — are of order 1). When a tensor fails, its
// first mismatches are printed; the gradient comparison prints the worst tensors by name.
// Decoding compares tokens only where the CPU's choice is clear (Note [confident prefix]).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"
#include "model/network.h"
#include "ops/optimizer.h"
#include "tests/harness.h"
#include "tests/network_images.h"

#ifdef SAFL_WITH_CUDA
#include "model/network_cuda.h"

namespace {

using safl::test::smooth_images;

using safl::model::Config;
using safl::model::CudaNetwork;
using safl::model::Decoded;
using safl::model::Network;

constexpr double kTensorTolerance = 3e-2;  // Note [whole-network tolerances]
constexpr double kUpdateTolerance = 0.1;   // a running statistic's update on its own (see its test)

// 32×64 input, 32×32 localisation input, 32×16 rectified (S = 4), a projection from the backbone's
// 12 channels to d_model 16, two heads, two decoder layers, 7 characters.
Config narrow_config(float dropout = 0.0f) {
  Config c;
  c.in_h = 32, c.in_w = 64;
  c.loc_h = 32, c.loc_w = 32;
  c.rect_h = 32, c.rect_w = 16;
  c.fiducials = 6;
  c.loc_channels = {4, 4, 8, 8, 8, 8};
  c.loc_fc = 16;
  c.res_channels = {4, 8, 8, 12, 12};
  c.res_blocks = {1, 2, 1, 1, 1};
  c.d_model = 16, c.heads = 2, c.ffn = 32;
  c.enc_layers = 1, c.dec_layers = 2;
  c.max_len = 5;
  c.num_classes = 10;  // characters 0..6, EOS 7, PAD 8, UNK 9
  c.dropout = dropout;
  c.validate("narrow config");
  return c;
}

// Random init, with the localisation head's last weights small but not zero, so that the
// localisation network receives a gradient (at init it is exactly zero: fc2 starts at zero).
void init_network(Network& net, uint64_t seed) {
  net.init_random(seed);
  safl::test::Rng rng(seed + 1000);
  const std::string name = "loc.fc2.weight";
  rng.fill_uniform(net.param(name), size_t(net.layout().param(name).numel), -0.05f, 0.05f);
}

// (B, T) targets: a word of 1..max_len characters per image, EOS, then PAD.
std::vector<int32_t> random_targets(const Config& c, int64_t B, uint64_t seed) {
  safl::test::Rng rng(seed);
  const int64_t T = c.tgt_len();
  std::vector<int32_t> t(B * T, int32_t(c.pad()));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t length = 1 + int64_t(rng.next() % uint64_t(c.max_len));
    for (int64_t i = 0; i < length; ++i) t[b * T + i] = int32_t(rng.next() % uint64_t(c.charset_size()));
    t[b * T + length] = int32_t(c.eos());
  }
  return t;
}

double l2(const float* x, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
  return std::sqrt(s);
}

// ||actual − expected|| / max(||expected||, floor).
double relative_l2(const float* actual, const float* expected, size_t n, double floor = 1e-6) {
  double diff = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(actual[i]) - double(expected[i]);
    diff += d * d;
  }
  return std::sqrt(diff) / std::max(l2(expected, n), floor);
}

// Note [whole-network tolerances]: the relative L2 error, printed; on failure the first mismatches
// beyond tol times the tensor's rms.
void expect_close_tensor(const char* label, const float* actual, const float* expected, size_t n,
                         double tol = kTensorTolerance) {
  const double error = relative_l2(actual, expected, n);
  std::printf("    %s: relative L2 error %.3g\n", label, error);
  if (error > tol) {
    const double rms = l2(expected, n) / std::sqrt(double(std::max<size_t>(n, 1)));
    safl::test::all_close(label, actual, expected, n, tol, tol * rms);
  }
  EXPECT(error <= tol);
  EXPECT_FINITE(actual, n);
}

// Every parameter gradient tensor of the CUDA network against the CPU's; prints the worst five.
void expect_gradients_close(CudaNetwork& gpu, Network& cpu) {
  const safl::model::Layout& layout = cpu.layout();
  std::vector<float> grads(layout.param_floats);
  gpu.download_grads(grads.data());
  EXPECT_FINITE(grads.data(), grads.size());
  const float* expected = cpu.grads();
  const double whole_norm = l2(expected, layout.param_floats);
  std::vector<std::pair<double, std::string>> errors;
  std::string below_floor;
  for (const auto& spec : layout.params) {
    // A tensor whose gradient is tiny next to the whole network's is compared against a floor;
    // where its own norm is far below the floor that comparison cannot fail, so those are named
    // (loc.fc1.bias always: its gradient is zero, the batch norm after it removes any shift).
    const double floor = 1e-4 * whole_norm;
    if (l2(expected + spec.offset, size_t(spec.numel)) < 0.1 * floor) below_floor += " " + spec.name;
    errors.push_back({relative_l2(grads.data() + spec.offset, expected + spec.offset, size_t(spec.numel), floor),
                      spec.name});
  }
  if (!below_floor.empty()) std::printf("    gradients far below the floor (checked only in size):%s\n", below_floor.c_str());
  std::sort(errors.rbegin(), errors.rend());
  for (size_t i = 0; i < std::min<size_t>(5, errors.size()); ++i)
    std::printf("    gradient %-44s relative L2 error %.3g\n", errors[i].second.c_str(), errors[i].first);
  for (const auto& e : errors)
    if (e.first > kTensorTolerance) std::printf("    FAIL gradient %s: %.3g\n", e.second.c_str(), e.first);
  EXPECT(errors.empty() || errors.front().first <= kTensorTolerance);
}

// One forward_backward on both backends from the same starting point; compares loss, correct
// count and every gradient.
void check_train_step(const Config& c, int64_t B, uint64_t seed) {
  Network cpu(c);
  init_network(cpu, seed);
  CudaNetwork gpu(cpu);
  const std::vector<float> images = smooth_images(c, B, seed + 1);
  const std::vector<int32_t> targets = random_targets(c, B, seed + 2);
  int64_t cpu_correct = 0, gpu_correct = 0;
  const float cpu_loss = cpu.forward_backward(images.data(), targets.data(), B, 2.0f, 1.0f, seed + 3, &cpu_correct);
  const float gpu_loss = gpu.forward_backward(images.data(), targets.data(), B, 2.0f, 1.0f, seed + 3, &gpu_correct);
  std::printf("    B=%lld dropout %.1f: loss cpu %.6f cuda %.6f, correct cpu %lld cuda %lld\n", (long long)B,
              double(c.dropout), double(cpu_loss), double(gpu_loss), (long long)cpu_correct, (long long)gpu_correct);
  EXPECT(std::isfinite(gpu_loss));
  EXPECT_NEAR(gpu_loss, cpu_loss, kTensorTolerance * std::fabs(cpu_loss));
  EXPECT(std::llabs(gpu_correct - cpu_correct) <= 1);  // a near-tie may flip one argmax
  expect_gradients_close(gpu, cpu);
}

}  // namespace

SAFL_CUDA_TEST(cuda_network_teacher_forced_logits_inference_and_training) {
  const Config c = narrow_config();
  const int64_t B = 4, T = c.tgt_len(), C = c.num_classes;
  Network cpu(c);
  init_network(cpu, 11);
  CudaNetwork gpu(cpu);
  const std::vector<float> images = smooth_images(c, B, 12);
  const std::vector<int32_t> targets = random_targets(c, B, 13);
  std::vector<float> expected(B * T * C), actual(B * T * C);
  const size_t buffer_floats = size_t(cpu.layout().buffer_floats);
  std::vector<float> initial_stats(buffer_floats);
  gpu.download_buffers(initial_stats.data());
  const float* host_stats = static_cast<const Network&>(cpu).buffers();
  EXPECT(initial_stats == std::vector<float>(host_stats, host_stats + buffer_floats));

  cpu.forward(expected.data(), images.data(), targets.data(), B, /*training=*/false, 0);
  gpu.forward(actual.data(), images.data(), targets.data(), B, /*training=*/false, 0);
  expect_close_tensor("inference logits", actual.data(), expected.data(), actual.size());
  const std::vector<float> initial_logits = actual;

  cpu.forward(expected.data(), images.data(), targets.data(), B, /*training=*/true, 14);
  gpu.forward(actual.data(), images.data(), targets.data(), B, /*training=*/true, 14);
  expect_close_tensor("training logits", actual.data(), expected.data(), actual.size());

  // The training forward updated the running statistics on both sides alike: the whole buffer,
  // then each tensor's update (after − before) on its own. An update is 0.1 · (batch statistic −
  // running value) and can be small next to the value it moves (a variance of 2.8 moved by 0.07),
  // so a wrong update (a biased variance, a wrong momentum, none at all) would hide in the whole
  // buffer's error; compared by itself it is wrong by order 1. The updates' tolerance is looser
  // than kTensorTolerance because TF32's error in a batch variance is amplified by
  // var / (var − 1) in its update (up to about 10 here).
  Network copy(c);
  gpu.download(copy);
  const float* cpu_stats = static_cast<const Network&>(cpu).buffers();
  const float* gpu_stats = static_cast<const Network&>(copy).buffers();
  expect_close_tensor("running statistics", gpu_stats, cpu_stats, buffer_floats);
  for (const auto& spec : cpu.layout().buffers) {
    std::vector<float> cpu_update(size_t(spec.numel)), gpu_update(size_t(spec.numel));
    for (int64_t i = 0; i < spec.numel; ++i) {
      cpu_update[size_t(i)] = cpu_stats[spec.offset + i] - initial_stats[size_t(spec.offset + i)];
      gpu_update[size_t(i)] = gpu_stats[spec.offset + i] - initial_stats[size_t(spec.offset + i)];
    }
    const double error = relative_l2(gpu_update.data(), cpu_update.data(), cpu_update.size());
    if (error > kUpdateTolerance) std::printf("    FAIL update of %s: relative L2 error %.3g\n", spec.name.c_str(), error);
    EXPECT(error <= kUpdateTolerance);
  }
  // The parameters came back as they went (no training step).
  EXPECT(relative_l2(static_cast<const Network&>(copy).params(), static_cast<const Network&>(cpu).params(),
                     size_t(cpu.layout().param_floats)) == 0.0);
  std::vector<float> stats(buffer_floats);
  gpu.download_buffers(stats.data());
  const float* downloaded = static_cast<const Network&>(copy).buffers();
  EXPECT(stats == std::vector<float>(downloaded, downloaded + buffer_floats));

  // Inference folds the updated statistics in ...
  cpu.forward(expected.data(), images.data(), targets.data(), B, /*training=*/false, 0);
  gpu.forward(actual.data(), images.data(), targets.data(), B, /*training=*/false, 0);
  expect_close_tensor("inference logits after training", actual.data(), expected.data(), actual.size());
  // ... and putting the old statistics back (a skipped step) folds them in again.
  gpu.upload_buffers(initial_stats.data());
  gpu.download_buffers(stats.data());
  EXPECT(stats == initial_stats);
  gpu.forward(actual.data(), images.data(), targets.data(), B, /*training=*/false, 0);
  expect_close_tensor("inference logits with the statistics restored", actual.data(), initial_logits.data(),
                      actual.size(), 1e-5);
}

SAFL_CUDA_TEST(cuda_network_forward_backward_gradients) {
  check_train_step(narrow_config(), 4, 21);
  check_train_step(narrow_config(), 3, 22);  // odd batch
  check_train_step(narrow_config(), 2, 23);  // the smallest training batch
}

SAFL_CUDA_TEST(cuda_network_dropout_matches_cpu_and_is_finite) {
  check_train_step(narrow_config(0.3f), 4, 31);
}

SAFL_CUDA_TEST(cuda_network_inference_batch_sizes) {
  const Config c = narrow_config();
  Network cpu(c);
  init_network(cpu, 35);
  CudaNetwork gpu(cpu);
  for (const int64_t B : {1, 3, 7}) {
    const std::vector<float> images = smooth_images(c, B, 36 + uint64_t(B));
    const std::vector<int32_t> targets = random_targets(c, B, 37 + uint64_t(B));
    std::vector<float> expected(B * c.tgt_len() * c.num_classes), actual(expected.size());
    cpu.forward(expected.data(), images.data(), targets.data(), B, /*training=*/false, 0);
    gpu.forward(actual.data(), images.data(), targets.data(), B, /*training=*/false, 0);
    const std::string label = "inference logits B=" + std::to_string(B);
    expect_close_tensor(label.c_str(), actual.data(), expected.data(), actual.size());
  }
}

SAFL_CUDA_TEST(cuda_network_adam_step) {
  const Config c = narrow_config();
  const int64_t B = 4;
  Network cpu(c);
  init_network(cpu, 41);
  CudaNetwork gpu(cpu);
  const int64_t P = cpu.layout().param_floats;
  const std::vector<float> images = smooth_images(c, B, 42);
  const std::vector<int32_t> targets = random_targets(c, B, 43);
  cpu.forward_backward(images.data(), targets.data(), B, 2.0f, 1.0f, 44);
  gpu.forward_backward(images.data(), targets.data(), B, 2.0f, 1.0f, 44);
  const double cpu_norm = safl::cpu::grad_norm(cpu.grads(), P);
  const double gpu_norm = gpu.grad_norm();
  std::printf("    gradient norm cpu %.6g cuda %.6g\n", cpu_norm, gpu_norm);
  EXPECT_NEAR(gpu_norm, cpu_norm, kTensorTolerance * cpu_norm);

  // The step itself: the CPU's adam_step on the CUDA gradients, from the same parameters.
  safl::AdamOptions options;
  options.lr = 1e-3f;
  options.weight_decay = 0.01f;
  options.decoupled_weight_decay = true;
  const float grad_scale = 0.7f;
  std::vector<float> grads(P), m(P, 0.0f), v(P, 0.0f);
  gpu.download_grads(grads.data());
  const float* start = static_cast<const Network&>(cpu).params();
  std::vector<float> expected(start, start + P);
  safl::cpu::adam_step(expected.data(), m.data(), v.data(), grads.data(), P, 1, grad_scale, options);
  gpu.adam_step(1, grad_scale, options);
  Network stepped(c);
  gpu.download(stepped);
  EXPECT_ALL_CLOSE(static_cast<const Network&>(stepped).params(), expected.data(), size_t(P), 1e-5, 1e-7);
  std::vector<float> gpu_m(P), gpu_v(P);
  gpu.download_moments(gpu_m.data(), gpu_v.data());
  EXPECT_ALL_CLOSE(gpu_m.data(), m.data(), size_t(P), 1e-5, 1e-10);
  EXPECT_ALL_CLOSE(gpu_v.data(), v.data(), size_t(P), 1e-5, 1e-14);

  // upload_moments replaces them (a resumed checkpoint).
  for (int64_t i = 0; i < P; ++i) m[i] = 0.5f * m[i] + 1e-4f, v[i] = 2.0f * v[i] + 1e-8f;
  gpu.upload_moments(m.data(), v.data());
  gpu.download_moments(gpu_m.data(), gpu_v.data());
  EXPECT(gpu_m == m && gpu_v == v);
}

// Note [confident prefix]: recognition is compared where the CPU's choices are clear. Along each
// CPU result, tokens must agree (and probabilities be close) while the CPU's probability of its
// token is at least kConfident (so the runner-up has at most 1 − kConfident); a result whose
// every character and EOS are that clear must be identical, with a close confidence. The network
// is first trained for a few Adam steps on the CPU so that most results are clear.
constexpr float kConfident = 0.7f;

SAFL_CUDA_TEST(cuda_network_greedy_recognition_matches_cpu) {
  const Config c = narrow_config();
  const int64_t B = 6;
  Network cpu(c);
  init_network(cpu, 51);
  const int64_t P = cpu.layout().param_floats;
  const std::vector<float> images = smooth_images(c, B, 52);
  const std::vector<int32_t> targets = random_targets(c, B, 53);
  std::vector<float> m(P, 0.0f), v(P, 0.0f);
  safl::AdamOptions options;
  options.lr = 1e-2f;
  float loss = 0.0f;
  for (int64_t step = 1; step <= 60; ++step) {
    loss = cpu.forward_backward(images.data(), targets.data(), B, 2.0f, 1.0f, uint64_t(step));
    safl::cpu::adam_step(cpu.params(), m.data(), v.data(), cpu.grads(), P, step, 1.0f, options);
  }
  std::printf("    CPU focal loss after 60 Adam steps: %.4f\n", double(loss));
  CudaNetwork gpu(cpu);

  int64_t clear_words = 0;
  for (const int64_t n : {1, 5, 6}) {
    const std::vector<Decoded> expected = cpu.recognize(images.data(), n);
    const std::vector<Decoded> actual = gpu.recognize(images.data(), n);
    EXPECT(int64_t(actual.size()) == n);
    if (int64_t(actual.size()) != n) continue;
    for (int64_t i = 0; i < n; ++i) {
      const Decoded& e = expected[i];
      const Decoded& a = actual[i];
      float product = 1.0f;
      bool clear = true;
      for (size_t k = 0; k < e.tokens.size() && clear; ++k) {
        clear = e.probs[k] >= kConfident;
        if (!clear) break;
        product *= e.probs[k];
        EXPECT(k < a.tokens.size() && a.tokens[k] == e.tokens[k]);
        if (k < a.probs.size()) EXPECT_NEAR(a.probs[k], e.probs[k], 0.05);
      }
      // A result of max_len characters may have ended without EOS (Note [the last position holds
      // only EOS] in network_decode.cpp): its confidence has no EOS factor, and where EOS nearly
      // won that last step the other backend may have ended it with EOS, the same characters at
      // a lower confidence. Such results are compared by their characters only.
      const bool may_be_unfinished = int64_t(e.tokens.size()) == c.max_len;
      const float eos_prob = product > 0.0f ? e.confidence / product : 0.0f;
      if (!clear || eos_prob < kConfident || may_be_unfinished) continue;
      ++clear_words;
      EXPECT(a.tokens == e.tokens);
      EXPECT_NEAR(a.confidence, e.confidence, 0.05);
    }
  }
  std::printf("    %lld of 12 results clear enough to compare whole\n", (long long)clear_words);
  EXPECT(clear_words >= 1);
}

SAFL_CUDA_TEST(cuda_network_argument_errors) {
  const Config c = narrow_config();
  Network cpu(c);
  init_network(cpu, 61);
  EXPECT_THROWS(CudaNetwork bad(cpu, 1000), safl::Error, "device index");
  CudaNetwork gpu(cpu);
  const std::vector<float> images = smooth_images(c, 2, 62);
  std::vector<int32_t> targets = random_targets(c, 2, 63);
  EXPECT_THROWS(gpu.recognize(images.data(), 2, 4), safl::Error, "beam_width 4");
  EXPECT(gpu.recognize(images.data(), 0).empty());
  EXPECT_THROWS(gpu.forward_backward(images.data(), targets.data(), 1, 2.0f, 1.0f, 0), safl::Error, "B >= 2");
  targets[3] = int32_t(c.num_classes);
  std::vector<float> logits(2 * c.tgt_len() * c.num_classes);
  EXPECT_THROWS(gpu.forward(logits.data(), images.data(), targets.data(), 2, false, 0), safl::Error,
                "expected targets in");
}

// Without a GPU (this test's point), constructing a CudaNetwork throws safl::Error naming the
// reason instead of crashing; with one, the availability check simply says so.
SAFL_TEST(cuda_network_without_gpu_throws_cleanly) {
  std::string reason;
  if (safl::model::cuda_device_available(&reason)) {
    safl::test::skip("a CUDA device answers; cuda_network_argument_errors covers the GPU side");
    return;
  }
  std::printf("    cuda_device_available: %s\n", reason.c_str());
  EXPECT(!reason.empty());
  Network cpu(narrow_config());
  EXPECT_THROWS(CudaNetwork gpu(cpu), safl::Error, "CudaNetwork");
}

#endif  // SAFL_WITH_CUDA
