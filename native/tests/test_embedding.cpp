// Token embedding and sinusoidal positions (ops/embedding.h): gradient check of the table with
// repeated ids, hand cases, id range errors (nothing written), the sinusoid table's values,
// add_positions with and without a scale (and its documented backward), zero sizes.
#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"
#include "ops/embedding.h"
#include "tests/harness.h"

using safl::test::Guarded;

SAFL_TEST(embedding_gradcheck) {
  const int64_t N = 9, rows = 5, D = 6;
  const int32_t ids[N] = {0, 3, 3, 1, 4, 3, 0, 2, 4};
  safl::test::Rng rng(41);
  std::vector<float> table(rows * D), w(N * D), y(N * D), dtable(rows * D);
  rng.fill_uniform(table.data(), table.size());
  rng.fill_uniform(w.data(), w.size());
  auto loss = [&] {
    safl::cpu::embedding_forward(y.data(), ids, table.data(), N, rows, D);
    return safl::test::dot(y.data(), w.data(), y.size());
  };
  auto backward = [&] {
    std::fill(dtable.begin(), dtable.end(), 0.0f);
    safl::cpu::embedding_backward(dtable.data(), w.data(), ids, N, rows, D);
  };
  safl::test::gradcheck("embedding", {{"table", table.data(), dtable.data(), table.size()}}, loss,
                        backward);
}

SAFL_TEST(embedding_hand_cases) {
  const float table[] = {1, 2, 3, 4, 5, 6};  // 3 rows of 2
  const int32_t ids[] = {2, 0, 2};
  Guarded y(6);
  safl::cpu::embedding_forward(y.data(), ids, table, 3, 3, 2);
  const float expected[] = {5, 6, 1, 2, 5, 6};
  EXPECT_ALL_CLOSE(y.data(), expected, 6, 0.0, 0.0);
  EXPECT_GUARDS(y, "y");
  // Scatter-add onto a table gradient that starts at 1 (accumulation, repeated id 2).
  const float dout[] = {1, 2, 3, 4, 5, 6};
  Guarded dtable(6, 1.0f);
  safl::cpu::embedding_backward(dtable.data(), dout, ids, 3, 3, 2);
  const float expected_dtable[] = {4, 5, 1, 1, 7, 9};
  EXPECT_ALL_CLOSE(dtable.data(), expected_dtable, 6, 0.0, 0.0);
  EXPECT_GUARDS(dtable, "dtable");
  // 1×1.
  const float one = 7;
  const int32_t zero = 0;
  Guarded y1(1);
  safl::cpu::embedding_forward(y1.data(), &zero, &one, 1, 1, 1);
  EXPECT(y1[0] == 7.0f);
}

SAFL_TEST(embedding_backward_deterministic_across_threads) {
  const int64_t N = 200, rows = 7, D = 300;
  safl::test::Rng rng(42);
  std::vector<int32_t> ids(N);
  for (auto& id : ids) id = int32_t(rng.next() % rows);
  std::vector<float> dout(N * D);
  rng.fill_normal(dout.data(), dout.size());
  std::vector<float> reference(rows * D, 0.0f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < D; ++d) reference[ids[n] * D + d] += dout[n * D + d];
  for (int threads : {1, 2, 3}) {
    safl::set_num_threads(threads);
    Guarded dtable(rows * D, 0.0f);
    safl::cpu::embedding_backward(dtable.data(), dout.data(), ids.data(), N, rows, D);
    EXPECT_ALL_CLOSE(dtable.data(), reference.data(), reference.size(), 0.0, 0.0);
    EXPECT_GUARDS(dtable, "dtable");
  }
  safl::set_num_threads(safl::hardware_threads());
}

SAFL_TEST(embedding_id_errors) {
  const float table[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};  // 5 rows of 2
  const int32_t too_big[] = {0, 4, 5};
  const int32_t negative[] = {-1};
  Guarded y(6);
  EXPECT_THROWS(safl::cpu::embedding_forward(y.data(), too_big, table, 3, 5, 2), safl::Error,
                "embedding_forward: expected ids in [0, 5) but received 5 at position 2");
  EXPECT(std::isnan(y[0]) && std::isnan(y[5]));  // nothing written
  EXPECT_THROWS(safl::cpu::embedding_forward(y.data(), negative, table, 1, 5, 2), safl::Error,
                "embedding_forward: expected ids in [0, 5) but received -1 at position 0");
  Guarded dtable(10, 0.0f);
  const float dout[] = {1, 1, 1, 1, 1, 1};
  EXPECT_THROWS(safl::cpu::embedding_backward(dtable.data(), dout, too_big, 3, 5, 2), safl::Error,
                "embedding_backward: expected ids in [0, 5) but received 5 at position 2");
  EXPECT(dtable[0] == 0.0f && dtable[8] == 0.0f);
  EXPECT_THROWS(safl::cpu::embedding_forward(y.data(), too_big, table, -1, 5, 2), safl::Error,
                "embedding_forward: expected N >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::embedding_forward(y.data(), too_big, table, 1, 5, -2), safl::Error,
                "embedding_forward: expected D >= 0 but received -2");
  try {
    safl::cpu::embedding_forward(y.data(), negative, table, 1, 5, 2);
  } catch (const safl::Error& e) {
    EXPECT(e.kind() == safl::ErrorKind::Range);
  }
  // Zero sizes: no ids to check, nothing written.
  Guarded empty(0);
  safl::cpu::embedding_forward(empty.data(), nullptr, table, 0, 5, 2);
  safl::cpu::embedding_backward(dtable.data(), nullptr, nullptr, 0, 5, 2);
  EXPECT_GUARDS(empty, "empty");
}

SAFL_TEST(sinusoid_table_values) {
  for (int64_t D : {4, 5}) {
    const int64_t T = 30;
    Guarded table(T * D);
    safl::cpu::sinusoid_table(table.data(), T, D);
    EXPECT_GUARDS(table, "table");
    EXPECT_FINITE(table.data(), table.size());
    for (int64_t d = 0; d < D; ++d) EXPECT(table[d] == (d % 2 == 0 ? 0.0f : 1.0f));  // position 0
    for (int64_t t = 0; t < T; ++t) {
      EXPECT_NEAR(table[t * D + 0], std::sin(double(t)), 1e-7);
      EXPECT_NEAR(table[t * D + 1], std::cos(double(t)), 1e-7);
      const double f2 = std::pow(10000.0, -2.0 / double(D));  // dims 2 and 3 share 10000^(-2/D)
      EXPECT_NEAR(table[t * D + 2], std::sin(t * f2), 1e-7);
      EXPECT_NEAR(table[t * D + 3], std::cos(t * f2), 1e-7);
      if (D == 5) EXPECT_NEAR(table[t * D + 4], std::sin(t * std::pow(10000.0, -4.0 / 5.0)), 1e-7);
    }
    if (D == 4) EXPECT_NEAR(table[1 * D + 2], std::sin(0.01), 1e-9);  // 10000^(-1/2) = 1/100
  }
  Guarded none(0);
  safl::cpu::sinusoid_table(none.data(), 0, 8);
  safl::cpu::sinusoid_table(none.data(), 8, 0);
  EXPECT_GUARDS(none, "none");
  EXPECT_THROWS(safl::cpu::sinusoid_table(none.data(), -1, 8), safl::Error,
                "sinusoid_table: expected T >= 0 but received -1");
}

SAFL_TEST(add_positions_cases) {
  const int64_t B = 2, T = 3, D = 2;
  const float positions[] = {0, 1, 10, 20, 30, 40};
  const float x[] = {1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6};
  Guarded y(B * T * D);
  safl::cpu::add_positions(y.data(), x, positions, B, T, D);
  const float expected[] = {1, 3, 13, 24, 35, 46, -1, -1, 7, 16, 25, 34};
  EXPECT_ALL_CLOSE(y.data(), expected, 12, 0.0, 0.0);
  EXPECT_GUARDS(y, "y");
  // In place, with the Transformer's sqrt(D) scale on the embedding.
  std::vector<float> in_place(x, x + 12);
  const float scale = std::sqrt(2.0f);
  safl::cpu::add_positions(in_place.data(), in_place.data(), positions, B, T, D, scale);
  for (int64_t i = 0; i < B * T * D; ++i) EXPECT(in_place[i] == x[i] * scale + positions[i % (T * D)]);
  // Note [backward of add_positions]: the gradient w.r.t. x is dout · embedding_scale.
  safl::test::Rng rng(43);
  std::vector<float> xs(B * T * D), w(B * T * D), out(B * T * D), dx(B * T * D);
  rng.fill_uniform(xs.data(), xs.size());
  rng.fill_uniform(w.data(), w.size());
  auto loss = [&] {
    safl::cpu::add_positions(out.data(), xs.data(), positions, B, T, D, scale);
    return safl::test::dot(out.data(), w.data(), out.size());
  };
  auto backward = [&] {
    for (size_t i = 0; i < dx.size(); ++i) dx[i] = w[i] * scale;
  };
  safl::test::gradcheck("add_positions", {{"x", xs.data(), dx.data(), xs.size()}}, loss, backward);
  // Zero sizes and errors.
  Guarded empty(0);
  safl::cpu::add_positions(empty.data(), nullptr, positions, 0, T, D);
  safl::cpu::add_positions(empty.data(), nullptr, nullptr, B, 0, D);
  EXPECT_GUARDS(empty, "empty");
  EXPECT_THROWS(safl::cpu::add_positions(empty.data(), x, positions, -1, T, D), safl::Error,
                "add_positions: expected B >= 0 but received -1");
  EXPECT_THROWS(safl::cpu::add_positions(empty.data(), x, positions, B, T, D, INFINITY), safl::Error,
                "add_positions: expected a finite embedding_scale but received inf");
}
