// CUDA attention (native/cuda/attention.cu) against the CPU reference of ops/attention.h: out, lse,
// dq, dk and dv for full, causal, cross and causal-with-offset masks; cached decoding steps
// (T = 1, S = t + 1 in a KV cache with s_cap > S) against the whole sequence; Dh = 64 and the
// generic kernel's head sizes (odd, 24, 32, 100, its limit 256); the model's T = S = 26 at
// B·H = 64·8; fused QKV strides (ld = 3·H·Dh); query and key counts that end mid-tile; guard words
// around every device output; untouched padding rows and columns of the gradients; NaN in every
// input element no kernel may read; bit-identical results run to run; large scores; zero sizes;
// argument errors (these need no GPU).
//
// Tolerances, CUDA vs the CPU reference (both FP32): rtol 2e-4, atol 2e-5 on every output, as for
// the CPU fast path vs the reference (tests/test_attention.cpp). The two differ only in rounding:
// summation order (online softmax over key tiles vs the whole row at once), FMA contraction and
// expf/logf implementations, each a few float ulps per term. With scores of about ±1e3 (the
// large-scores test) those ulps are ~1e-4 absolute in the exponent: rtol 1e-3, atol 1e-2.
// Decoding steps against the same kernel's whole-sequence run: rtol 1e-5, atol 1e-6.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "ops/attention.h"
#include "tests/harness.h"

#ifdef SAFL_WITH_CUDA
#include "cuda/cuda_check.h"

namespace {

using safl::cuda::DeviceBuffer;
using safl::test::Rng;

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

// Host inputs of one case. Only the rows and head columns in use get values; every other element
// is NaN, so a kernel that reads outside its rows or columns produces NaN.
struct Problem {
  Case c;
  std::vector<float> q_buf, k_buf, v_buf;  // when fused, q_buf holds q, k and v; the others empty
  std::vector<float> dout;                 // (B, T, H·Dh)

  Problem(const Case& c_, uint64_t seed, float magnitude = 1.0f)
      : c(c_),
        q_buf(size_t(c.B * c.T * c.ld_q()), std::nanf("")),
        k_buf(c.fused ? 0 : size_t(c.B * c.s_cap() * c.ld_kv()), std::nanf("")),
        v_buf(c.fused ? 0 : size_t(c.B * c.s_cap() * c.ld_kv()), std::nanf("")),
        dout(size_t(c.B * c.T * c.width())) {
    Rng rng(seed);
    fill_rows(q_offset(), c.T, c.T, c.ld_q(), q_buf, rng, magnitude);
    fill_rows(k_offset(), c.S, kv_rows_per_batch(), c.ld_kv(), c.fused ? q_buf : k_buf, rng,
              magnitude);
    fill_rows(v_offset(), c.S, kv_rows_per_batch(), c.ld_kv(), c.fused ? q_buf : v_buf, rng, 1.0f);
    rng.fill_uniform(dout.data(), dout.size());
  }
  // Where q, k and v start in their buffers.
  size_t q_offset() const { return 0; }
  size_t k_offset() const { return c.fused ? size_t(c.width()) : 0; }
  size_t v_offset() const { return c.fused ? size_t(2 * c.width()) : 0; }
  int64_t kv_rows_per_batch() const { return c.fused ? c.T : c.s_cap(); }

 private:
  // Rows [0, rows) of each batch of batch_rows rows, head columns only.
  void fill_rows(size_t offset, int64_t rows, int64_t batch_rows, int64_t ld,
                 std::vector<float>& x, Rng& rng, float magnitude) {
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t r = 0; r < rows; ++r)
        rng.fill_uniform(x.data() + offset + size_t((b * batch_rows + r) * ld), size_t(c.width()),
                         -magnitude, magnitude);
  }
};

// Everything one backend produced for a problem.
struct Result {
  std::vector<float> out, lse, dq, dk, dv;  // when fused, dq holds the whole dQKV buffer
};

// A device array with guard words on each side: the payload starts as `fill`, the guards as
// kGuardValue. to_host() expects the guards intact and returns the payload.
class GuardedDevice {
 public:
  static constexpr size_t kGuardWords = 64;
  static constexpr float kGuardValue = -1.25e30f;

  GuardedDevice(size_t n, float fill) : n_(n), buffer_(initial(n, fill)) {}
  float* data() { return buffer_.data() + kGuardWords; }
  std::vector<float> to_host(const std::string& what) const {
    const std::vector<float> all = buffer_.to_host();
    size_t broken = 0;
    for (size_t i = 0; i < kGuardWords; ++i)
      broken += (all[i] != kGuardValue) + (all[kGuardWords + n_ + i] != kGuardValue);
    if (broken) std::printf("    %s: %zu guard words overwritten\n", what.c_str(), broken);
    EXPECT(broken == 0);
    return std::vector<float>(all.begin() + kGuardWords, all.begin() + kGuardWords + n_);
  }

 private:
  static std::vector<float> initial(size_t n, float fill) {
    std::vector<float> host(n + 2 * kGuardWords, kGuardValue);
    std::fill(host.begin() + kGuardWords, host.begin() + kGuardWords + n, fill);
    return host;
  }
  size_t n_;
  DeviceBuffer<float> buffer_;
};

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

void expect_layout(const Case& c, const Result& r) {
  EXPECT(safl::test::count_non_finite(r.out.data(), r.out.size()) == 0);
  EXPECT(safl::test::count_non_finite(r.lse.data(), r.lse.size()) == 0);
  if (c.fused) {
    EXPECT(layout_kept(r.dq, c.B, c.T, c.T, c.ld_q(), c.ld_q()));
  } else {
    EXPECT(layout_kept(r.dq, c.B, c.T, c.T, c.ld_q(), c.width()));
    EXPECT(layout_kept(r.dk, c.B, c.S, c.s_cap(), c.ld_kv(), c.width()));
    EXPECT(layout_kept(r.dv, c.B, c.S, c.s_cap(), c.ld_kv(), c.width()));
  }
}

// The CPU reference's forward, then its backward from that forward's out and lse.
Result run_cpu(const Problem& p) {
  const Case& c = p.c;
  Result r;
  r.out.assign(size_t(c.B * c.T * c.width()), std::nanf(""));
  r.lse.assign(size_t(c.B * c.H * c.T), std::nanf(""));
  r.dq.assign(p.q_buf.size(), kUntouched);
  r.dk.assign(p.k_buf.size(), kUntouched);
  r.dv.assign(p.v_buf.size(), kUntouched);
  const float* q = p.q_buf.data() + p.q_offset();
  const float* k = (c.fused ? p.q_buf : p.k_buf).data() + p.k_offset();
  const float* v = (c.fused ? p.q_buf : p.v_buf).data() + p.v_offset();
  safl::cpu::attention_forward_reference(r.out.data(), r.lse.data(), q, k, v, c.B, c.T, c.S, c.H,
                                         c.Dh, c.ld_q(), c.ld_kv(), c.s_cap(), c.causal);
  float* dk = (c.fused ? r.dq : r.dk).data() + p.k_offset();
  float* dv = (c.fused ? r.dq : r.dv).data() + p.v_offset();
  safl::cpu::attention_backward_reference(r.dq.data(), dk, dv, r.out.data(), r.lse.data(),
                                          p.dout.data(), q, k, v, c.B, c.T, c.S, c.H, c.Dh,
                                          c.ld_q(), c.ld_kv(), c.s_cap(), c.causal);
  return r;
}

// The CUDA forward, then its backward from that forward's out and lse; every output in a guarded
// device buffer, the whole input buffers (NaN padding included) uploaded.
Result run_cuda(const Problem& p) {
  const Case& c = p.c;
  DeviceBuffer<float> q_buf(p.q_buf), k_buf(p.k_buf), v_buf(p.v_buf), dout(p.dout);
  const float* q = q_buf.data() + p.q_offset();
  const float* k = (c.fused ? q_buf : k_buf).data() + p.k_offset();
  const float* v = (c.fused ? q_buf : v_buf).data() + p.v_offset();
  GuardedDevice out(size_t(c.B * c.T * c.width()), std::nanf(""));
  GuardedDevice lse(size_t(c.B * c.H * c.T), std::nanf(""));
  GuardedDevice dq(p.q_buf.size(), kUntouched), dk(p.k_buf.size(), kUntouched);
  GuardedDevice dv(p.v_buf.size(), kUntouched);
  safl::cuda::attention_forward(out.data(), lse.data(), q, k, v, c.B, c.T, c.S, c.H, c.Dh,
                                c.ld_q(), c.ld_kv(), c.s_cap(), c.causal);
  float* dk_ptr = (c.fused ? dq.data() : dk.data()) + p.k_offset();
  float* dv_ptr = (c.fused ? dq.data() : dv.data()) + p.v_offset();
  safl::cuda::attention_backward(dq.data(), dk_ptr, dv_ptr, out.data(), lse.data(), dout.data(), q,
                                 k, v, c.B, c.T, c.S, c.H, c.Dh, c.ld_q(), c.ld_kv(), c.s_cap(),
                                 c.causal);
  SAFL_CUDA_CHECK(cudaDeviceSynchronize());
  Result r;
  r.out = out.to_host("out");
  r.lse = lse.to_host("lse");
  r.dq = dq.to_host("dq");
  r.dk = dk.to_host("dk");
  r.dv = dv.to_host("dv");
  return r;
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

// CUDA against the CPU reference, layout and guards, and a second CUDA run bit for bit.
void check_parity(const Case& c, uint64_t seed, float magnitude, double rtol, double atol) {
  const Problem p(c, seed, magnitude);
  const Result expected = run_cpu(p);
  const Result got = run_cuda(p);
  expect_layout(c, got);
  const bool ok = results_close(c.name(), got, expected, rtol, atol);
  if (!ok) std::printf("    ^ %s\n", c.name().c_str());
  EXPECT(ok);
  if (!results_identical(got, run_cuda(p))) {
    std::printf("    %s: a second CUDA run differs\n", c.name().c_str());
    EXPECT(false);
  }
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

SAFL_CUDA_TEST(attention_cuda_parity) {
  // A CTA owns up to 8 rows per warp and 4 warps (32 rows); lanes take 32 keys (or queries).
  const std::vector<Case> cases = {
      {1, 1, 1, 1, 1, false},
      {1, 1, 1, 1, 1, true},
      {2, 5, 7, 3, 5, false},                     // cross-attention, odd Dh
      {2, 5, 7, 3, 5, true, 2, 3, 4},             // causal offset 2, padded strides, s_cap > S
      {2, 5, 5, 3, 5, true, 0, 0, 0, true},       // fused QKV
      {3, 17, 17, 2, 64, true},                   // 3 warps
      {2, 12, 12, 3, 32, false, 0, 0, 0, true},   // 2 warps, Dh = 32 (generic kernel)
      {2, 26, 26, 4, 64, true, 0, 0, 0, true},    // tiny decoder self-attention
      {2, 26, 25, 4, 64, false, 0, 0, 7},         // decoder cross-attention over 25 features
      {2, 25, 25, 8, 64, false, 0, 0, 0, true},   // base encoder self-attention
      {64, 26, 26, 8, 64, true, 0, 0, 0, true},   // base decoder at batch 64: B·H = 512
      {1, 33, 47, 2, 9, true, 3, 5, 6},           // second query and key tiles of 1 and 15 rows
      {1, 24, 25, 2, 24, true},                   // Dh = 24, causal offset 1
      {2, 20, 37, 3, 8, true, 1, 2, 3},           // causal offset 17: a query's first tile is full
      {1, 70, 70, 1, 64, true, 0, 5, 2},          // three query and key tiles, Dh = 64
      {1, 40, 31, 1, 16, false},
      {2, 9, 9, 2, 100, true, 4, 0, 1},           // Dh = 100: more than 48 KiB of shared memory
      {1, 7, 40, 2, 256, false, 0, 3, 3},         // Dh = 256, the generic kernel's limit
      {2, 1, 13, 4, 64, true, 0, 0, 13},          // one decoding step in a KV cache
      {96, 3, 4, 8, 64, false},                   // large batch, one warp per CTA
  };
  uint64_t seed = 100;
  for (const Case& c : cases) check_parity(c, ++seed, 1.0f, 2e-4, 2e-5);
}

SAFL_CUDA_TEST(attention_cuda_decoding_steps) {
  // Each step T = 1, S = t + 1 in a KV cache of 27 rows (NaN past S) against the CPU reference,
  // and its out and lse against the CUDA run over the whole sequence.
  const int64_t B = 4, T = 26, H = 8, Dh = 64, D = H * Dh, s_cap = T + 1;
  for (int64_t t = 0; t < T; ++t) check_parity(Case{B, 1, t + 1, H, Dh, true, 0, 0, s_cap - t - 1},
                                               200 + uint64_t(t), 1.0f, 2e-4, 2e-5);
  const Problem whole(Case{B, T, T, H, Dh, true}, 41);
  const Result expected = run_cuda(whole);
  std::vector<float> k_cache(size_t(B * s_cap * D), std::nanf(""));
  std::vector<float> v_cache(k_cache.size(), std::nanf(""));
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> q_step(size_t(B * D));
    for (int64_t b = 0; b < B; ++b) {
      const size_t row = size_t((b * T + t) * D);
      std::copy_n(whole.q_buf.data() + row, D, q_step.data() + b * D);
      std::copy_n(whole.k_buf.data() + row, D, k_cache.data() + (b * s_cap + t) * D);
      std::copy_n(whole.v_buf.data() + row, D, v_cache.data() + (b * s_cap + t) * D);
    }
    DeviceBuffer<float> q(q_step), k(k_cache), v(v_cache);
    GuardedDevice out(size_t(B * D), std::nanf("")), lse(size_t(B * H), std::nanf(""));
    safl::cuda::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), B, 1, t + 1,
                                  H, Dh, D, D, s_cap, true);
    const std::vector<float> out_host = out.to_host("out"), lse_host = lse.to_host("lse");
    for (int64_t b = 0; b < B; ++b) {
      EXPECT(safl::test::all_close("decoding out", out_host.data() + b * D,
                                   expected.out.data() + (b * T + t) * D, size_t(D), 1e-5, 1e-6));
      for (int64_t h = 0; h < H; ++h)
        EXPECT_NEAR(lse_host[size_t(b * H + h)], expected.lse[size_t((b * H + h) * T + t)], 1e-5);
    }
  }
}

SAFL_CUDA_TEST(attention_cuda_large_scores) {
  // Scores of about ±1e3: exp must only ever see score - max <= 0, and lse stays finite.
  for (bool causal : {false, true}) {
    check_parity(Case{2, 6, 9, 2, 4, causal, 1, 2, 1}, 61, 30.0f, 1e-3, 1e-2);
    check_parity(Case{2, 26, 26, 2, 64, causal}, 62, 10.0f, 1e-3, 1e-2);
  }
}

SAFL_CUDA_TEST(attention_cuda_zero_sizes) {
  // B = 0, H = 0 and T = S = 0 have nothing to write and touch no memory.
  for (const Case& c :
       {Case{0, 3, 4, 2, 4, false}, Case{2, 3, 4, 0, 4, true}, Case{2, 0, 0, 2, 4, true}}) {
    safl::cuda::attention_forward(nullptr, nullptr, nullptr, nullptr, nullptr, c.B, c.T, c.S, c.H,
                                  c.Dh, c.ld_q(), c.ld_kv(), c.s_cap(), c.causal);
    safl::cuda::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                   nullptr, nullptr, c.B, c.T, c.S, c.H, c.Dh, c.ld_q(), c.ld_kv(),
                                   c.s_cap(), c.causal);
  }
  SAFL_CUDA_CHECK(cudaDeviceSynchronize());
  // T = 0: no query looks at the keys, so dk = dv = 0 (and the padding is untouched).
  {
    const Case c{2, 0, 3, 2, 4, false, 0, 1, 2};
    const Result r = run_cuda(Problem(c, 51));
    expect_layout(c, r);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t j = 0; j < c.S; ++j)
        for (int64_t col = 0; col < c.width(); ++col) {
          const size_t at = size_t((b * c.s_cap() + j) * c.ld_kv() + col);
          EXPECT(r.dk[at] == 0.0f && r.dv[at] == 0.0f);
        }
  }
  // Dh = 0: every score is 0, so lse = log(visible keys); the backward has nothing to write.
  for (bool causal : {false, true}) {
    GuardedDevice lse(2 * 3 * 4, std::nanf(""));
    safl::cuda::attention_forward(nullptr, lse.data(), nullptr, nullptr, nullptr, 2, 4, 5, 3, 0, 0,
                                  0, 5, causal);
    safl::cuda::attention_backward(nullptr, nullptr, nullptr, nullptr, lse.data(), nullptr,
                                   nullptr, nullptr, nullptr, 2, 4, 5, 3, 0, 0, 0, 5, causal);
    const std::vector<float> host = lse.to_host("lse");
    for (int64_t row = 0; row < 2 * 3; ++row)
      for (int64_t i = 0; i < 4; ++i)
        EXPECT_NEAR(host[size_t(row * 4 + i)], std::log(causal ? i + 2.0 : 5.0), 1e-6);
  }
}

// Every failed check with its exact message: the CPU op's checks, then the CUDA kernels' limits.
// The checks come before any CUDA call, so this runs without a GPU.
SAFL_TEST(attention_cuda_argument_errors) {
  struct BadCall {
    int64_t B, T, S, H, Dh, ld_q, ld_kv, s_cap;
    bool causal;
    const char* message;
  };
  const int64_t too_many_rows = 65535 * 32 + 1;
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
      {2, 5, 7, 3, 257, 771, 771, 7, false, "expected Dh <= 256 on CUDA but received 257"},
      {int64_t(1) << 31, 1, 1, 1, 1, 1, 1, 1, false,
       "expected B*H <= 2147483647 on CUDA but received 2147483648"},
      {1, too_many_rows, too_many_rows, 1, 1, 1, 1, too_many_rows, true,
       "expected T <= 2097120 on CUDA but received 2097121"},
      {1, 1, too_many_rows, 1, 1, 1, 1, too_many_rows, false,
       "expected S <= 2097120 on CUDA but received 2097121"},
  };
  float x[1] = {0.0f};
  float* p = x;
  for (const BadCall& c : bad_calls) {
    expect_range_error([&] { safl::cuda::attention_forward(p, p, p, p, p, c.B, c.T, c.S, c.H, c.Dh,
                                                           c.ld_q, c.ld_kv, c.s_cap, c.causal); },
                       std::string("attention_forward: ") + c.message);
    expect_range_error([&] { safl::cuda::attention_backward(p, p, p, p, p, p, p, p, p, c.B, c.T, c.S,
                                                            c.H, c.Dh, c.ld_q, c.ld_kv, c.s_cap,
                                                            c.causal); },
                       std::string("attention_backward: ") + c.message);
  }
}

#endif  // SAFL_WITH_CUDA
