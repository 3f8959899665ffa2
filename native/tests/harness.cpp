// The native test harness and the test binary's main (see harness.h).
#include "tests/harness.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>

#ifdef SAFL_WITH_CUDA
#include <cuda_runtime.h>
#endif

#include "common/cpu_features.h"
#include "common/matmul_precision.h"
#include "common/threadpool.h"

namespace safl::test {
namespace {

struct TestCase {
  const char* name;
  TestFn fn;
  bool needs_cuda;
};
std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

struct GradRecord {
  std::string op, input;
  double worst;
  bool passed;
};
std::vector<GradRecord>& grad_records() {
  static std::vector<GradRecord> records;
  return records;
}

int g_failures = 0;
bool g_skipped = false;

}  // namespace

Registrar::Registrar(const char* name, TestFn fn, bool needs_cuda) {
  registry().push_back({name, fn, needs_cuda});
}

void expect(bool ok, const char* what, const char* file, int line) {
  if (ok) return;
  ++g_failures;
  std::printf("    FAILED %s:%d: %s\n", file, line, what);
}

void expect_near(double actual, double expected, double tol, const char* what, const char* file, int line) {
  if (std::fabs(actual - expected) <= tol) return;
  ++g_failures;
  std::printf("    FAILED %s:%d: %s (actual %.9g, expected %.9g, tol %.3g)\n", file, line, what, actual,
              expected, tol);
}

void skip(const std::string& reason) {
  g_skipped = true;
  std::printf("    skipped: %s\n", reason.c_str());
}

bool skip_without_bfloat16_products() {
  if (bfloat16_matmul_available()) return false;
  skip("this CPU (or OS) has neither AMX-BF16 nor AVX512-BF16: bfloat16 products stay float32");
  return true;
}

uint64_t Rng::next() {  // splitmix64
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
float Rng::uniform(float lo, float hi) {
  const double u = double(next() >> 11) * (1.0 / 9007199254740992.0);
  return float(lo + (hi - lo) * u);
}
float Rng::normal() {
  const double u1 = std::max(1e-12, double(next() >> 11) * (1.0 / 9007199254740992.0));
  const double u2 = double(next() >> 11) * (1.0 / 9007199254740992.0);
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}
void Rng::fill_uniform(float* x, size_t n, float lo, float hi) {
  for (size_t i = 0; i < n; ++i) x[i] = uniform(lo, hi);
}
void Rng::fill_normal(float* x, size_t n, float scale) {
  for (size_t i = 0; i < n; ++i) x[i] = scale * normal();
}

namespace {
constexpr uint32_t kGuardBits = 0x7FA5A5A5u;  // a quiet NaN no kernel produces by arithmetic
float guard_value() {
  float v;
  std::memcpy(&v, &kGuardBits, sizeof v);
  return v;
}
bool is_guard(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits == kGuardBits;
}
}  // namespace

Guarded::Guarded(size_t n, float fill) : n_(n), storage_(n + 2 * kGuard, guard_value()) {
  std::fill(storage_.begin() + kGuard, storage_.begin() + kGuard + n, fill);
}
void Guarded::fill(float v) { std::fill(storage_.begin() + kGuard, storage_.begin() + kGuard + n_, v); }
bool Guarded::check(const char* what, const char* file, int line) const {
  for (size_t i = 0; i < kGuard; ++i) {
    if (!is_guard(storage_[i]) || !is_guard(storage_[kGuard + n_ + i])) {
      std::printf("    %s:%d: out-of-bounds write around %s (%zu elements)\n", file, line, what, n_);
      return false;
    }
  }
  return true;
}

size_t count_non_finite(const float* x, size_t n) {
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += !std::isfinite(x[i]);
  return bad;
}

double max_rel_diff(const float* a, const float* b, size_t n, double floor) {
  double worst = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i])) / std::max(std::fabs(double(b[i])), floor);
    if (!(d <= worst)) worst = d;  // NaN counts as worst
  }
  return worst;
}

bool all_close(const char* label, const float* actual, const float* expected, size_t n, double rtol,
               double atol, int show) {
  int shown = 0;
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const double a = actual[i], e = expected[i];
    if (std::fabs(a - e) <= atol + rtol * std::fabs(e)) continue;  // false for NaN too
    ++bad;
    if (shown < show) {
      std::printf("    mismatch %s [%zu]: %.9g vs %.9g\n", label, i, a, e);
      ++shown;
    }
  }
  if (bad) std::printf("    %zu of %zu elements differ (rtol %.3g, atol %.3g)\n", bad, n, rtol, atol);
  return bad == 0;
}

double dot(const float* x, const float* w, size_t n) {
  double acc = 0.0;
  for (size_t i = 0; i < n; ++i) acc += double(x[i]) * double(w[i]);
  return acc;
}

double gradcheck(const std::string& op, const std::vector<GradVar>& vars,
                 const std::function<double()>& loss, const std::function<void()>& backward,
                 const GradCheckOptions& options) {
  backward();
  // The analytic gradients are copied first: loss() may reuse the buffers backward wrote.
  std::vector<std::vector<float>> analytic;
  for (const auto& v : vars) analytic.emplace_back(v.grad, v.grad + v.n);
  double worst_all = 0.0;
  for (size_t vi = 0; vi < vars.size(); ++vi) {
    const GradVar& v = vars[vi];
    const size_t points = std::min(v.n, options.max_points);
    double worst = 0.0;
    int shown = 0;
    for (size_t p = 0; p < points; ++p) {
      const size_t i = points == v.n ? p : (p * v.n) / points;
      const float saved = v.value[i];
      v.value[i] = float(saved + options.eps);
      const double up = loss();
      v.value[i] = float(saved - options.eps);
      const double down = loss();
      v.value[i] = saved;
      // The step actually taken in float, not the nominal eps.
      const double step = double(float(saved + options.eps)) - double(float(saved - options.eps));
      const double numeric = (up - down) / step;
      const double a = analytic[vi][i];
      const double err = std::fabs(a - numeric) / std::max({std::fabs(a), std::fabs(numeric), options.floor});
      if (!(err <= options.tol) && shown < 5) {
        std::printf("    gradcheck %s/%s [%zu]: analytic %.7g numeric %.7g (rel err %.3g)\n", op.c_str(),
                    v.name.c_str(), i, a, numeric, err);
        ++shown;
      }
      if (!(err <= worst)) worst = err;
    }
    const bool passed = worst <= options.tol;
    grad_records().push_back({op, v.name, worst, passed});
    expect(passed, ("gradient of " + op + " w.r.t. " + v.name).c_str(), __FILE__, __LINE__);
    if (!(worst <= worst_all)) worst_all = worst;
  }
  return worst_all;
}

bool cuda_available(std::string* why) {
#ifdef SAFL_WITH_CUDA
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    if (why) *why = std::string("no usable GPU: ") + cudaGetErrorString(status);
    return false;
  }
  if (count == 0) {
    if (why) *why = "no GPU found";
    return false;
  }
  return true;
#else
  if (why) *why = "built without CUDA";
  return false;
#endif
}

}  // namespace safl::test

int main(int argc, char** argv) {
  using namespace safl::test;
  std::vector<std::string> filters;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--list") {
      list = true;
    } else if (arg.rfind("-", 0) == 0) {
      std::fprintf(stderr, "safl_tests: unknown option %s\nusage: safl_tests [--list] [name filter…]\n", arg.c_str());
      return 2;
    } else {
      filters.push_back(arg);
    }
  }
  auto selected = [&](const char* name) {
    if (filters.empty()) return true;
    for (const auto& f : filters)
      if (std::string(name).find(f) != std::string::npos) return true;
    return false;
  };
  // A filter that selects nothing is a typo, not a passing run.
  for (const auto& f : filters) {
    bool matches = false;
    for (const auto& t : registry()) matches = matches || std::string(t.name).find(f) != std::string::npos;
    if (!matches) {
      std::fprintf(stderr, "safl_tests: no test name contains '%s' (--list shows them)\n", f.c_str());
      return 2;
    }
  }
  std::string cuda_reason;
  const bool have_cuda = cuda_available(&cuda_reason);
  std::printf("safl native tests: %d threads, SIMD %s, CUDA %s\n", safl::num_threads(),
              safl::simd_level_name(safl::simd_level()), have_cuda ? "available" : cuda_reason.c_str());
  int passed = 0, failed = 0, skipped = 0;
  for (const auto& t : registry()) {
    if (!selected(t.name)) continue;
    if (list) {
      std::printf("%s%s\n", t.name, t.needs_cuda ? " (cuda)" : "");
      continue;
    }
    if (t.needs_cuda && !have_cuda) {
      std::printf("skip %s (%s)\n", t.name, cuda_reason.c_str());
      ++skipped;
      continue;
    }
    g_failures = 0;
    g_skipped = false;
    const auto start = std::chrono::steady_clock::now();
    try {
      t.fn();
    } catch (const std::exception& e) {
      std::printf("    FAILED: uncaught exception: %s\n", e.what());
      ++g_failures;
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (g_failures) {
      std::printf("FAIL %s (%d failed expectations)\n", t.name, g_failures);
      ++failed;
    } else if (g_skipped) {
      std::printf("skip %s\n", t.name);
      ++skipped;
    } else {
      std::printf("ok   %s (%.0f ms)\n", t.name, ms);
      ++passed;
    }
    std::fflush(stdout);
  }
  if (list) return 0;
  if (!grad_records().empty()) {
    std::printf("\ngradient checks (worst relative error per op and input):\n");
    for (const auto& r : grad_records())
      std::printf("  %-28s %-16s %.2e %s\n", r.op.c_str(), r.input.c_str(), r.worst, r.passed ? "" : "FAILED");
  }
  std::printf("\nnative: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
  return failed == 0 ? 0 : 1;
}
