// SGEMM: the fast path (packed, blocked, per-SIMD-level micro-kernels, threaded) against
// sgemm_reference, over every SIMD level this CPU supports, every transpose combination, odd
// sizes and tile edges, padded strides, alpha/beta (beta = 0 over NaN-filled C), 1–3 threads,
// zero sizes, nested calls from pool tasks, and the argument check. The bfloat16 products
// (MatmulPrecision::BFloat16: AMX tiles, or VDPBF16PS where the CPU has AVX512-BF16 but no AMX)
// against sgemm_reference of the rounded operands, where the CPU has either.
// sgemm_packed_b (op(B) packed once) against sgemm, bit for bit, and its refusal of other kernels.
#include <cstring>
#include <limits>
#include <vector>

#include "common/cpu_features.h"
#include "common/error.h"
#include "common/matmul_precision.h"
#include "common/threadpool.h"
#include "ops/gemm.h"
#include "tests/harness.h"

namespace {

using safl::MatmulPrecision;
using safl::SimdLevel;

std::vector<SimdLevel> supported_levels() {
  std::vector<SimdLevel> levels;
  for (SimdLevel level : {SimdLevel::Generic, SimdLevel::Avx2, SimdLevel::Avx512}) {
    if (level <= safl::simd_level_supported()) levels.push_back(level);
  }
  return levels;
}

// The SIMD levels a precision's products run at: bfloat16 runs its kernels at AVX-512 only.
std::vector<SimdLevel> levels_for(MatmulPrecision precision) {
  return precision == MatmulPrecision::BFloat16 ? std::vector<SimdLevel>{SimdLevel::Avx512} : supported_levels();
}

struct Case {
  int64_t M, N, K;
  bool trans_a, trans_b;
  int64_t pad_a = 0, pad_b = 0, pad_c = 0;  // extra floats at the end of each row
  float alpha = 1.0f, beta = 0.0f;
};

// Compares sgemm with sgemm_reference on the same data at every supported SIMD level and 1, 2
// and 3 threads (both restored afterwards). C lives in a Guarded buffer whose row padding must
// come back bit-for-bit unchanged; with beta == 0 it starts as NaN, which must not leak into the
// result. Under BFloat16 (AVX-512 only, where the bfloat16 kernels run) the reference multiplies the
// operands rounded to bfloat16.
// A case's A and B, stored as its transposes and paddings say, with random values.
struct Operands {
  int64_t lda, ldb, ldc;
  std::vector<float> A, B;
};

Operands make_operands(const Case& c, safl::test::Rng& rng) {
  const int64_t a_rows = c.trans_a ? c.K : c.M, a_cols = c.trans_a ? c.M : c.K;
  const int64_t b_rows = c.trans_b ? c.N : c.K, b_cols = c.trans_b ? c.K : c.N;
  Operands o{a_cols + c.pad_a, b_cols + c.pad_b, c.N + c.pad_c, {}, {}};
  o.A.resize(size_t(std::max<int64_t>(1, a_rows * o.lda)));
  o.B.resize(size_t(std::max<int64_t>(1, b_rows * o.ldb)));
  rng.fill_uniform(o.A.data(), o.A.size());
  rng.fill_uniform(o.B.data(), o.B.size());
  return o;
}

bool check_case(const Case& c, uint64_t seed, MatmulPrecision precision = MatmulPrecision::Float32) {
  safl::test::Rng rng(seed);
  const Operands o = make_operands(c, rng);
  const int64_t lda = o.lda, ldb = o.ldb, ldc = o.ldc;
  const std::vector<float>& A = o.A;
  const std::vector<float>& B = o.B;
  const size_t c_size = c.M == 0 ? 0 : size_t((c.M - 1) * ldc + c.N);
  safl::test::Guarded C(c_size);
  if (c.beta != 0.0f) rng.fill_uniform(C.data(), c_size);
  const std::vector<float> initial(C.data(), C.data() + c_size);
  std::vector<float> expected = initial;
  std::vector<float> A_ref = A, B_ref = B;
  if (precision == MatmulPrecision::BFloat16) {
    for (float& x : A_ref) x = safl::cpu::bfloat16_round(x);
    for (float& x : B_ref) x = safl::cpu::bfloat16_round(x);
  }
  safl::cpu::sgemm_reference(expected.data(), ldc, A_ref.data(), lda, c.trans_a, B_ref.data(), ldb,
                             c.trans_b, c.M, c.N, c.K, c.alpha, c.beta);
  // Float sums of K terms in another order: the difference grows with K.
  const double atol = 1e-6 * double(c.K + 1) * std::max(1.0f, std::fabs(c.alpha));

  bool all_ok = true;
  const SimdLevel initial_level = safl::simd_level();
  const safl::MatmulPrecisionScope scope(precision);
  for (SimdLevel level : levels_for(precision)) {
    safl::set_simd_level(level);
    for (int threads : {1, 2, 3}) {
      safl::set_num_threads(threads);
      std::copy(initial.begin(), initial.end(), C.data());
      safl::cpu::sgemm(C.data(), ldc, A.data(), lda, c.trans_a, B.data(), ldb, c.trans_b, c.M,
                       c.N, c.K, c.alpha, c.beta);
      bool ok = C.check("C", __FILE__, __LINE__);
      for (int64_t i = 0; i < c.M && ok; ++i) {
        const float* row = C.data() + i * ldc;
        ok = safl::test::count_non_finite(row, size_t(c.N)) == 0 &&
             safl::test::all_close("C row", row, expected.data() + i * ldc, size_t(c.N), 1e-5, atol);
        if (ok && c.pad_c > 0 && i + 1 < c.M) {
          ok = std::memcmp(row + c.N, initial.data() + i * ldc + c.N, sizeof(float) * size_t(c.pad_c)) == 0;
        }
      }
      if (!ok) {
        std::printf("    failed: %s %s, %d threads, M %lld N %lld K %lld, trans %d%d, pads %lld/%lld/%lld, alpha %g beta %g\n",
                    safl::matmul_precision_name(precision), safl::simd_level_name(level), threads, (long long)c.M, (long long)c.N,
                    (long long)c.K, c.trans_a, c.trans_b, (long long)c.pad_a, (long long)c.pad_b,
                    (long long)c.pad_c, c.alpha, c.beta);
      }
      all_ok = all_ok && ok;
    }
  }
  safl::set_simd_level(initial_level);
  safl::set_num_threads(safl::hardware_threads());
  return all_ok;
}

}  // namespace

SAFL_TEST(sgemm_matches_reference_small_and_odd) {
  // Sizes around the register tiles (generic 4×16, AVX2 6×16, AVX-512 8×48 with 16-column
  // steps) and their edges.
  const int64_t sizes[][3] = {{1, 1, 1},    {2, 3, 1},   {5, 7, 3},    {6, 16, 8},
                              {8, 48, 5},   {9, 49, 17}, {7, 17, 2},   {4, 33, 31},
                              {25, 97, 64}, {37, 70, 29}, {3, 130, 16}, {13, 47, 33}};
  uint64_t seed = 1;
  for (const auto& s : sizes) {
    for (int t = 0; t < 4; ++t) {
      Case c{s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0};
      EXPECT(check_case(c, seed++));
      c.pad_a = 3, c.pad_b = 5, c.pad_c = 2, c.alpha = 0.5f, c.beta = 1.5f;
      EXPECT(check_case(c, seed++));
    }
  }
}

SAFL_TEST(sgemm_matches_reference_across_blocks_and_threads) {
  // Large enough to cross the depth block (K > 384), the column block (N > 672), the row block
  // (M > 1536), and to be split over two tasks (2·M·N·K >= 2 · 2^23) or three (>= 3 · 2^23).
  const Case cases[] = {
      {61, 45, 400, false, false, 1, 2, 3, 1.0f, 0.0f},
      {1600, 5, 3, false, true, 0, 1, 0, -1.0f, 1.0f},
      {7, 700, 20, true, false, 2, 0, 1, 2.0f, -0.5f},
      {97, 301, 300, false, false, 0, 3, 0, 1.0f, 0.0f},
      {229, 241, 250, true, true, 1, 1, 1, 0.25f, 1.0f},
  };
  uint64_t seed = 1000;
  for (const Case& base : cases) {
    for (int t = 0; t < 4; ++t) {
      Case c = base;
      c.trans_a = base.trans_a != ((t & 1) != 0);
      c.trans_b = base.trans_b != ((t & 2) != 0);
      EXPECT(check_case(c, seed++));
    }
  }
}

SAFL_TEST(sgemm_zero_sizes_and_zero_alpha) {
  for (int t = 0; t < 4; ++t) {
    const bool ta = (t & 1) != 0, tb = (t & 2) != 0;
    // M or N = 0: nothing to write (the guards catch any write).
    EXPECT(check_case({0, 5, 3, ta, tb}, 7));
    EXPECT(check_case({4, 0, 3, ta, tb}, 8));
    EXPECT(check_case({0, 0, 0, ta, tb}, 9));
    // K = 0: C = beta · C; beta = 0 turns the NaN fill into zeros.
    EXPECT(check_case({4, 5, 0, ta, tb, 0, 0, 2, 1.0f, 0.0f}, 10));
    EXPECT(check_case({4, 5, 0, ta, tb, 0, 0, 2, 1.0f, 2.0f}, 11));
  }
  // alpha = 0: C = beta · C without reading A or B (null pointers are fine).
  safl::test::Guarded C(6);
  for (int i = 0; i < 6; ++i) C[i] = float(i);
  safl::cpu::sgemm(C.data(), 3, nullptr, 4, false, nullptr, 3, false, 2, 3, 4, 0.0f, 0.5f);
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(C[i], 0.5 * i, 0.0);
  safl::cpu::sgemm(C.data(), 3, nullptr, 2, true, nullptr, 4, true, 2, 3, 4, 0.0f, 0.0f);
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(C[i], 0.0, 0.0);
  EXPECT_GUARDS(C, "C");
}

SAFL_TEST(sgemm_hand_computed) {
  // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50]; with alpha 2, beta 1 over C = 1.
  const float A[] = {1, 2, 3, 4}, B[] = {5, 6, 7, 8};
  const float expected[] = {39, 45, 87, 101};
  const SimdLevel initial = safl::simd_level();
  for (SimdLevel level : supported_levels()) {
    safl::set_simd_level(level);
    safl::test::Guarded C(4, 1.0f);
    safl::cpu::sgemm(C.data(), 2, A, 2, false, B, 2, false, 2, 2, 2, 2.0f, 1.0f);
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(C[i], expected[i], 0.0);
    // Aᵀ · Bᵀ = (B · A)ᵀ: [[5 6; 7 8] · [1 2; 3 4]]ᵀ = [23 31; 34 46].
    safl::test::Guarded T(4);
    safl::cpu::sgemm(T.data(), 2, A, 2, true, B, 2, true, 2, 2, 2, 1.0f, 0.0f);
    const float expected_t[] = {23, 31, 34, 46};
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(T[i], expected_t[i], 0.0);
    EXPECT_GUARDS(C, "C");
    EXPECT_GUARDS(T, "T");
  }
  safl::set_simd_level(initial);
}

SAFL_TEST(sgemm_nested_in_pool_tasks) {
  // sgemm called from the bodies of a parallel_for runs on several pool threads at once (each
  // call serial, see Note [thread-local packing buffers]); every product must be right. The
  // products are big enough that a top-level call would use two tasks.
  safl::set_num_threads(3);
  const int64_t count = 4, M = 200, N = 210, K = 220;
  safl::test::Rng rng(5);
  std::vector<float> A(size_t(count * M * K)), B(size_t(count * K * N));
  rng.fill_uniform(A.data(), A.size());
  rng.fill_uniform(B.data(), B.size());
  std::vector<float> C(size_t(count * M * N)), expected(C.size());
  safl::parallel_for(0, count, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      safl::cpu::sgemm(C.data() + i * M * N, N, A.data() + i * M * K, K, false,
                       B.data() + i * K * N, N, false, M, N, K, 1.0f, 0.0f);
    }
  });
  for (int64_t i = 0; i < count; ++i) {
    safl::cpu::sgemm_reference(expected.data() + i * M * N, N, A.data() + i * M * K, K, false,
                               B.data() + i * K * N, N, false, M, N, K, 1.0f, 0.0f);
  }
  EXPECT_ALL_CLOSE(C.data(), expected.data(), C.size(), 1e-5, 1e-6 * K);
  safl::set_num_threads(safl::hardware_threads());
}

SAFL_TEST(sgemm_argument_errors) {
  float c = 0.0f;
  EXPECT_THROWS(safl::cpu::sgemm(&c, 1, &c, 1, false, &c, 1, false, -1, 1, 1, 1.0f, 0.0f),
                safl::Error, "sgemm: expected M, N, K >= 0 but received -1, 1, 1");
  EXPECT_THROWS(safl::cpu::sgemm(&c, 1, &c, 1, false, &c, 1, false, 1, 1, -2, 1.0f, 0.0f),
                safl::Error, "sgemm: expected M, N, K >= 0 but received 1, 1, -2");
  EXPECT_THROWS(safl::cpu::sgemm(&c, 5, &c, 2, false, &c, 5, false, 4, 5, 3, 1.0f, 0.0f),
                safl::Error, "sgemm: expected lda >= K (3) but received 2");
  EXPECT_THROWS(safl::cpu::sgemm(&c, 5, &c, 3, true, &c, 5, false, 4, 5, 3, 1.0f, 0.0f),
                safl::Error, "sgemm: expected lda >= M (4) but received 3");
  EXPECT_THROWS(safl::cpu::sgemm(&c, 5, &c, 3, false, &c, 2, true, 4, 5, 3, 1.0f, 0.0f),
                safl::Error, "sgemm: expected ldb >= K (3) but received 2");
  EXPECT_THROWS(safl::cpu::sgemm(&c, 4, &c, 3, false, &c, 5, false, 4, 5, 3, 1.0f, 0.0f),
                safl::Error, "sgemm: expected ldc >= N (5) but received 4");
}

SAFL_TEST(sgemm_bfloat16_matches_the_reference_of_rounded_operands) {
  if (safl::test::skip_without_bfloat16_products()) return;
  // Around AMX's 32 × 32 tile and its 16-row and 16-column halves, the 8 × 48 tile of VDPBF16PS
  // and its 16-row packing, odd depths (a last pair with one value), k blocks of 32, and across
  // the depth (384), column (672) and row (1536) blocks and the thread split.
  const int64_t sizes[][3] = {{1, 1, 1},    {2, 3, 1},     {5, 7, 3},     {16, 16, 32}, {17, 33, 31},
                              {32, 32, 64}, {33, 47, 65},  {64, 512, 512}, {7, 700, 20}, {61, 45, 400},
                              {229, 241, 250}, {1600, 40, 33}};
  uint64_t seed = 2000;
  for (const auto& s : sizes) {
    for (int t = 0; t < 4; ++t) {
      Case c{s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0};
      EXPECT(check_case(c, seed++, MatmulPrecision::BFloat16));
      c.pad_a = 3, c.pad_b = 5, c.pad_c = 2, c.alpha = 0.5f, c.beta = 1.5f;
      EXPECT(check_case(c, seed++, MatmulPrecision::BFloat16));
    }
  }
}

SAFL_TEST(sgemm_bfloat16_rounds_like_the_hardware_and_only_when_asked) {
  if (safl::test::skip_without_bfloat16_products()) return;
  // C = A · 1 with K = 1 gives the rounded A itself: ties to even, subnormals to zero, infinity,
  // overflow to infinity. The hardware conversion (VCVTNE2PS2BF16) rounds A, stored either way,
  // and bfloat16_round, the references' rounding, must give the same values exactly.
  const float tie_down = 1.0f + 1.0f / 256, tie_up = 1.0f + 3.0f / 256;
  const float A[] = {1.0f, tie_down, tie_up, -tie_up, 1e-40f, -1e-40f, 3.4e38f,
                     std::numeric_limits<float>::infinity(), 0.1f};
  const float expected[] = {1.0f, 1.0f, 1.0f + 1.0f / 64, -(1.0f + 1.0f / 64), 0.0f, -0.0f,
                            std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity(),
                            0.10009765625f};
  const int64_t M = sizeof(A) / sizeof(A[0]);
  const float one = 1.0f;
  for (int64_t i = 0; i < M; ++i) EXPECT(safl::cpu::bfloat16_round(A[i]) == expected[i]);
  EXPECT(std::signbit(safl::cpu::bfloat16_round(-1e-40f)));
  EXPECT(std::isnan(safl::cpu::bfloat16_round(std::numeric_limits<float>::quiet_NaN())));
  const safl::MatmulPrecisionScope scope(MatmulPrecision::BFloat16);
  for (bool trans_a : {false, true}) {
    std::vector<float> C(M, -7.0f);
    safl::cpu::sgemm(C.data(), 1, A, trans_a ? M : 1, trans_a, &one, 1, false, M, 1, 1, 1.0f, 0.0f);
    for (int64_t i = 0; i < M; ++i) EXPECT(C[i] == expected[i]);
  }
  // The same product in float32 keeps every bit of A; the scope ends with the block.
  {
    const safl::MatmulPrecisionScope float32(MatmulPrecision::Float32);
    float c = 0.0f;
    safl::cpu::sgemm(&c, 1, &tie_up, 1, false, &one, 1, false, 1, 1, 1, 1.0f, 0.0f);
    EXPECT_NEAR(c, tie_up, 0.0);
  }
  EXPECT(safl::matmul_precision() == MatmulPrecision::BFloat16);
}

namespace {

// sgemm_packed_b against sgemm on the same data, packed and multiplied at the given precision, at
// every SIMD level it runs at and 1–3 threads: the same kernels and blocking, so the same bits.
bool check_packed_case(const Case& c, uint64_t seed, MatmulPrecision precision) {
  safl::test::Rng rng(seed);
  const Operands o = make_operands(c, rng);
  const int64_t lda = o.lda, ldb = o.ldb, ldc = o.ldc;
  const std::vector<float>& A = o.A;
  const std::vector<float>& B = o.B;
  std::vector<float> initial(size_t(c.M * ldc));
  rng.fill_uniform(initial.data(), initial.size());
  bool all_ok = true;
  const SimdLevel initial_level = safl::simd_level();
  const safl::MatmulPrecisionScope scope(precision);
  for (SimdLevel level : levels_for(precision)) {
    safl::set_simd_level(level);
    safl::cpu::PackedB packed;
    packed.pack(B.data(), ldb, c.trans_b, c.K, c.N);
    all_ok = all_ok && packed.fits_this_call() && packed.K() == c.K && packed.N() == c.N;
    for (int threads : {1, 2, 3}) {
      safl::set_num_threads(threads);
      std::vector<float> expected = initial, C = initial;
      safl::cpu::sgemm(expected.data(), ldc, A.data(), lda, c.trans_a, B.data(), ldb, c.trans_b, c.M, c.N, c.K,
                       c.alpha, c.beta);
      safl::cpu::sgemm_packed_b(C.data(), ldc, A.data(), lda, c.trans_a, packed, c.M, c.alpha, c.beta);
      const bool ok = std::memcmp(C.data(), expected.data(), sizeof(float) * C.size()) == 0;
      if (!ok) {
        std::printf("    failed: packed %s %s, %d threads, M %lld N %lld K %lld, trans %d%d\n",
                    safl::matmul_precision_name(precision), safl::simd_level_name(level), threads, (long long)c.M,
                    (long long)c.N, (long long)c.K, c.trans_a, c.trans_b);
      }
      all_ok = all_ok && ok;
    }
  }
  safl::set_simd_level(initial_level);
  safl::set_num_threads(safl::hardware_threads());
  return all_ok;
}

const Case kPackedCases[] = {
    {1, 1, 1, false, false},
    {13, 47, 33, false, true, 3, 5, 2, 0.5f, 1.5f},
    {64, 1536, 512, false, true},  // a decoding step's self-attention projection (base): panels outer
                                   // (Note [streaming packed B] in gemm.cpp)
    {61, 700, 400, true, false, 1, 2, 3, 1.0f, 0.0f},  // across the depth and column blocks
    {1600, 97, 800, false, true, 0, 0, 1, -1.0f, 1.0f},  // across the row block, a depth tail
};

}  // namespace

SAFL_TEST(sgemm_packed_b_matches_sgemm_bit_for_bit) {
  uint64_t seed = 3000;
  for (const Case& c : kPackedCases) EXPECT(check_packed_case(c, seed++, MatmulPrecision::Float32));
}

SAFL_TEST(sgemm_packed_b_bfloat16_matches_sgemm_bit_for_bit) {
  if (safl::test::skip_without_bfloat16_products()) return;
  uint64_t seed = 3100;
  for (const Case& c : kPackedCases) EXPECT(check_packed_case(c, seed++, MatmulPrecision::BFloat16));
}

SAFL_TEST(sgemm_packed_b_refuses_other_kernels) {
  // Panels packed for one SIMD level (or precision) are not another's: a call whose kernels
  // changed is refused, and packing again fits it.
  const std::vector<SimdLevel> levels = supported_levels();
  if (levels.size() < 2) return;
  const SimdLevel initial_level = safl::simd_level();
  const float b[4] = {1, 2, 3, 4}, a[2] = {1, 1};
  float c[2] = {0, 0};
  safl::set_simd_level(levels.back());
  safl::cpu::PackedB packed;
  packed.pack(b, 2, false, 2, 2);
  EXPECT(packed.fits_this_call());
  safl::set_simd_level(levels.front());
  EXPECT(!packed.fits_this_call());
  EXPECT_THROWS(safl::cpu::sgemm_packed_b(c, 2, a, 2, false, packed, 1, 1.0f, 0.0f), safl::Error,
                "sgemm_packed_b: B was packed for other kernels than this call runs");
  packed.pack(b, 2, false, 2, 2);
  safl::cpu::sgemm_packed_b(c, 2, a, 2, false, packed, 1, 1.0f, 0.0f);
  EXPECT(c[0] == 4.0f && c[1] == 6.0f);
  if (safl::bfloat16_matmul_available() && safl::simd_level_supported() == SimdLevel::Avx512) {
    safl::set_simd_level(SimdLevel::Avx512);
    packed.pack(b, 2, false, 2, 2);
    const safl::MatmulPrecisionScope scope(MatmulPrecision::BFloat16);
    EXPECT(!packed.fits_this_call());
  }
  safl::set_simd_level(initial_level);
}
