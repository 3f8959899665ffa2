// Whole-network CUDA benchmark, no Node needed: images/s of model::CudaNetwork (native/cuda/) for
// the tiny and base presets, random weights, in three modes —
//   train    forward + backward with the focal loss, global gradient norm, clipping and Adam
//   greedy   greedy decoding with the device key/value caches (recognize, beam 1)
//   forward  teacher-forced inference forward (logits copied back)
// at a few batch sizes each. Prints a table and, with --json FILE, appends one JSON line per
// measurement ({"impl":"safl-cuda","config","mode","batch","img_per_s","ms_per_iter",...}) that
// scripts/gpu-check.sh joins with scripts/parity/torch_gpu_bench.py's lines.
//
//   safl_bench_cuda_model [--configs tiny,base] [--train-batches 64,128,256]
//                         [--infer-batches 1,64,256] [--seconds 0.5] [--json FILE]
//
// Each measurement runs two warm-up iterations (module load, the activation arena grown to the
// batch), then times back-to-back iterations for at least --seconds (at least 3 iterations), from a
// cudaDeviceSynchronize() before the first to one after the last: work still queued on the GPU
// when the clock passes --seconds is counted. Inference modes run before training on each network, so
// they see the freshly initialised weights.
//
// Note [EOS suppressed]: as in bench_model.cpp, the classifier's EOS bias is set to -1e4 so that
// greedy decoding runs all max_len + 1 steps instead of stopping whenever a random network emits
// EOS; torch_gpu_bench.py does the same.
//
// Note [images from the host]: CudaNetwork takes host images and stages them through pinned memory,
// so every timed iteration includes the copy of its batch to the device (B × 3 × 64 × 256 floats);
// torch_gpu_bench.py copies its batch from pinned host memory each iteration too.
//
// Without CUDA in the build, or without a usable GPU, prints "no GPU: <reason>" and exits with 0.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#ifdef SAFL_WITH_CUDA
#include "cuda/cuda_check.h"
#include "model/network.h"
#include "model/network_cuda.h"
#include "ops/optimizer.h"
#endif

namespace {

struct Args {
  std::vector<std::string> configs = {"tiny", "base"};
  std::vector<int64_t> train_batches = {64, 128, 256};
  std::vector<int64_t> infer_batches = {1, 64, 256};
  double seconds = 0.5;
  std::string json;
};

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');)
    if (!part.empty()) parts.push_back(part);
  return parts;
}

std::vector<int64_t> split_integers(const std::string& text) {
  std::vector<int64_t> values;
  for (const std::string& part : split(text)) values.push_back(std::max<int64_t>(1, std::atoll(part.c_str())));
  return values;
}

#ifdef SAFL_WITH_CUDA

constexpr int kWarmup = 2;
constexpr int kMinIterations = 3;
constexpr float kMaxNorm = 5.0f;  // the Trainer's default clip

struct Measurement {
  int iterations;
  double seconds;
};

// Runs fn kWarmup times, then back-to-back for at least min_seconds (Note in the file header).
template <class Fn>
Measurement measure(Fn fn, double min_seconds) {
  for (int i = 0; i < kWarmup; ++i) fn();
  SAFL_CUDA_CHECK(cudaDeviceSynchronize());
  const auto start = std::chrono::steady_clock::now();
  int iterations = 0;
  double seconds = 0.0;
  while (iterations < kMinIterations || seconds < min_seconds) {
    fn();
    ++iterations;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  SAFL_CUDA_CHECK(cudaDeviceSynchronize());
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {iterations, seconds};
}

// Deterministic images in [-1, 1], (B, 3, in_h, in_w).
std::vector<float> random_images(const safl::model::Config& config, int64_t B) {
  std::vector<float> images(size_t(B * 3 * config.in_h * config.in_w));
  uint64_t s = 42;
  for (float& x : images) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = float(s >> 40) / float(1 << 23) - 1.0f;
  }
  return images;
}

// Full-length targets (B, T): max_len characters, then EOS.
std::vector<int32_t> full_targets(const safl::model::Config& config, int64_t B) {
  const int64_t T = config.tgt_len();
  std::vector<int32_t> targets(size_t(B * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      targets[size_t(b * T + t)] =
          t == T - 1 ? int32_t(config.eos()) : int32_t((b * 7 + t * 13) % config.charset_size());
  return targets;
}

void report(FILE* json, const std::string& gpu, const std::string& config, const char* mode, int64_t B,
            const Measurement& m) {
  const double img_per_s = double(B) * m.iterations / m.seconds;
  const double ms = 1e3 * m.seconds / m.iterations;
  std::printf("%-6s %-8s %6lld %12.1f %11.2f %6d\n", config.c_str(), mode, (long long)B, img_per_s, ms, m.iterations);
  std::fflush(stdout);
  if (json) {
    std::fprintf(json,
                 "{\"impl\":\"safl-cuda\",\"config\":\"%s\",\"mode\":\"%s\",\"batch\":%lld,\"img_per_s\":%.2f,"
                 "\"ms_per_iter\":%.3f,\"iterations\":%d,\"gpu\":\"%s\"}\n",
                 config.c_str(), mode, (long long)B, img_per_s, ms, m.iterations, gpu.c_str());
    std::fflush(json);
  }
}

void bench_config(const Args& a, const std::string& name, FILE* json, const std::string& gpu) {
  const safl::model::Config config = safl::model::preset(name, 97);
  safl::model::Network host(config);
  host.init_random(1);
  host.param("classifier.bias")[config.eos()] = -1e4f;  // Note [EOS suppressed]
  safl::model::CudaNetwork net(host);

  for (int64_t B : a.infer_batches) {
    const std::vector<float> images = random_images(config, B);
    report(json, gpu, name, "greedy", B, measure([&] { net.recognize(images.data(), B, 1); }, a.seconds));
  }
  for (int64_t B : a.infer_batches) {
    const std::vector<float> images = random_images(config, B);
    const std::vector<int32_t> targets = full_targets(config, B);
    std::vector<float> logits(size_t(B * config.tgt_len() * config.num_classes));  // (B, T, num_classes)
    report(json, gpu, name, "forward", B,
           measure([&] { net.forward(logits.data(), images.data(), targets.data(), B, false, 0); }, a.seconds));
  }
  int64_t step = 0;
  const safl::AdamOptions adam;
  for (int64_t B : a.train_batches) {
    const std::vector<float> images = random_images(config, B);
    const std::vector<int32_t> targets = full_targets(config, B);
    report(json, gpu, name, "train", B, measure([&] {
             ++step;
             net.forward_backward(images.data(), targets.data(), B, 2.0f, 1.0f, uint64_t(step));
             net.adam_step(step, safl::clip_factor(net.grad_norm(), kMaxNorm), adam);
           }, a.seconds));
  }
}

int run(const Args& a) {
  std::string reason;
  if (!safl::model::cuda_device_available(&reason)) {
    std::printf("no GPU: %s\n", reason.c_str());
    return 0;
  }
  cudaDeviceProp prop{};
  SAFL_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::unique_ptr<FILE, int (*)(FILE*)> json(nullptr, std::fclose);
  if (!a.json.empty()) {
    json.reset(std::fopen(a.json.c_str(), "a"));
    SAFL_CHECK(json != nullptr, "safl_bench_cuda_model: cannot open ", a.json, " for appending");
  }
  std::printf("safl CudaNetwork on %s (sm_%d%d): random weights, EOS suppressed, images copied from the host "
              "each iteration; >= %.2f s per row after %d warm-up iterations\n\n",
              prop.name, prop.major, prop.minor, a.seconds, kWarmup);
  std::printf("%-6s %-8s %6s %12s %11s %6s\n", "config", "mode", "batch", "images/s", "ms/iter", "iters");
  for (const std::string& name : a.configs) bench_config(a, name, json.get(), prop.name);
  return 0;
}

#endif  // SAFL_WITH_CUDA

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--configs" && has_value) {
      a.configs = split(argv[++i]);
    } else if (arg == "--train-batches" && has_value) {
      a.train_batches = split_integers(argv[++i]);
    } else if (arg == "--infer-batches" && has_value) {
      a.infer_batches = split_integers(argv[++i]);
    } else if (arg == "--seconds" && has_value) {
      a.seconds = std::max(0.0, std::atof(argv[++i]));
    } else if (arg == "--json" && has_value) {
      a.json = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: %s [--configs tiny,base] [--train-batches 64,128,256] [--infer-batches 1,64,256] "
                   "[--seconds 0.5] [--json FILE]\n",
                   argv[0]);
      return 2;
    }
  }
#ifdef SAFL_WITH_CUDA
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "safl_bench_cuda_model: %s\n", e.what());
    return 1;
  }
#else
  static_cast<void>(a);  // nothing to time without CUDA
  std::printf("no GPU: safl_bench_cuda_model was built without CUDA (link it to safl_core_cuda)\n");
  return 0;
#endif
}
