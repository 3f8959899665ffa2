// Whole-network CPU benchmark, no Node needed: images/s of greedy decoding, teacher-forced
// inference forward and training steps (forward + backward + Adam) for a preset, plus the
// process's peak RSS. Prints one JSON line; bench/model.js runs it side by side with the PyTorch
// peer and prints ratios.
//
//   safl_bench_model --config tiny|base --batch 64 --mode greedy|forward|train [--threads 2] [--steps 5]
//                    [--precision float32|bfloat16]
//
// --precision bfloat16 runs the mode under MatmulPrecision::BFloat16 (common/matmul_precision.h),
// as Recognizer.load(model, { precision: 'bfloat16' }) and safl train --precision bfloat16 do. The
// JSON says which precision the products really used.
//
// Note [EOS suppressed]: a freshly initialised network may emit EOS at any step, which would
// make greedy decoding stop early and look faster than it is. The benchmark sets the classifier's
// EOS bias to -1e4 so every image decodes all max_len + 1 steps, as the peer's greedy loop does.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/cpu_features.h"
#include "common/error.h"
#include "common/matmul_precision.h"
#include "common/threadpool.h"
#include "model/network.h"
#include "ops/optimizer.h"

namespace {

struct Args {
  std::string config = "tiny";
  std::string mode = "greedy";
  int64_t batch = 64;
  int threads = 2;
  int steps = 5;
  safl::MatmulPrecision precision = safl::MatmulPrecision::Float32;
};

safl::MatmulPrecision parse_precision(const char* value) {
  if (std::strcmp(value, "float32") == 0) return safl::MatmulPrecision::Float32;
  if (std::strcmp(value, "bfloat16") == 0) return safl::MatmulPrecision::BFloat16;
  throw safl::Error(safl::ErrorKind::Range, std::string("--precision: expected float32 or bfloat16 but received ") + value);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const char* value = argv[i + 1];
    if (key == "--config") a.config = value;
    else if (key == "--mode") a.mode = value;
    else if (key == "--batch") a.batch = std::stoll(value);
    else if (key == "--threads") a.threads = std::stoi(value);
    else if (key == "--steps") a.steps = std::stoi(value);
    else if (key == "--precision") a.precision = parse_precision(value);
    else throw safl::Error(safl::ErrorKind::Range, "unknown option " + key);
  }
  return a;
}

long peak_rss_kib() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    safl::set_num_threads(a.threads);
    const auto config = safl::model::preset(a.config, 97);
    safl::model::Network net(config);
    net.init_random(1);
    net.param("classifier.bias")[config.eos()] = -1e4f;  // Note [EOS suppressed]

    const int64_t B = a.batch, T = config.tgt_len();
    std::vector<float> images(size_t(B * 3 * config.in_h * config.in_w));
    uint64_t s = 42;
    for (auto& x : images) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      x = float(s >> 40) / float(1 << 23) - 1.0f;
    }
    std::vector<int32_t> targets(size_t(B * T));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) targets[size_t(b * T + t)] = int32_t((b * 7 + t * 13) % config.charset_size());
    std::vector<float> logits(size_t(B * T * config.num_classes));
    // Adam's moments exist only for training: allocated (and touched) in the other modes they
    // would add two copies of the parameters to the peak RSS that inference does not have.
    const int64_t P = net.layout().param_floats;
    std::vector<float> m, v;
    if (a.mode == "train") m.assign(size_t(P), 0.0f), v.assign(size_t(P), 0.0f);
    int64_t step = 0;

    const safl::MatmulPrecisionScope precision(a.precision);
    // What the products really use: bfloat16 only where the CPU has AMX or AVX512-BF16.
    const bool bfloat16_used = safl::bfloat16_products_this_call();
    auto run_once = [&] {
      if (a.mode == "greedy") {
        net.recognize(images.data(), B, 1);
      } else if (a.mode == "forward") {
        net.forward(logits.data(), images.data(), targets.data(), B, false, 0);
      } else if (a.mode == "train") {
        net.forward_backward(images.data(), targets.data(), B, 2.0f, 1.0f, uint64_t(step));
        safl::AdamOptions options;
        const double norm = safl::cpu::grad_norm(net.grads(), P);
        ++step;
        safl::cpu::adam_step(net.params(), m.data(), v.data(), net.grads(), P, step,
                             safl::clip_factor(norm, 1.0f), options);
      } else {
        throw safl::Error(safl::ErrorKind::Range, "unknown mode " + a.mode);
      }
    };
    run_once();  // warm-up: arena allocation, folded weights
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < a.steps; ++i) run_once();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("{\"impl\":\"safl\",\"config\":\"%s\",\"mode\":\"%s\",\"batch\":%lld,\"threads\":%d,\"simd\":\"%s\","
                "\"precision\":\"%s\",\"img_per_s\":%.2f,\"peak_rss_mib\":%.1f}\n",
                a.config.c_str(), a.mode.c_str(), (long long)B, a.threads, safl::simd_level_name(safl::simd_level()),
                bfloat16_used ? "bfloat16" : "float32", double(B * a.steps) / seconds, double(peak_rss_kib()) / 1024.0);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "safl_bench_model: %s\n", e.what());
    return 1;
  }
}
