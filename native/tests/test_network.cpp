// The whole SAFL network (model/network.h) on a micro configuration: gradient checks of every
// parameter tensor through the focal loss (training mode: batch statistics, dropout off and on),
// cached greedy decoding against teacher forcing, beam search, the folded inference copy against
// the training-mode ops, model files (round trips and errors naming the tensor), an overfitting
// run with Adam, argument errors, the tiny preset end to end (with timings printed), and its
// inference with bfloat16 products against float32.
//
// Note [gradcheck test point]: the forward runs in float32 and the network is only piecewise
// smooth: ReLU, max-pool, the TPS clamp and the bilinear sampler's pixel cells all have kinks, and
// a central difference that straddles one disagrees with the analytic gradient. The test point
// makes them rare: batch-norm biases at 3 ± 0.2 (normalised values sit about 3σ above the ReLU's
// kink), FFN fc1 biases at 2, control points well inside the clamp range (fc2 bias at margin 0.12,
// small fc2 weights) and smooth images (the sampler's slope changes little between pixel cells).
// The float loss carries noise of about 5e-7, i.e. 5e-7 / (2·eps) in a difference quotient, so
// the step is as large as the kinks allow: 1e-2 for the Transformer, 3e-3 for the backbone and
// 3e-4 for the localisation network (it moves the sampling grid, so a wide step crosses pixel
// cells), the last two with a floor of 1e-2 under which gradients are compared absolutely.
// Worst errors measured over init seeds 3–12: localisation 4.4e-2, backbone 4.4e-3, Transformer
// 7.7e-3; the tolerances leave about 2× margin. Wiring mistakes (a wrong buffer, a missing scale,
// a sign) give errors of order 1.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/matmul_precision.h"
#include "common/threadpool.h"
#include "model/network.h"
#include "model/safetensors.h"
#include "ops/optimizer.h"
#include "ops/tps.h"
#include "tests/harness.h"
#include "tests/network_images.h"

using safl::model::Config;
using safl::model::Decoded;
using safl::model::Network;

namespace {

using safl::test::smooth_images;

// 32×64 input, 32×32 localisation input, 32×8 rectified (S = 2), every width 2–8.
Config micro_config(float dropout = 0.0f) {
  Config c;
  c.in_h = 32, c.in_w = 64;
  c.loc_h = 32, c.loc_w = 32;
  c.rect_h = 32, c.rect_w = 8;
  c.fiducials = 6;
  c.loc_channels = {2, 2, 2, 2, 2, 2};
  c.loc_fc = 4;
  c.res_channels = {2, 2, 4, 4, 4};
  c.res_blocks = {1, 1, 1, 1, 1};
  c.d_model = 8, c.heads = 2, c.ffn = 8;
  c.enc_layers = 1, c.dec_layers = 1;
  c.max_len = 3;
  c.num_classes = 7;  // characters 0..3, EOS 4, PAD 5, UNK 6
  c.dropout = dropout;
  c.validate("micro config");
  return c;
}

// Image b is a different flat grey level plus noise: easy to tell apart even for a micro network.
std::vector<float> grey_images(const Config& c, int64_t B, uint64_t seed) {
  safl::test::Rng rng(seed);
  const int64_t n = 3 * c.in_h * c.in_w;
  std::vector<float> x(B * n);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < n; ++i) x[b * n + i] = -0.9f + 1.8f * float(b) / float(std::max<int64_t>(B - 1, 1)) + rng.uniform(-0.1f, 0.1f);
  return x;
}

std::vector<float> random_images(const Config& c, int64_t B, uint64_t seed) {
  safl::test::Rng rng(seed);
  std::vector<float> x(B * 3 * c.in_h * c.in_w);
  rng.fill_uniform(x.data(), x.size());
  return x;
}

// Random init, then a test point where the network's kinks are rare (Note [gradcheck test point]).
void init_for_gradcheck(Network& net, uint64_t seed) {
  net.init_random(seed);
  safl::test::Rng rng(seed + 100);
  for (const auto& spec : net.layout().params) {
    float* x = net.param(spec.name);
    const bool batchnorm_bias = spec.name.find("bn") != std::string::npos && spec.name.find(".bias") != std::string::npos;
    if (spec.name == "loc.fc2.weight") {
      rng.fill_uniform(x, spec.numel, -0.2f, 0.2f);
    } else if (spec.name == "loc.fc2.bias") {
      safl::fiducial_points(x, net.config().fiducials, 0.12);
    } else if (batchnorm_bias) {
      for (int64_t i = 0; i < spec.numel; ++i) x[i] = 3.0f + rng.uniform(-0.2f, 0.2f);
    } else if (spec.name.find("ffn.fc1.bias") != std::string::npos) {
      for (int64_t i = 0; i < spec.numel; ++i) x[i] = 2.0f + rng.uniform(-0.2f, 0.2f);
    } else if (spec.shape.size() == 1) {
      for (int64_t i = 0; i < spec.numel; ++i) x[i] += rng.uniform(-0.2f, 0.2f);
    }
  }
}

// Mean focal loss (γ = 2, α = 1) over non-PAD targets, in double, from float logits.
double focal_loss_double(const std::vector<float>& logits, const std::vector<int32_t>& targets, int64_t C,
                         int32_t pad) {
  double total = 0.0;
  int64_t count = 0;
  for (size_t n = 0; n < targets.size(); ++n) {
    if (targets[n] == pad) continue;
    const float* z = logits.data() + n * C;
    double largest = z[0];
    for (int64_t c = 1; c < C; ++c) largest = std::max(largest, double(z[c]));
    double sum = 0.0;
    for (int64_t c = 0; c < C; ++c) sum += std::exp(double(z[c]) - largest);
    const double logp = double(z[targets[n]]) - largest - std::log(sum);
    const double p = std::exp(logp);
    total += -(1.0 - p) * (1.0 - p) * logp;
    ++count;
  }
  return total / double(count);
}

// (B, T) targets: characters, EOS, then PAD.
std::vector<int32_t> micro_targets(const Config& c) {
  const int32_t eos = int32_t(c.eos()), pad = int32_t(c.pad()), unk = int32_t(c.unk());
  return {1, 2, eos, pad,   //
          3, 0, unk, eos,   //
          2, eos, pad, pad};
}

// Step, floor and tolerance per group (Note [gradcheck test point]).
safl::test::GradCheckOptions gradcheck_options(const std::string& group) {
  safl::test::GradCheckOptions o;
  o.max_points = 3;
  if (group == "loc") {
    o.eps = 3e-4, o.floor = 1e-2, o.tol = 1e-1;
  } else if (group == "backbone") {
    o.eps = 3e-3, o.floor = 1e-2, o.tol = 5e-2;
  } else {
    o.eps = 1e-2, o.floor = 1e-3, o.tol = 2e-2;
  }
  return o;
}

void gradcheck_all_parameters(float dropout, const char* label, bool transformer_only) {
  const Config c = micro_config(dropout);
  Network net(c);
  init_for_gradcheck(net, 3);
  const int64_t B = 3, T = c.tgt_len(), C = c.num_classes;
  const std::vector<float> images = smooth_images(c, B, 5);
  const std::vector<int32_t> targets = micro_targets(c);
  std::vector<float> logits(B * T * C);
  const uint64_t seed = 77;
  auto loss = [&] {
    net.forward(logits.data(), images.data(), targets.data(), B, /*training=*/true, seed);
    return focal_loss_double(logits, targets, C, int32_t(c.pad()));
  };
  auto backward = [&] { net.forward_backward(images.data(), targets.data(), B, 2.0f, 1.0f, seed); };
  // One gradcheck per group, every tensor of the group, a few points each.
  std::map<std::string, std::vector<safl::test::GradVar>> groups;
  for (const auto& spec : net.layout().params) {
    const std::string group = spec.name.substr(0, spec.name.find('.'));
    if (transformer_only && group != "encoder" && group != "decoder") continue;
    groups[group].push_back({spec.name, net.param(spec.name), net.grad(spec.name), size_t(spec.numel)});
  }
  for (const auto& [group, vars] : groups) {
    const double worst =
        safl::test::gradcheck(std::string(label) + "/" + group, vars, loss, backward, gradcheck_options(group));
    std::printf("    %s %-10s %2zu tensors, worst relative error %.2e\n", label, group.c_str(), vars.size(), worst);
  }
}

double log_softmax_at(const float* z, int64_t C, int64_t index) {
  double largest = z[0];
  for (int64_t c = 1; c < C; ++c) largest = std::max(largest, double(z[c]));
  double sum = 0.0;
  for (int64_t c = 0; c < C; ++c) sum += std::exp(double(z[c]) - largest);
  return double(z[index]) - largest - std::log(sum);
}

int64_t argmax(const float* z, int64_t C) { return std::max_element(z, z + C) - z; }

// Teacher-forced inference logits for decoded paths: each row's targets are its tokens, EOS, PAD.
std::vector<float> teacher_forced(Network& net, const std::vector<float>& images, const std::vector<Decoded>& paths) {
  const Config& c = net.config();
  const int64_t B = int64_t(paths.size()), T = c.tgt_len();
  std::vector<int32_t> targets(B * T, int32_t(c.pad()));
  for (int64_t b = 0; b < B; ++b) {
    const auto& tokens = paths[b].tokens;
    for (size_t t = 0; t < tokens.size(); ++t) targets[b * T + t] = tokens[t];
    targets[b * T + tokens.size()] = int32_t(c.eos());
  }
  std::vector<float> logits(B * T * c.num_classes);
  net.forward(logits.data(), images.data(), targets.data(), B, /*training=*/false, 0);
  return logits;
}

// Whether a decoded path ended with EOS: its confidence is the product of its probabilities
// times one more factor (EOS's) only then.
bool finished_path(const float* logits, const Decoded& path, int64_t C, int64_t eos, int64_t max_len) {
  if (int64_t(path.tokens.size()) < max_len) return true;
  return argmax(logits + path.tokens.size() * C, C) == eos;
}

// Beam search of Note [beam search] (network_decode.cpp) for image b, without caches: every step
// runs the teacher-forced inference forward on each live hypothesis.
Decoded reference_beam_search(Network& net, const std::vector<float>& images, int64_t b, int64_t width) {
  const Config& c = net.config();
  const int64_t T = c.tgt_len(), C = c.num_classes, image_floats = 3 * c.in_h * c.in_w;
  struct Hyp {
    std::vector<int32_t> tokens;
    std::vector<float> probs;
    double score = 0.0;
    float eos_prob = -1.0f;
  };
  std::vector<Hyp> live(1), finished;
  auto best = [](const std::vector<Hyp>& list) {
    const Hyp* h = nullptr;
    for (const Hyp& x : list)
      if (!h || x.score > h->score) h = &x;
    return h;
  };
  for (int64_t t = 0; t < T; ++t) {
    const int64_t n = int64_t(live.size());
    std::vector<float> batch(n * image_floats);
    std::vector<int32_t> targets(n * T, int32_t(c.pad()));
    for (int64_t j = 0; j < n; ++j) {
      std::copy(images.begin() + b * image_floats, images.begin() + (b + 1) * image_floats, batch.begin() + j * image_floats);
      std::copy(live[j].tokens.begin(), live[j].tokens.end(), targets.begin() + j * T);
    }
    std::vector<float> logits(n * T * C);
    net.forward(logits.data(), batch.data(), targets.data(), n, /*training=*/false, 0);
    struct Cand {
      double score;
      int64_t slot, rank;
      int32_t token;
      float prob;
    };
    std::vector<Cand> cands;
    for (int64_t j = 0; j < n; ++j) {
      const float* z = logits.data() + (j * T + t) * C;
      std::vector<int32_t> order(C);
      for (int32_t k = 0; k < C; ++k) order[k] = k;
      std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return z[x] > z[y]; });
      for (int64_t r = 0; r < width; ++r) {
        const double logp = log_softmax_at(z, C, order[r]);
        cands.push_back({live[j].score + logp, j, r, order[r], float(std::exp(logp))});
      }
    }
    std::stable_sort(cands.begin(), cands.end(), [](const Cand& x, const Cand& y) { return x.score > y.score; });
    const bool last = t == T - 1;
    std::vector<Hyp> next;
    for (size_t k = 0; k < cands.size(); ++k) {
      Hyp h = live[cands[k].slot];
      h.score = cands[k].score;
      if (cands[k].token == c.eos()) {
        if (int64_t(k) < width) {
          h.eos_prob = cands[k].prob;
          finished.push_back(h);
        }
      } else if (!last && int64_t(next.size()) < width) {
        h.tokens.push_back(cands[k].token);
        h.probs.push_back(cands[k].prob);
        next.push_back(h);
      }
    }
    if (last) break;
    live = next;
    if (live.empty() || (!finished.empty() && best(finished)->score >= best(live)->score)) break;
  }
  auto decoded = [](const Hyp& h) {
    Decoded d;
    d.tokens = h.tokens;
    d.probs = h.probs;
    float confidence = 1.0f;
    for (const float p : h.probs) confidence *= p;
    if (h.eos_prob >= 0.0f) confidence *= h.eos_prob;
    d.confidence = confidence;
    return d;
  };
  if (finished.empty()) return decoded(*best(live));
  // Note [alternatives]: the finished hypotheses by score, ties in finishing order; at most width.
  std::stable_sort(finished.begin(), finished.end(), [](const Hyp& x, const Hyp& y) { return x.score > y.score; });
  Decoded d = decoded(finished[0]);
  for (size_t k = 1; k < finished.size() && int64_t(k) < width; ++k) d.alternatives.push_back(decoded(finished[k]));
  return d;
}

// A micro network trained for `steps` Adam steps on B = 6 images whose labels have 0 to 3
// characters, so that decoding ends at different steps for different images.
void train_micro(Network& net, const std::vector<float>& images, int64_t steps) {
  const Config& c = net.config();
  const int32_t eos = int32_t(c.eos()), pad = int32_t(c.pad());
  const std::vector<int32_t> targets = {eos, pad, pad, pad,  //
                                        2, eos, pad, pad,    //
                                        1, 3, eos, pad,      //
                                        0, 2, 1, eos,        //
                                        3, 3, eos, pad,      //
                                        1, eos, pad, pad};
  const int64_t P = net.layout().param_floats;
  std::vector<float> m(P, 0.0f), v(P, 0.0f);
  safl::AdamOptions options;
  options.lr = 1e-2f;
  for (int64_t step = 1; step <= steps; ++step) {
    net.forward_backward(images.data(), targets.data(), 6, 2.0f, 1.0f, uint64_t(step));
    safl::cpu::adam_step(net.params(), m.data(), v.data(), net.grads(), P, step, 1.0f, options);
  }
}

}  // namespace

SAFL_TEST(network_gradcheck_every_parameter) {
  gradcheck_all_parameters(0.0f, "network", /*transformer_only=*/false);
}

SAFL_TEST(network_gradcheck_with_dropout) {
  gradcheck_all_parameters(0.3f, "network+dropout", /*transformer_only=*/true);
}

SAFL_TEST(network_init_random_roles_and_determinism) {
  const Config c = micro_config();
  Network a(c), b(c), other(c);
  a.init_random(5);
  b.init_random(5);
  other.init_random(6);
  const int64_t P = a.layout().param_floats;
  EXPECT(std::equal(a.params(), a.params() + P, b.params()));
  EXPECT(!std::equal(a.params(), a.params() + P, other.params()));
  std::vector<float> identity(2 * c.fiducials);
  safl::fiducial_points(identity.data(), c.fiducials, safl::kTpsInitialMargin);
  EXPECT(std::equal(identity.begin(), identity.end(), a.param("loc.fc2.bias")));
  for (const auto& spec : a.layout().params) {
    const float* x = a.param(spec.name);
    const bool weight = spec.name.size() > 7 && spec.name.compare(spec.name.size() - 7, 7, ".weight") == 0;
    auto all = [&](float v) { return std::all_of(x, x + spec.numel, [&](float y) { return y == v; }); };
    if (spec.name == "loc.fc2.weight") {
      EXPECT(all(0.0f));
    } else if (spec.shape.size() == 1 && spec.name != "loc.fc2.bias" && spec.name != "loc.fc1.bias") {
      EXPECT(all(weight ? 1.0f : 0.0f));  // batch and layer norms (1, 0), Transformer biases 0
    } else if (spec.shape.size() == 2 && spec.name != "decoder.embed.weight" && spec.name != "loc.fc1.weight") {
      const double bound = std::sqrt(6.0 / double(spec.shape[0] + spec.shape[1]));  // Xavier uniform
      EXPECT(std::all_of(x, x + spec.numel, [&](float y) { return std::fabs(y) <= bound; }));
      EXPECT(!all(0.0f));
    }
  }
  for (const auto& spec : a.layout().buffers) {
    const float* x = a.buffer(spec.name);
    const float expected = spec.name.find("running_var") != std::string::npos ? 1.0f : 0.0f;
    EXPECT(std::all_of(x, x + spec.numel, [&](float y) { return y == expected; }));
  }
}

// Greedy words must be what teacher forcing with their own tokens gives: each token the argmax,
// its probability the log-softmax's, EOS the argmax after a word shorter than max_len, and the
// confidence the product of the probabilities (and EOS's when the word finished), within
// confidence_tolerance.
void expect_greedy_follows_teacher_forcing(Network& net, const std::vector<float>& images,
                                           const std::vector<Decoded>& greedy, double confidence_tolerance = 1e-5) {
  const Config& c = net.config();
  const int64_t C = c.num_classes, T = c.tgt_len();
  const std::vector<float> logits = teacher_forced(net, images, greedy);
  for (size_t b = 0; b < greedy.size(); ++b) {
    const Decoded& g = greedy[b];
    EXPECT(g.tokens.size() <= size_t(c.max_len));
    EXPECT(g.probs.size() == g.tokens.size());
    const float* row = logits.data() + b * T * C;
    double product = 1.0;
    for (size_t t = 0; t < g.tokens.size(); ++t) {
      EXPECT(argmax(row + t * C, C) == g.tokens[t]);
      EXPECT_NEAR(g.probs[t], std::exp(log_softmax_at(row + t * C, C, g.tokens[t])), 1e-5);
      product *= g.probs[t];
    }
    const bool finished = finished_path(row, g, C, c.eos(), c.max_len);
    if (int64_t(g.tokens.size()) < c.max_len) EXPECT(argmax(row + g.tokens.size() * C, C) == c.eos());
    if (finished) product *= std::exp(log_softmax_at(row + g.tokens.size() * C, C, c.eos()));
    EXPECT_NEAR(g.confidence, product, confidence_tolerance);
  }
}

SAFL_TEST(network_greedy_matches_teacher_forcing) {
  const Config c = micro_config();
  Network net(c);
  net.init_random(11);
  const int64_t B = 6;
  const std::vector<float> images = grey_images(c, B, 12);
  train_micro(net, images, 60);
  const std::vector<Decoded> greedy = net.recognize(images.data(), B, 1);
  EXPECT(int64_t(greedy.size()) == B);
  expect_greedy_follows_teacher_forcing(net, images, greedy);
  std::vector<size_t> lengths;
  for (const Decoded& g : greedy) lengths.push_back(g.tokens.size());
  std::printf("    greedy lengths:");
  for (size_t n : lengths) std::printf(" %zu", n);
  std::printf("\n");
  // Sequences of different lengths: some images finish early (the caches are compacted).
  EXPECT(*std::min_element(lengths.begin(), lengths.end()) < *std::max_element(lengths.begin(), lengths.end()));

  const std::vector<Decoded> beam1 = net.recognize(images.data(), B, 1);
  for (int64_t b = 0; b < B; ++b) {
    EXPECT(beam1[b].tokens == greedy[b].tokens);
    EXPECT(beam1[b].probs == greedy[b].probs);
    EXPECT(beam1[b].confidence == greedy[b].confidence);
  }
}

// The same words, probabilities, confidence and alternatives, bit for bit.
bool same_decoded(const Decoded& a, const Decoded& b) {
  if (a.tokens != b.tokens || a.probs != b.probs || a.confidence != b.confidence) return false;
  if (a.alternatives.size() != b.alternatives.size()) return false;
  for (size_t i = 0; i < a.alternatives.size(); ++i)
    if (!same_decoded(a.alternatives[i], b.alternatives[i])) return false;
  return true;
}

SAFL_TEST(network_inference_in_parts) {
  // Note [images in parts]: on 3 pool threads, 17 images of the micro config (at least 8 a part)
  // are recognised in two parts, images 0–7 and 8–16. Each image's result, greedy and with a beam,
  // and its teacher-forced logits, must be those of recognising its part alone, bit for bit.
  const Config c = micro_config();
  Network net(c);
  net.init_random(31);
  const int64_t B = 17, first = 8, T = c.tgt_len(), C = c.num_classes, image = 3 * c.in_h * c.in_w;
  const std::vector<float> images = random_images(c, B, 32);
  safl::test::Rng rng(33);
  std::vector<int32_t> targets(B * T);
  for (int32_t& t : targets) t = int32_t(rng.next() % uint64_t(C));
  safl::set_num_threads(3);
  for (const int64_t width : {1, 3}) {
    const std::vector<Decoded> all = net.recognize(images.data(), B, width);
    std::vector<Decoded> parts = net.recognize(images.data(), first, width);
    const std::vector<Decoded> second = net.recognize(images.data() + first * image, B - first, width);
    parts.insert(parts.end(), second.begin(), second.end());
    EXPECT(all.size() == parts.size());
    for (int64_t b = 0; b < B; ++b) EXPECT(same_decoded(all[b], parts[b]));
  }
  std::vector<float> all(B * T * C), parts(B * T * C);
  net.forward(all.data(), images.data(), targets.data(), B, /*training=*/false, 0);
  net.forward(parts.data(), images.data(), targets.data(), first, /*training=*/false, 0);
  net.forward(parts.data() + first * T * C, images.data() + first * image, targets.data() + first * T, B - first,
              /*training=*/false, 0);
  EXPECT(all == parts);
  safl::set_num_threads(safl::hardware_threads());
}

SAFL_TEST(network_decoding_from_packed_weights) {
  // With bfloat16 products, every decoding step multiplies the decoder's packed weights (Note
  // [packed decoder weights]), however few rows are left. 18 rows start together and end apart
  // as images finish: the words, their probabilities and the confidence must follow teacher
  // forcing, whose products are bfloat16 too. The packed copy must follow changes made through
  // param(), as a fresh network with the same parameters decodes.
  if (safl::test::skip_without_bfloat16_products()) return;
  const Config c = micro_config();
  Network net(c);
  net.init_random(11);
  const std::vector<float> trained = grey_images(c, 6, 12);
  train_micro(net, trained, 60);
  std::vector<float> images;
  for (int copy = 0; copy < 3; ++copy) images.insert(images.end(), trained.begin(), trained.end());
  const safl::MatmulPrecisionScope precision(safl::MatmulPrecision::BFloat16);
  const int64_t B = 18, C = c.num_classes;
  const std::vector<Decoded> greedy = net.recognize(images.data(), B, 1);
  expect_greedy_follows_teacher_forcing(net, images, greedy);

  float* classifier = net.param("classifier.weight");
  for (int64_t i = 0; i < C * c.d_model; ++i) classifier[i] = -classifier[i];
  const std::vector<Decoded> changed = net.recognize(images.data(), B, 1);
  Network fresh(c);
  const int64_t P = net.layout().param_floats, buffers = net.layout().buffer_floats;
  std::copy(net.params(), net.params() + P, fresh.params());
  const Network& view = net;
  std::copy(view.buffers(), view.buffers() + buffers, fresh.buffers());
  const std::vector<Decoded> expected = fresh.recognize(images.data(), B, 1);
  int64_t differ = 0;
  for (int64_t b = 0; b < B; ++b) {
    EXPECT(changed[b].tokens == expected[b].tokens);
    EXPECT(changed[b].probs == expected[b].probs);
    differ += changed[b].tokens != greedy[b].tokens;
  }
  EXPECT(differ > 0);  // the change did change the words
}

SAFL_TEST(network_beam_search_matches_uncached_reference) {
  // An untrained network with EOS made rare or likely (through its classifier bias): scores are
  // close, so beams reorder often and run to full length, or finish at different steps.
  const Config c = micro_config();
  for (const float eos_bias : {-1.0f, 0.8f}) {
    Network net(c);
    net.init_random(21);
    net.param("classifier.bias")[c.eos()] = eos_bias;
    const int64_t B = 4;
    const std::vector<float> images = random_images(c, B, 22);
    const std::vector<Decoded> greedy = net.recognize(images.data(), B, 1);
    for (const int64_t width : {1, 2, 3, 5}) {
      const std::vector<Decoded> beam = net.recognize(images.data(), B, width);
      int64_t better = 0;
      size_t alternatives = 0;
      for (int64_t b = 0; b < B; ++b) {
        const Decoded expected = reference_beam_search(net, images, b, width);
        const Decoded& h = beam[b];
        EXPECT(h.tokens == expected.tokens);
        EXPECT(h.tokens.size() <= size_t(c.max_len));
        if (h.probs.size() == expected.probs.size())
          EXPECT_ALL_CLOSE(h.probs.data(), expected.probs.data(), h.probs.size(), 1e-5, 1e-6);
        EXPECT_NEAR(h.confidence, expected.confidence, 1e-5 * expected.confidence);
        EXPECT(h.alternatives.size() == expected.alternatives.size());
        EXPECT(int64_t(h.alternatives.size()) < width);
        for (size_t k = 0; k < std::min(h.alternatives.size(), expected.alternatives.size()); ++k) {
          const Decoded& alternative = h.alternatives[k];
          EXPECT(alternative.tokens == expected.alternatives[k].tokens);
          EXPECT(alternative.tokens != h.tokens);
          EXPECT_NEAR(alternative.confidence, expected.alternatives[k].confidence,
                      1e-5 * expected.alternatives[k].confidence);
          EXPECT(alternative.confidence <= (k == 0 ? h.confidence : h.alternatives[k - 1].confidence) * (1 + 1e-6));
        }
        alternatives += h.alternatives.size();
        const double beam_score = std::log(double(h.confidence));
        const double greedy_score = std::log(double(greedy[b].confidence));
        EXPECT(beam_score >= greedy_score - 1e-5);
        better += beam_score > greedy_score + 1e-5;
      }
      size_t length = 0;
      for (const Decoded& h : beam) length += h.tokens.size();
      std::printf("    eos bias %+.1f width %lld: %zu tokens over %lld images, beats greedy on %lld, %zu alternatives\n",
                  eos_bias, (long long)width, length, (long long)B, (long long)better, alternatives);
      if (width == 1) EXPECT(alternatives == 0);
      if (width > 1 && eos_bias > 0) EXPECT(alternatives > 0);  // words that end at different steps
    }
  }
}

SAFL_TEST(network_folded_inference_matches_training_ops) {
  // With every running statistic set to the batch statistics of a training forward, inference
  // (folded batch norm) must reproduce the training-mode forward, which runs the plain ops. The
  // statistics are recovered from one update of running stats that start at 0: running = 0.1·batch.
  const Config c = micro_config();
  Network net(c);
  init_for_gradcheck(net, 31);
  const int64_t B = 4, T = c.tgt_len(), C = c.num_classes;
  const std::vector<float> images = random_images(c, B, 32);
  const std::vector<int32_t> targets = {1, 2, 4, 5, 3, 0, 6, 4, 2, 4, 5, 5, 0, 0, 0, 4};
  std::fill(net.buffers(), net.buffers() + net.layout().buffer_floats, 0.0f);
  std::vector<float> train_logits(B * T * C), infer_logits(B * T * C);
  net.forward(train_logits.data(), images.data(), targets.data(), B, /*training=*/true, 0);

  // Values per channel n = B·H·W of each batch norm (micro geometry).
  auto values_per_channel = [&](const std::string& name) -> int64_t {
    if (name.rfind("loc.conv", 0) == 0) {
      const int64_t i = name[8] - '0';
      return B * (c.loc_h >> i) * (c.loc_w >> i);
    }
    if (name.rfind("loc.fc1.bn", 0) == 0) return B;
    if (name.rfind("backbone.stem", 0) == 0) return B * c.rect_h * c.rect_w;
    const int64_t stage = name[14] - '0';  // "backbone.stage<s>..."
    const int64_t heights[5] = {16, 8, 4, 2, 1}, widths[5] = {4, 2, 2, 2, 2};
    return B * heights[stage] * widths[stage];
  };
  for (const auto& spec : net.layout().buffers) {
    float* x = net.buffer(spec.name);
    const bool is_var = spec.name.find("running_var") != std::string::npos;
    const int64_t n = values_per_channel(spec.name);
    for (int64_t i = 0; i < spec.numel; ++i)
      x[i] = is_var ? float(double(x[i]) / 0.1 * double(n - 1) / double(n)) : float(double(x[i]) / 0.1);
  }
  net.forward(infer_logits.data(), images.data(), targets.data(), B, /*training=*/false, 0);
  EXPECT_ALL_CLOSE(infer_logits.data(), train_logits.data(), infer_logits.size(), 2e-4, 2e-4);
  std::printf("    folded inference vs training ops: max relative difference %.2e\n",
              safl::test::max_rel_diff(infer_logits.data(), train_logits.data(), infer_logits.size(), 1e-2));

  // The folded copy is cached, and rebuilt when a buffer or parameter changes.
  std::vector<float> again(B * T * C);
  net.forward(again.data(), images.data(), targets.data(), B, false, 0);
  EXPECT(again == infer_logits);
  net.buffer("backbone.stem.bn.running_mean")[0] += 0.5f;
  net.forward(again.data(), images.data(), targets.data(), B, false, 0);
  EXPECT(again != infer_logits);
  net.buffer("backbone.stem.bn.running_mean")[0] -= 0.5f;
  net.param("loc.fc1.bn.weight")[1] *= 1.5f;
  net.forward(again.data(), images.data(), targets.data(), B, false, 0);
  EXPECT(again != infer_logits);
}

SAFL_TEST(network_save_load_roundtrip_and_errors) {
  const Config c = micro_config();
  Network net(c);
  init_for_gradcheck(net, 41);
  safl::test::Rng rng(42);
  rng.fill_uniform(net.buffers(), net.layout().buffer_floats, 0.1f, 2.0f);
  const std::map<std::string, std::string> metadata = {{"format", "safl-1"}};
  const std::vector<uint8_t> first = net.save(safl::DType::F32, metadata);
  Network other(c);
  other.load(safl::SafeTensors::parse(first, "first"));
  EXPECT(other.save(safl::DType::F32, metadata) == first);

  // Float16: every value within half precision of the original.
  Network half(c);
  half.load(safl::SafeTensors::parse(net.save(safl::DType::F16, metadata), "half"));
  EXPECT_ALL_CLOSE(half.params(), net.params(), net.layout().param_floats, 1e-3, 1e-4);
  EXPECT_ALL_CLOSE(half.buffers(), net.buffers(), net.layout().buffer_floats, 1e-3, 1e-4);

  // Files built by hand from the network's tensors, one thing wrong each.
  auto views = [&](Network& n) {
    std::vector<safl::TensorView> v;
    for (const auto& spec : n.layout().params) v.push_back({spec.name, spec.shape, n.param(spec.name)});
    for (const auto& spec : n.layout().buffers) v.push_back({spec.name, spec.shape, n.buffer(spec.name)});
    return v;
  };
  auto load_views = [&](const std::vector<safl::TensorView>& v) {
    other.load(safl::SafeTensors::parse(safl::write_safetensors(v, metadata, safl::DType::F32), "bad.safetensors"));
  };
  {
    auto v = views(net);
    for (auto& t : v)
      if (t.name == "loc.fc2.bias") t.shape = {c.fiducials, 2};
    EXPECT_THROWS(load_views(v), safl::Error, "tensor 'loc.fc2.bias': expected shape [12]");
  }
  {
    std::vector<float> bad(net.param("classifier.weight"), net.param("classifier.weight") + c.num_classes * c.d_model);
    bad[5] = std::nanf("");
    auto v = views(net);
    for (auto& t : v)
      if (t.name == "classifier.weight") t.data = bad.data();
    EXPECT_THROWS(load_views(v), safl::Error, "tensor 'classifier.weight' holds a non-finite value");
  }
  {
    const float one = 1.0f;
    auto v = views(net);
    v.push_back({"decoder.extra.weight", {1}, &one});
    EXPECT_THROWS(load_views(v), safl::Error, "unexpected tensor 'decoder.extra.weight'");
  }
  {
    auto v = views(net);
    v.erase(std::remove_if(v.begin(), v.end(), [](const safl::TensorView& t) { return t.name == "decoder.norm.bias"; }),
            v.end());
    EXPECT_THROWS(load_views(v), safl::Error, "tensor 'decoder.norm.bias' is missing");
  }
  {
    auto v = views(net);
    v.erase(std::remove_if(v.begin(), v.end(),
                           [](const safl::TensorView& t) { return t.name == "loc.conv3.bn.running_var"; }),
            v.end());
    EXPECT_THROWS(load_views(v), safl::Error, "tensor 'loc.conv3.bn.running_var' is missing");
  }
  // Failed loads left `other` as the first file made it.
  EXPECT(other.save(safl::DType::F32, metadata) == first);
}

SAFL_TEST(network_overfits_one_batch_with_adam) {
  const Config c = micro_config();
  Network net(c);
  net.init_random(51);
  const int64_t B = 3, P = net.layout().param_floats;
  const std::vector<float> images = random_images(c, B, 52);
  const std::vector<int32_t> targets = micro_targets(c);
  std::vector<float> m(P, 0.0f), v(P, 0.0f);
  safl::AdamOptions options;
  options.lr = 1e-2f;
  float first = 0.0f, last = 0.0f;
  int64_t correct = 0;
  float* params = net.params();
  for (int64_t step = 1; step <= 30; ++step) {
    last = net.forward_backward(images.data(), targets.data(), B, 2.0f, 1.0f, uint64_t(step), &correct);
    if (step == 1) first = last;
    EXPECT(std::isfinite(last));
    safl::cpu::adam_step(params, m.data(), v.data(), net.grads(), P, step, 1.0f, options);
  }
  std::printf("    focal loss %.4f -> %.4f after 30 Adam steps, %lld of 9 tokens right\n", first, last,
              (long long)correct);
  EXPECT(last < 0.25f * first);
}

SAFL_TEST(network_argument_errors) {
  const Config c = micro_config();
  Network net(c);
  net.init_random(61);
  const std::vector<float> images = random_images(c, 2, 62);
  std::vector<int32_t> targets = {1, 2, 4, 5, 3, 0, 6, 4};
  std::vector<float> logits(2 * c.tgt_len() * c.num_classes);
  EXPECT_THROWS(net.recognize(images.data(), 2, 0), safl::Error,
                "Network::recognize: expected beam_width between 1 and 7 but received 0");
  EXPECT_THROWS(net.recognize(images.data(), -1, 1), safl::Error, "Network::recognize: expected B >= 0 but received -1");
  EXPECT(net.recognize(images.data(), 0, 1).empty());
  EXPECT_THROWS(net.forward_backward(images.data(), targets.data(), 1, 2.0f, 1.0f, 0), safl::Error,
                "Network::forward_backward: expected B >= 2 (batch statistics) but received 1");
  EXPECT_THROWS(net.forward(logits.data(), images.data(), targets.data(), 1, true, 0), safl::Error,
                "Network::forward: expected B >= 2 in training");
  targets[6] = 7;
  EXPECT_THROWS(net.forward(logits.data(), images.data(), targets.data(), 2, false, 0), safl::Error,
                "Network::forward: expected targets in [0, 7) but received 7 at (1, 2)");
  EXPECT_THROWS(net.forward_backward(images.data(), targets.data(), 2, 2.0f, 1.0f, 0), safl::Error,
                "expected targets in [0, 7) but received 7 at (1, 2)");
  targets[6] = 6;
  EXPECT_THROWS(net.forward_backward(images.data(), targets.data(), 2, -1.0f, 1.0f, 0), safl::Error,
                "focal_loss: expected a finite gamma >= 0");
  EXPECT_THROWS(net.param("no.such.tensor"), safl::Error, "no parameter named 'no.such.tensor'");
  EXPECT_THROWS(net.buffer("loc.fc1.weight"), safl::Error, "no buffer named 'loc.fc1.weight'");
}

SAFL_TEST(network_dropout_is_deterministic_and_training_only) {
  const Config c = micro_config(0.3f);
  Network net(c);
  net.init_random(71);
  const int64_t B = 3, n = B * c.tgt_len() * c.num_classes;
  const std::vector<float> images = random_images(c, B, 72);
  const std::vector<int32_t> targets = micro_targets(c);
  std::vector<float> a(n), b(n), d(n), e(n), f(n);
  net.forward(a.data(), images.data(), targets.data(), B, true, 5);
  net.forward(b.data(), images.data(), targets.data(), B, true, 5);
  net.forward(d.data(), images.data(), targets.data(), B, true, 6);
  EXPECT(a == b);
  EXPECT(a != d);
  net.forward(e.data(), images.data(), targets.data(), B, false, 5);
  net.forward(f.data(), images.data(), targets.data(), B, false, 6);
  EXPECT(e == f);
}

SAFL_TEST(network_tiny_preset_end_to_end) {
  const Config c = safl::model::preset("tiny", 97);
  Network net(c);
  net.init_random(81);
  const std::vector<float> images = random_images(c, 8, 82);
  const std::vector<Decoded> two = net.recognize(images.data(), 2, 1);
  EXPECT(two.size() == 2);
  for (const Decoded& r : two) {
    EXPECT(r.tokens.size() <= size_t(c.max_len));
    EXPECT(r.probs.size() == r.tokens.size());
    EXPECT(r.confidence >= 0.0f && r.confidence <= 1.0f);
    for (const int32_t t : r.tokens) EXPECT(t >= 0 && t < c.num_classes && t != c.eos());
  }
  // Timings at B = 8, for information.
  const int64_t B = 8, T = c.tgt_len();
  std::vector<int32_t> targets(B * T, int32_t(c.pad()));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < 5; ++t) targets[b * T + t] = int32_t((b * 7 + t * 3) % c.charset_size());
    targets[b * T + 5] = int32_t(c.eos());
  }
  std::vector<float> logits(B * T * c.num_classes);
  using clock = std::chrono::steady_clock;
  auto ms_since = [](clock::time_point start) {
    return std::chrono::duration<double, std::milli>(clock::now() - start).count();
  };
  net.forward(logits.data(), images.data(), targets.data(), B, false, 0);  // warm the arena
  auto start = clock::now();
  net.forward(logits.data(), images.data(), targets.data(), B, false, 0);
  const double forward_ms = ms_since(start);
  EXPECT_FINITE(logits.data(), logits.size());
  net.recognize(images.data(), B, 1);
  start = clock::now();
  const std::vector<Decoded> greedy = net.recognize(images.data(), B, 1);
  const double greedy_ms = ms_since(start);
  start = clock::now();
  net.recognize(images.data(), B, 3);
  const double beam_ms = ms_since(start);
  size_t tokens = 0;
  for (const Decoded& r : greedy) tokens += r.tokens.size();
  std::printf("    tiny, B=8: teacher-forced inference forward %.1f ms, greedy recognize %.1f ms (%zu tokens), "
              "beam 3 %.1f ms\n",
              forward_ms, greedy_ms, tokens, beam_ms);
}

SAFL_TEST(network_bfloat16_inference_stays_close_to_float32) {
  // Note [bfloat16 tolerances]: with every product's operands rounded to bfloat16 (relative error
  // up to 2^-9 each), the tiny preset's teacher-forced logits moved by at most 0.023, and greedy
  // decoding gave the same tokens with character probabilities within 0.0015, when this test was
  // written. A product that skipped the rounding of one operand or read a wrong panel moves them by
  // orders of magnitude more; the tolerances leave a wide margin for other seeds and CPUs.
  if (safl::test::skip_without_bfloat16_products()) return;
  const Config c = safl::model::preset("tiny", 97);
  const int64_t B = 4, T = c.tgt_len();
  std::vector<int32_t> targets(B * T, int32_t(c.pad()));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < 6; ++t) targets[b * T + t] = int32_t((b * 5 + t * 11) % c.charset_size());
    targets[b * T + 6] = int32_t(c.eos());
  }
  const std::vector<float> images = random_images(c, B, 91);
  Network net(c);
  net.init_random(90);
  std::vector<float> logits[2];
  std::vector<Decoded> words[2];
  for (int run = 0; run < 2; ++run) {
    const safl::MatmulPrecisionScope precision(run == 0 ? safl::MatmulPrecision::Float32 : safl::MatmulPrecision::BFloat16);
    logits[run].resize(size_t(B * T * c.num_classes));
    net.forward(logits[run].data(), images.data(), targets.data(), B, false, 0);
    words[run] = net.recognize(images.data(), B, 1);
  }
  double largest = 0;
  for (size_t i = 0; i < logits[0].size(); ++i) largest = std::max(largest, double(std::fabs(logits[1][i] - logits[0][i])));
  std::printf("    largest teacher-forced logit difference %.3g\n", largest);
  EXPECT(largest > 0.0 && largest < 0.1);  // > 0: the products did run in bfloat16
  double probability_gap = 0;
  for (int64_t b = 0; b < B; ++b) {
    EXPECT(words[1][b].tokens == words[0][b].tokens);
    if (words[1][b].probs.size() != words[0][b].probs.size()) continue;
    for (size_t t = 0; t < words[0][b].probs.size(); ++t)
      probability_gap = std::max(probability_gap, double(std::fabs(words[1][b].probs[t] - words[0][b].probs[t])));
  }
  std::printf("    greedy: same tokens, largest character probability difference %.3g\n", probability_gap);
  EXPECT(probability_gap < 0.02);
}
