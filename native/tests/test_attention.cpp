// Attention (ops/attention.h): gradient checks of q, k and v through both the reference and the
// fast path; fast path against reference over many shapes, strides (fused QKV, KV caches with
// s_cap > S), thread counts and SIMD levels; hand-computed cases; lse and out against a double
// oracle; cached decoding step by step against the whole sequence; zero sizes; large scores;
// argument errors.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/cpu_features.h"
#include "common/error.h"
#include "common/threadpool.h"
#include "ops/attention.h"
#include "tests/harness.h"

namespace {

using safl::test::Guarded;
using safl::test::Rng;

using ForwardFn = void (*)(float*, float*, const float*, const float*, const float*, int64_t,
                           int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool);
using BackwardFn = void (*)(float*, float*, float*, const float*, const float*, const float*,
                            const float*, const float*, const float*, int64_t, int64_t, int64_t,
                            int64_t, int64_t, int64_t, int64_t, int64_t, bool);
struct Path {
  const char* name;
  ForwardFn forward;
  BackwardFn backward;
};
const Path kReference{"reference", safl::cpu::attention_forward_reference,
                      safl::cpu::attention_backward_reference};
const Path kFast{"fast", safl::cpu::attention_forward, safl::cpu::attention_backward};

// Gradient buffers start at this value: elements the backward must not touch keep it.
constexpr float kUntouched = 7.0f;

struct Case {
  int64_t B, T, S, H, Dh;
  bool causal;
  int64_t q_pad = 0;    // ld_q = H·Dh + q_pad
  int64_t kv_pad = 0;   // ld_kv = H·Dh + kv_pad
  int64_t cap_pad = 0;  // s_cap = S + cap_pad
  bool fused = false;   // q, k, v are column blocks of one (B, T, 3·H·Dh) buffer (needs S == T)

  int64_t width() const { return H * Dh; }
  int64_t ld_q() const { return fused ? 3 * width() : width() + q_pad; }
  int64_t ld_kv() const { return fused ? 3 * width() : width() + kv_pad; }
  int64_t s_cap() const { return fused ? T : S + cap_pad; }
  std::string name() const {
    return "B=" + std::to_string(B) + " T=" + std::to_string(T) + " S=" + std::to_string(S) +
           " H=" + std::to_string(H) + " Dh=" + std::to_string(Dh) +
           (causal ? " causal" : " full") + (fused ? " fused" : "") +
           " ld_q=" + std::to_string(ld_q()) + " ld_kv=" + std::to_string(ld_kv()) +
           " s_cap=" + std::to_string(s_cap());
  }
};

// Inputs of one case. Only the rows and columns in use get values; the rest holds `padding`
// (NaN by default, so a kernel that reads outside its rows or head columns produces NaN).
struct Problem {
  Case c;
  Guarded q_buf, k_buf, v_buf;  // when fused, q_buf holds q, k and v and the others are empty
  Guarded dout;                 // (B, T, H·Dh)

  Problem(const Case& c_, uint64_t seed, float magnitude = 1.0f, float padding = std::nanf(""))
      : c(c_),
        q_buf(size_t(c.B * c.T * c.ld_q()), padding),
        k_buf(c.fused ? 0 : size_t(c.B * c.s_cap() * c.ld_kv()), padding),
        v_buf(c.fused ? 0 : size_t(c.B * c.s_cap() * c.ld_kv()), padding),
        dout(size_t(c.B * c.T * c.width())) {
    Rng rng(seed);
    fill_rows(q(), c.T, c.T, c.ld_q(), rng, magnitude);
    fill_rows(k(), c.S, kv_rows_per_batch(), c.ld_kv(), rng, magnitude);
    fill_rows(v(), c.S, kv_rows_per_batch(), c.ld_kv(), rng, 1.0f);
    rng.fill_uniform(dout.data(), dout.size());
  }
  float* q() { return q_buf.data(); }
  float* k() { return c.fused ? q_buf.data() + c.width() : k_buf.data(); }
  float* v() { return c.fused ? q_buf.data() + 2 * c.width() : v_buf.data(); }
  int64_t kv_rows_per_batch() const { return c.fused ? c.T : c.s_cap(); }

 private:
  // Rows [0, rows) of each batch of batch_rows rows, head columns only.
  void fill_rows(float* x, int64_t rows, int64_t batch_rows, int64_t ld, Rng& rng,
                 float magnitude) {
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t r = 0; r < rows; ++r)
        rng.fill_uniform(x + (b * batch_rows + r) * ld, size_t(c.width()), -magnitude, magnitude);
  }
};

// Everything one path produced for a problem, copied out of guarded buffers.
struct Result {
  std::vector<float> out, lse, dq, dk, dv;  // when fused, dq holds the whole dQKV buffer
};

std::vector<float> copy_of(const Guarded& g) {
  return std::vector<float>(g.data(), g.data() + g.size());
}

// Expects every element of x (rows_cap rows per batch, stride ld) inside the first `rows` rows and
// `width` columns to be finite and every other one to still be kUntouched.
bool layout_kept(const std::vector<float>& x, int64_t B, int64_t rows, int64_t rows_cap, int64_t ld,
                 int64_t width) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < rows_cap; ++r)
      for (int64_t col = 0; col < ld; ++col) {
        const float value = x[size_t((b * rows_cap + r) * ld + col)];
        const bool in_use = r < rows && col < width;
        if (in_use ? !std::isfinite(value) : value != kUntouched) return false;
      }
  return true;
}

Result run(const Path& path, Problem& p) {
  const Case& c = p.c;
  Result result;
  Guarded out(size_t(c.B * c.T * c.width())), lse(size_t(c.B * c.H * c.T));
  path.forward(out.data(), lse.data(), p.q(), p.k(), p.v(), c.B, c.T, c.S, c.H, c.Dh, c.ld_q(),
               c.ld_kv(), c.s_cap(), c.causal);
  EXPECT_GUARDS(out, "out");
  EXPECT_GUARDS(lse, "lse");
  EXPECT_FINITE(out.data(), out.size());
  EXPECT_FINITE(lse.data(), lse.size());
  Guarded dq(p.q_buf.size(), kUntouched), dk(p.k_buf.size(), kUntouched);
  Guarded dv(p.v_buf.size(), kUntouched);
  float* dk_ptr = c.fused ? dq.data() + c.width() : dk.data();
  float* dv_ptr = c.fused ? dq.data() + 2 * c.width() : dv.data();
  path.backward(dq.data(), dk_ptr, dv_ptr, out.data(), lse.data(), p.dout.data(), p.q(), p.k(),
                p.v(), c.B, c.T, c.S, c.H, c.Dh, c.ld_q(), c.ld_kv(), c.s_cap(), c.causal);
  EXPECT_GUARDS(dq, "dq");
  EXPECT_GUARDS(dk, "dk");
  EXPECT_GUARDS(dv, "dv");
  result.out = copy_of(out);
  result.lse = copy_of(lse);
  result.dq = copy_of(dq);
  result.dk = copy_of(dk);
  result.dv = copy_of(dv);
  if (c.fused) {
    EXPECT(layout_kept(result.dq, c.B, c.T, c.T, c.ld_q(), c.ld_q()));
  } else {
    EXPECT(layout_kept(result.dq, c.B, c.T, c.T, c.ld_q(), c.width()));
    EXPECT(layout_kept(result.dk, c.B, c.S, c.s_cap(), c.ld_kv(), c.width()));
    EXPECT(layout_kept(result.dv, c.B, c.S, c.s_cap(), c.ld_kv(), c.width()));
  }
  return result;
}

bool close(const std::string& what, const std::vector<float>& actual,
           const std::vector<float>& expected, double rtol, double atol) {
  if (actual.size() != expected.size()) return false;
  return safl::test::all_close(what.c_str(), actual.data(), expected.data(), actual.size(), rtol,
                               atol);
}

bool results_close(const std::string& what, const Result& a, const Result& b, double rtol,
                   double atol) {
  bool ok = close(what + " out", a.out, b.out, rtol, atol);
  ok = close(what + " lse", a.lse, b.lse, rtol, atol) && ok;
  ok = close(what + " dq", a.dq, b.dq, rtol, atol) && ok;
  ok = close(what + " dk", a.dk, b.dk, rtol, atol) && ok;
  ok = close(what + " dv", a.dv, b.dv, rtol, atol) && ok;
  return ok;
}

bool results_identical(const Result& a, const Result& b) {
  auto same = [](const std::vector<float>& x, const std::vector<float>& y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
  };
  return same(a.out, b.out) && same(a.lse, b.lse) && same(a.dq, b.dq) && same(a.dk, b.dk) &&
         same(a.dv, b.dv);
}

std::vector<safl::SimdLevel> simd_levels() {
  std::vector<safl::SimdLevel> levels;
  for (safl::SimdLevel level :
       {safl::SimdLevel::Generic, safl::SimdLevel::Avx2, safl::SimdLevel::Avx512})
    if (level <= safl::simd_level_supported()) levels.push_back(level);
  return levels;
}

// out and lse of a problem in double, straight from the definition.
void double_oracle(Problem& p, std::vector<double>* out, std::vector<double>* lse) {
  const Case& c = p.c;
  out->assign(size_t(c.B * c.T * c.width()), 0.0);
  lse->assign(size_t(c.B * c.H * c.T), 0.0);
  const double scale = 1.0 / std::sqrt(double(c.Dh));
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t i = 0; i < c.T; ++i) {
        const float* q_i = p.q() + (b * c.T + i) * c.ld_q() + h * c.Dh;
        const int64_t visible = c.causal ? i + c.S - c.T + 1 : c.S;
        std::vector<double> scores(static_cast<size_t>(visible));
        double row_max = -INFINITY;
        for (int64_t j = 0; j < visible; ++j) {
          const float* k_j = p.k() + (b * p.kv_rows_per_batch() + j) * c.ld_kv() + h * c.Dh;
          double s = 0.0;
          for (int64_t d = 0; d < c.Dh; ++d) s += double(q_i[d]) * double(k_j[d]);
          scores[size_t(j)] = s * scale;
          row_max = std::max(row_max, scores[size_t(j)]);
        }
        double sum = 0.0;
        for (double s : scores) sum += std::exp(s - row_max);
        (*lse)[size_t((b * c.H + h) * c.T + i)] = row_max + std::log(sum);
        for (int64_t j = 0; j < visible; ++j) {
          const double weight = std::exp(scores[size_t(j)] - row_max) / sum;
          const float* v_j = p.v() + (b * p.kv_rows_per_batch() + j) * c.ld_kv() + h * c.Dh;
          for (int64_t d = 0; d < c.Dh; ++d)
            (*out)[size_t((b * c.T + i) * c.width() + h * c.Dh + d)] += weight * double(v_j[d]);
        }
      }
}

double max_abs_diff(const std::vector<float>& actual, const std::vector<double>& expected) {
  double worst = 0.0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double d = std::fabs(double(actual[i]) - expected[i]);
    if (!(d <= worst)) worst = d;
  }
  return worst;
}

// Gradient check of q, k and v through one path: loss = dot(out, w), dout = w. Padding of the
// inputs is 0 and the gradient buffers start at 0, so the unread padding has gradient 0 on both
// sides.
void gradcheck_case(const Path& path, const char* label, const Case& c, uint64_t seed) {
  Problem p(c, seed, 1.0f, 0.0f);
  std::vector<float> out(size_t(c.B * c.T * c.width())), lse(size_t(c.B * c.H * c.T));
  std::vector<float> dq(p.q_buf.size(), 0.0f), dk(p.k_buf.size(), 0.0f), dv(p.v_buf.size(), 0.0f);
  auto forward = [&] {
    path.forward(out.data(), lse.data(), p.q(), p.k(), p.v(), c.B, c.T, c.S, c.H, c.Dh, c.ld_q(),
                 c.ld_kv(), c.s_cap(), c.causal);
  };
  auto loss = [&] {
    forward();
    return safl::test::dot(out.data(), p.dout.data(), out.size());
  };
  auto backward = [&] {
    forward();
    path.backward(dq.data(), dk.data(), dv.data(), out.data(), lse.data(), p.dout.data(), p.q(),
                  p.k(), p.v(), c.B, c.T, c.S, c.H, c.Dh, c.ld_q(), c.ld_kv(), c.s_cap(), c.causal);
  };
  const std::string op = std::string("attention_") + path.name + "/" + label;
  safl::test::gradcheck(op,
                        {{"q", p.q(), dq.data(), dq.size()},
                         {"k", p.k(), dk.data(), dk.size()},
                         {"v", p.v(), dv.data(), dv.size()}},
                        loss, backward, safl::test::GradCheckOptions{1e-2});
}

// Calls `call` and expects a RangeError with exactly the message `expected`.
void expect_range_error(const std::function<void()>& call, const std::string& expected) {
  try {
    call();
  } catch (const safl::Error& e) {
    const bool ok = e.kind() == safl::ErrorKind::Range && e.what() == expected;
    if (!ok) std::printf("    message was: %s\n    expected:    %s\n", e.what(), expected.c_str());
    EXPECT(ok);
    return;
  }
  std::printf("    no error, expected: %s\n", expected.c_str());
  EXPECT(false);
}

}  // namespace

SAFL_TEST(attention_gradcheck) {
  for (const Path& path : {kReference, kFast}) {
    gradcheck_case(path, "full", Case{2, 5, 5, 3, 5, false, 2, 1, 2}, 11);
    gradcheck_case(path, "causal", Case{2, 5, 5, 3, 5, true}, 12);
    gradcheck_case(path, "cross", Case{2, 5, 7, 3, 5, false, 0, 3, 1}, 13);
    gradcheck_case(path, "causal_offset", Case{1, 5, 7, 3, 5, true, 1, 0, 3}, 14);
  }
}

SAFL_TEST(attention_fast_matches_reference) {
  const std::vector<Case> cases = {
      {1, 1, 1, 1, 1, false},
      {1, 1, 1, 1, 1, true},
      {2, 5, 7, 3, 5, false},
      {2, 5, 7, 3, 5, true, 2, 3, 4},
      {2, 5, 5, 3, 5, true, 0, 0, 0, true},     // fused QKV
      {3, 17, 17, 2, 64, true},                 // one query and one key past a tile
      {2, 26, 26, 4, 64, true, 0, 0, 0, true},  // tiny decoder self-attention, fused QKV
      {2, 26, 25, 4, 64, false, 0, 0, 7},       // decoder cross-attention over 25 features
      {2, 25, 25, 8, 64, false},                // base encoder self-attention
      {1, 33, 47, 2, 9, true, 3, 5, 6},         // several query and key tiles, both tails
      {1, 24, 25, 2, 16, true},                 // causal offset 1: key tiles start mid-group
      {2, 20, 37, 3, 8, true, 1, 2, 3},         // causal offset 17
      {1, 40, 31, 1, 16, false},
      {2, 1, 13, 4, 64, true, 0, 0, 13},        // one decoding step in a KV cache
      {3, 1, 25, 8, 64, false},                 // a decoding step's cross-attention: two key tiles
      {96, 3, 4, 8, 64, false},                 // large batch
  };
  const safl::SimdLevel saved_level = safl::simd_level();
  uint64_t seed = 100;
  for (const Case& c : cases) {
    Problem p(c, ++seed);
    safl::set_num_threads(2);
    const Result expected = run(kReference, p);
    for (safl::SimdLevel level : simd_levels()) {
      safl::set_simd_level(level);
      Result first;
      for (int threads : {1, 2, 3}) {
        safl::set_num_threads(threads);
        const Result got = run(kFast, p);
        const std::string what = c.name() + " simd " + safl::simd_level_name(level) + " threads " +
                                 std::to_string(threads);
        EXPECT(results_close(what, got, expected, 2e-4, 2e-5));
        if (threads == 1) first = got;
        else if (!results_identical(got, first)) {
          std::printf("    %s: result depends on the thread count\n", what.c_str());
          EXPECT(false);
        }
      }
    }
  }
  safl::set_simd_level(saved_level);
  safl::set_num_threads(safl::hardware_threads());
}

SAFL_TEST(attention_hand_computed) {
  for (const Path& path : {kReference, kFast}) {
    // One key: the output is that key's value, lse its scaled score.
    {
      const float q[4] = {1, 2, 3, 4}, k[4] = {0.5f, -1, 0.25f, 2}, v[4] = {3, -2, 7, 0.5f};
      Guarded out(4), lse(1);
      path.forward(out.data(), lse.data(), q, k, v, 1, 1, 1, 1, 4, 4, 4, 1, false);
      for (int d = 0; d < 4; ++d) EXPECT(out[d] == v[d]);
      EXPECT_NEAR(lse[0], (0.5 - 2 + 0.75 + 8) / 2.0, 1e-6);
      EXPECT_GUARDS(out, "out");
    }
    // Equal scores (q = 0): the output is the mean of the visible values and lse = log(count).
    // Causal: query i sees keys 0..i, so the first query returns exactly v[0].
    for (bool causal : {false, true}) {
      const int64_t T = 4, S = 4, Dh = 3;
      std::vector<float> q(T * Dh, 0.0f), k(S * Dh), v(S * Dh);
      Rng rng(7);
      rng.fill_uniform(k.data(), k.size());
      rng.fill_uniform(v.data(), v.size());
      Guarded out(T * Dh), lse(T);
      path.forward(out.data(), lse.data(), q.data(), k.data(), v.data(), 1, T, S, 1, Dh, Dh, Dh, S,
                   causal);
      for (int64_t i = 0; i < T; ++i) {
        const int64_t visible = causal ? i + 1 : S;
        EXPECT_NEAR(lse[i], std::log(double(visible)), 1e-6);
        for (int64_t d = 0; d < Dh; ++d) {
          double mean = 0.0;
          for (int64_t j = 0; j < visible; ++j) mean += v[j * Dh + d];
          EXPECT_NEAR(out[i * Dh + d], mean / double(visible), 1e-6);
        }
      }
      EXPECT_GUARDS(out, "out");
      EXPECT_GUARDS(lse, "lse");
    }
    // Causal, random scores: the first query sees only key 0.
    {
      Problem p(Case{2, 6, 6, 2, 4, true}, 21);
      Guarded out(2 * 6 * 8), lse(2 * 2 * 6);
      path.forward(out.data(), lse.data(), p.q(), p.k(), p.v(), 2, 6, 6, 2, 4, 8, 8, 6, true);
      for (int64_t b = 0; b < 2; ++b)
        for (int64_t col = 0; col < 8; ++col)
          EXPECT_NEAR(out[b * 48 + col], p.v()[b * 48 + col], 1e-6);
    }
  }
}

SAFL_TEST(attention_matches_double_oracle) {
  const std::vector<Case> cases = {{2, 5, 7, 3, 5, false, 1, 2, 3}, {2, 19, 19, 2, 64, true},
                                   {1, 20, 37, 2, 8, true, 0, 4, 2}};
  for (const Case& c : cases) {
    Problem p(c, 31, 3.0f);  // scores up to about ±9·sqrt(Dh)
    std::vector<double> out, lse;
    double_oracle(p, &out, &lse);
    for (const Path& path : {kReference, kFast}) {
      const Result r = run(path, p);
      const double lse_err = max_abs_diff(r.lse, lse), out_err = max_abs_diff(r.out, out);
      if (!(lse_err < 5e-5 && out_err < 2e-5))
        std::printf("    %s %s: lse err %.3g, out err %.3g\n", path.name, c.name().c_str(), lse_err,
                    out_err);
      EXPECT(lse_err < 5e-5);
      EXPECT(out_err < 2e-5);
    }
  }
}

SAFL_TEST(attention_cached_decoding_matches_sequence) {
  const int64_t B = 2, T = 20, H = 2, Dh = 8, D = H * Dh, s_cap = 24, ld_kv = D + 3;
  Problem whole(Case{B, T, T, H, Dh, true}, 41);
  for (const Path& path : {kReference, kFast}) {
    const Result expected = run(path, whole);
    // NaN in every row not yet written: a step that reads past S shows up.
    Guarded k_cache(size_t(B * s_cap * ld_kv)), v_cache(size_t(B * s_cap * ld_kv));
    for (int64_t t = 0; t < T; ++t) {
      std::vector<float> q_step(size_t(B * D));
      for (int64_t b = 0; b < B; ++b) {
        std::copy_n(whole.q() + (b * T + t) * D, D, q_step.data() + b * D);
        std::copy_n(whole.k() + (b * T + t) * D, D, k_cache.data() + (b * s_cap + t) * ld_kv);
        std::copy_n(whole.v() + (b * T + t) * D, D, v_cache.data() + (b * s_cap + t) * ld_kv);
      }
      Guarded out(size_t(B * D)), lse(size_t(B * H));
      path.forward(out.data(), lse.data(), q_step.data(), k_cache.data(), v_cache.data(), B, 1,
                   t + 1, H, Dh, D, ld_kv, s_cap, true);
      EXPECT_GUARDS(out, "out");
      for (int64_t b = 0; b < B; ++b) {
        EXPECT(safl::test::all_close("decoding out", out.data() + b * D,
                                     expected.out.data() + (b * T + t) * D, size_t(D), 1e-5, 1e-6));
        for (int64_t h = 0; h < H; ++h)
          EXPECT_NEAR(lse[b * H + h], expected.lse[(b * H + h) * T + t], 1e-5);
      }
    }
  }
}

SAFL_TEST(attention_zero_sizes) {
  for (const Path& path : {kReference, kFast}) {
    Guarded none(0), none_b(0), none_c(0);
    // B = 0, H = 0, and T = S = 0 have nothing to write.
    for (const Case& c :
         {Case{0, 3, 4, 2, 4, false}, Case{2, 3, 4, 0, 4, true}, Case{2, 0, 0, 2, 4, true}}) {
      path.forward(none.data(), none_b.data(), none.data(), none.data(), none.data(), c.B, c.T, c.S,
                   c.H, c.Dh, c.ld_q(), c.ld_kv(), c.s_cap(), c.causal);
      path.backward(none.data(), none_b.data(), none_c.data(), none.data(), none.data(), none.data(),
                    none.data(), none.data(), none.data(), c.B, c.T, c.S, c.H, c.Dh, c.ld_q(),
                    c.ld_kv(), c.s_cap(), c.causal);
    }
    EXPECT_GUARDS(none, "empty");
    EXPECT_GUARDS(none_b, "empty");
    EXPECT_GUARDS(none_c, "empty");
    // T = 0: no query looks at the keys, so dk = dv = 0.
    {
      Problem p(Case{2, 0, 3, 2, 4, false}, 51);
      const Result r = run(path, p);
      for (float x : r.dk) EXPECT(x == 0.0f);
      for (float x : r.dv) EXPECT(x == 0.0f);
    }
    // Dh = 0: every score is 0, so lse = log(visible keys); out, dq, dk and dv are empty.
    for (bool causal : {false, true}) {
      Guarded lse(2 * 3 * 4);
      path.forward(none.data(), lse.data(), none.data(), none.data(), none.data(), 2, 4, 5, 3, 0, 0,
                   0, 5, causal);
      for (int64_t row = 0; row < 2 * 3; ++row)
        for (int64_t i = 0; i < 4; ++i)
          EXPECT_NEAR(lse[row * 4 + i], std::log(causal ? i + 2.0 : 5.0), 1e-6);
      path.backward(none.data(), none_b.data(), none_c.data(), none.data(), lse.data(), none.data(),
                    none.data(), none.data(), none.data(), 2, 4, 5, 3, 0, 0, 0, 5, causal);
      EXPECT_GUARDS(lse, "lse");
      EXPECT_GUARDS(none, "empty");
    }
  }
}

SAFL_TEST(attention_large_scores_stay_finite) {
  // Scores of about ±1e3: exp must only ever see score - max <= 0.
  for (bool causal : {false, true}) {
    Problem p(Case{2, 6, 9, 2, 4, causal, 1, 2, 1}, 61, 30.0f);
    const Result reference = run(kReference, p);
    const Result fast = run(kFast, p);
    const std::string what = std::string("large scores") + (causal ? " causal" : " full");
    EXPECT(results_close(what, fast, reference, 1e-3, 1e-2));
    std::vector<double> out, lse;
    double_oracle(p, &out, &lse);
    EXPECT(max_abs_diff(fast.lse, lse) < 1e-3);
    double largest = 0.0;
    for (double x : lse) largest = std::max(largest, std::fabs(x));
    EXPECT(largest > 500.0);
  }
}

// Every failed check, for each entry point, with its exact message.
SAFL_TEST(attention_argument_errors) {
  struct BadCall {
    int64_t B, T, S, H, Dh, ld_q, ld_kv, s_cap;
    bool causal;
    const char* message;
  };
  const BadCall bad_calls[] = {
      {-1, 5, 7, 3, 5, 15, 15, 7, false, "expected B >= 0 but received -1"},
      {2, -1, 7, 3, 5, 15, 15, 7, false, "expected T >= 0 but received -1"},
      {2, 5, -2, 3, 5, 15, 15, 7, false, "expected S >= 0 but received -2"},
      {2, 5, 7, -1, 5, 15, 15, 7, false, "expected H >= 0 but received -1"},
      {2, 5, 7, 3, -3, 15, 15, 7, false, "expected Dh >= 0 but received -3"},
      {2, 5, 7, 3, 5, 15, 15, 6, false, "expected s_cap >= S = 7 but received 6"},
      {2, 5, 7, 3, 5, 14, 15, 7, false, "expected ld_q >= H*Dh = 15 but received 14"},
      {2, 5, 7, 3, 5, 15, 12, 7, false, "expected ld_kv >= H*Dh = 15 but received 12"},
      {2, 5, 4, 3, 5, 15, 15, 7, true, "expected S >= T = 5 for causal attention but received 4"},
      {2, 5, 0, 3, 5, 15, 15, 7, false, "expected S >= 1 when T >= 1 but received 0"},
  };
  float x[1] = {0.0f};
  float* p = x;
  for (const Path& path : {kReference, kFast}) {
    const std::string suffix = path.forward == kFast.forward ? "" : "_reference";
    for (const BadCall& c : bad_calls) {
      expect_range_error([&] { path.forward(p, p, p, p, p, c.B, c.T, c.S, c.H, c.Dh, c.ld_q,
                                            c.ld_kv, c.s_cap, c.causal); },
                         "attention_forward" + suffix + ": " + c.message);
      expect_range_error([&] { path.backward(p, p, p, p, p, p, p, p, p, c.B, c.T, c.S, c.H, c.Dh,
                                             c.ld_q, c.ld_kv, c.s_cap, c.causal); },
                         "attention_backward" + suffix + ": " + c.message);
    }
  }
}
