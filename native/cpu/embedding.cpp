// CPU token embedding and sinusoidal positions (see ops/embedding.h). The ids are checked before
// anything is written. The backward scatter-adds with each task owning a range of columns and
// walking the tokens in order, so repeated ids need no atomics and the sums are deterministic.
#include "ops/embedding.h"

#include <cmath>

#include "common/error.h"
#include "common/threadpool.h"

namespace safl::cpu {
namespace {

void check_sizes(const char* op, int64_t N, int64_t rows, int64_t D) {
  SAFL_CHECK_RANGE(N >= 0, op, ": expected N >= 0 but received ", N);
  SAFL_CHECK_RANGE(rows >= 0, op, ": expected rows >= 0 but received ", rows);
  SAFL_CHECK_RANGE(D >= 0, op, ": expected D >= 0 but received ", D);
}

void check_ids(const char* op, const int32_t* ids, int64_t N, int64_t rows) {
  for (int64_t n = 0; n < N; ++n)
    SAFL_CHECK_RANGE(ids[n] >= 0 && ids[n] < rows, op, ": expected ids in [0, ", rows,
                     ") but received ", ids[n], " at position ", n);
}

int64_t rows_per_task(int64_t D) { return D >= 4096 ? 1 : 4096 / (D + 1); }

}  // namespace

void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t N, int64_t rows,
                       int64_t D) {
  check_sizes("embedding_forward", N, rows, D);
  check_ids("embedding_forward", ids, N, rows);
  parallel_for(0, N, rows_per_task(D), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const float* row = table + int64_t(ids[n]) * D;
      for (int64_t d = 0; d < D; ++d) out[n * D + d] = row[d];
    }
  });
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N,
                        int64_t rows, int64_t D) {
  check_sizes("embedding_backward", N, rows, D);
  check_ids("embedding_backward", ids, N, rows);
  parallel_for(0, D, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t n = 0; n < N; ++n) {
      float* row = dtable + int64_t(ids[n]) * D;
      for (int64_t d = lo; d < hi; ++d) row[d] += dout[n * D + d];
    }
  });
}

void sinusoid_table(float* table, int64_t T, int64_t D) {
  SAFL_CHECK_RANGE(T >= 0, "sinusoid_table: expected T >= 0 but received ", T);
  SAFL_CHECK_RANGE(D >= 0, "sinusoid_table: expected D >= 0 but received ", D);
  const double log_base = std::log(10000.0);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t d = 0; d < D; ++d) {
      const int64_t even = d - d % 2;  // 2i for both members of the pair
      const double angle = double(t) * std::exp(-double(even) / double(D) * log_base);
      table[t * D + d] = float(d % 2 == 0 ? std::sin(angle) : std::cos(angle));
    }
  }
}

void add_positions(float* out, const float* x, const float* positions, int64_t B, int64_t T,
                   int64_t D, float embedding_scale) {
  SAFL_CHECK_RANGE(B >= 0, "add_positions: expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(T >= 0, "add_positions: expected T >= 0 but received ", T);
  SAFL_CHECK_RANGE(D >= 0, "add_positions: expected D >= 0 but received ", D);
  SAFL_CHECK_RANGE(std::isfinite(embedding_scale),
                   "add_positions: expected a finite embedding_scale but received ", embedding_scale);
  parallel_for(0, B * T, rows_per_task(D), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const float* p = positions + (r % T) * D;
      for (int64_t d = 0; d < D; ++d) out[r * D + d] = x[r * D + d] * embedding_scale + p[d];
    }
  });
}

}  // namespace safl::cpu
