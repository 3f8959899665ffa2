// The native test harness: test registration, expectations, deterministic random data, guard
// bytes around outputs, NaN/Inf scans, a central-difference gradient checker accumulated in
// double, and the CUDA-availability switch for CPU-vs-CUDA parity tests.
//
//   SAFL_TEST(conv2d_gradcheck) { ... EXPECT(...); ... }
//   SAFL_CUDA_TEST(conv2d_cuda_parity) { ... }   // skipped, with a message, when no GPU answers
//
// Run: safl_tests [substring...] runs the tests whose names contain any substring; --list lists.
// The last line is "native: N passed, N failed, N skipped".
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace safl::test {

using TestFn = void (*)();
struct Registrar {
  Registrar(const char* name, TestFn fn, bool needs_cuda);
};

// Expectation failures are counted against the running test and printed with file:line.
void expect(bool ok, const char* what, const char* file, int line);
void expect_near(double actual, double expected, double tol, const char* what, const char* file, int line);
// Mark the running test as skipped, with the reason printed.
void skip(const std::string& reason);
// Skips the running test and returns true where bfloat16 products stay float32 (neither AMX nor
// AVX512-BF16 here).
bool skip_without_bfloat16_products();

// ---- deterministic data ----------------------------------------------------------------------
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next();
  float uniform(float lo = -1.0f, float hi = 1.0f);  // [lo, hi)
  float normal();
  void fill_uniform(float* x, size_t n, float lo = -1.0f, float hi = 1.0f);
  void fill_normal(float* x, size_t n, float scale = 1.0f);

 private:
  uint64_t state_;
};

// ---- guarded buffers -------------------------------------------------------------------------
// A float buffer with guard words before and after it; check() fails the test if a kernel wrote
// outside [0, size). The payload starts filled with a signalling pattern (NaN) so that reading
// uninitialised output shows up as NaN.
class Guarded {
 public:
  explicit Guarded(size_t n, float fill = std::nanf(""));
  float* data() { return storage_.data() + kGuard; }
  const float* data() const { return storage_.data() + kGuard; }
  size_t size() const { return n_; }
  float& operator[](size_t i) { return data()[i]; }
  float operator[](size_t i) const { return data()[i]; }
  void fill(float v);
  // Expect the guards intact; `what` names the buffer in the failure message.
  bool check(const char* what, const char* file, int line) const;

 private:
  static constexpr size_t kGuard = 16;
  size_t n_;
  std::vector<float> storage_;
};
#define EXPECT_GUARDS(buf, name) ::safl::test::expect((buf).check(name, __FILE__, __LINE__), "guards of " name, __FILE__, __LINE__)

// Number of NaN/Inf values in x.
size_t count_non_finite(const float* x, size_t n);
#define EXPECT_FINITE(ptr, n) ::safl::test::expect(::safl::test::count_non_finite((ptr), (n)) == 0, "all finite: " #ptr, __FILE__, __LINE__)

// Largest |a - b| / max(|b|, floor) over n elements; prints the first `show` mismatches above tol
// when `label` is given.
double max_rel_diff(const float* a, const float* b, size_t n, double floor = 1e-3);
bool all_close(const char* label, const float* actual, const float* expected, size_t n, double rtol,
               double atol, int show = 5);
#define EXPECT_ALL_CLOSE(actual, expected, n, rtol, atol) \
  ::safl::test::expect(::safl::test::all_close(#actual " vs " #expected, (actual), (expected), (n), (rtol), (atol)), "all close", __FILE__, __LINE__)

// Σ x[i]·w[i] accumulated in double: the scalar that gradient checks differentiate.
double dot(const float* x, const float* w, size_t n);

// ---- gradient check --------------------------------------------------------------------------
// One differentiable input: its values (perturbed in place and restored) and the analytic
// gradient the backward wrote.
struct GradVar {
  std::string name;
  float* value;
  const float* grad;
  size_t n;
};
struct GradCheckOptions {
  double eps = 1e-3;        // central-difference step
  double tol = 1e-2;        // pass when every element's relative error is below tol
  double floor = 1e-2;      // relative error = |analytic - numeric| / max(|analytic|, |numeric|, floor)
  size_t max_points = 200;  // elements probed per input (spread evenly when the input is larger)
};
// loss(): forward and return the scalar (in double). backward(): forward and backward with the
// gradient of that scalar, writing each GradVar.grad. Every (op, input) result is recorded for
// the summary table printed at the end. Returns the worst relative error.
double gradcheck(const std::string& op, const std::vector<GradVar>& vars,
                 const std::function<double()>& loss, const std::function<void()>& backward,
                 const GradCheckOptions& options = GradCheckOptions());

// ---- CUDA ------------------------------------------------------------------------------------
// True when the binary was built with CUDA and a GPU answers; otherwise false with the reason.
bool cuda_available(std::string* why);

}  // namespace safl::test

#define SAFL_TEST(name)                                                                     \
  static void safl_test_##name();                                                          \
  static ::safl::test::Registrar safl_registrar_##name(#name, safl_test_##name, false);    \
  static void safl_test_##name()

#define SAFL_CUDA_TEST(name)                                                                \
  static void safl_test_##name();                                                          \
  static ::safl::test::Registrar safl_registrar_##name(#name, safl_test_##name, true);     \
  static void safl_test_##name()

#define EXPECT(cond) ::safl::test::expect((cond), #cond, __FILE__, __LINE__)
#define EXPECT_NEAR(actual, expected, tol) \
  ::safl::test::expect_near((actual), (expected), (tol), #actual " ~ " #expected, __FILE__, __LINE__)
// EXPECT_THROWS(statement, ExceptionType, "substring of the message")
#define EXPECT_THROWS(statement, Type, substring)                                          \
  do {                                                                                     \
    bool safl_threw_ = false;                                                              \
    try {                                                                                  \
      statement;                                                                           \
    } catch (const Type& e) {                                                              \
      safl_threw_ = std::string(e.what()).find(substring) != std::string::npos;           \
      if (!safl_threw_) std::printf("    message was: %s\n", e.what());                   \
    }                                                                                      \
    ::safl::test::expect(safl_threw_, "throws " #Type " containing \"" substring "\": " #statement, __FILE__, __LINE__); \
  } while (0)
