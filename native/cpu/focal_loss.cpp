// CPU focal loss fused with the log-softmax gradient (see ops/focal_loss.h; the math and its
// derivation are in ops/focal_math.h). The targets are checked and the non-pad rows counted
// first, so that nothing is written on a bad target and the row pass can scale its gradient by
// 1 / count directly. Rows are spread over the thread pool; the mean is then summed in double in
// row order, so it does not depend on the number of threads.
#include "ops/focal_loss.h"

#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"
#include "ops/focal_math.h"

namespace safl::cpu {

void focal_loss(float* loss, float* token_loss, float* dlogits, const float* logits,
                const int32_t* targets, int64_t N, int64_t C, int32_t pad_index, float gamma,
                float alpha, float grad_scale) {
  check_focal_loss_arguments(N, C, gamma, alpha, grad_scale);
  int64_t count = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int32_t t = targets[n];
    if (t == pad_index) continue;
    SAFL_CHECK_RANGE(t >= 0 && t < C, "focal_loss: expected targets in [0, ", C,
                     ") or the pad index ", pad_index, " but received ", t, " at position ", n);
    ++count;
  }
  // The gradient of the mean; with no token the loss is 0 and so is every gradient row.
  const float row_grad_scale = count > 0 ? grad_scale / float(count) : 0.0f;
  std::vector<float> scratch;
  if (!token_loss) scratch.resize(N);
  float* row_loss = token_loss ? token_loss : scratch.data();

  const int64_t rows_per_task = C >= 4096 ? 1 : 4096 / C;
  parallel_for(0, N, rows_per_task, [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const int32_t t = targets[n];
      float* grad_row = dlogits ? dlogits + n * C : nullptr;
      if (t == pad_index) {
        row_loss[n] = 0.0f;
        if (grad_row)
          for (int64_t c = 0; c < C; ++c) grad_row[c] = 0.0f;
        continue;
      }
      const float* z = logits + n * C;
      float max = z[0];
      for (int64_t c = 1; c < C; ++c) max = z[c] > max ? z[c] : max;
      // Note [log-sum-exp near p_t = 1]: Σ exp(z - max) = ties + rest, where `ties` counts the
      // logits equal to the max (each contributing exactly 1) and `rest` sums the others.
      int64_t ties = 0;
      float rest = 0.0f;
      for (int64_t c = 0; c < C; ++c) {
        if (z[c] == max) ++ties;
        else rest += std::exp(z[c] - max);
      }
      const float log_sum = std::log1p(float(ties - 1) + rest);
      const float log_p = (z[t] - max) - log_sum;
      row_loss[n] = focal_loss_term(log_p, gamma, alpha);
      if (!grad_row) continue;
      // δ_ct - p_c, with 1 - p_t taken from log p_t (Note [log-sum-exp near p_t = 1]).
      const float coefficient = row_grad_scale * focal_grad_factor(log_p, gamma, alpha);
      const float one_minus_p_t = focal_one_minus_p(log_p);
      for (int64_t c = 0; c < C; ++c)
        grad_row[c] = coefficient * (c == t ? one_minus_p_t : -std::exp((z[c] - max) - log_sum));
    }
  });
  double total = 0.0;
  for (int64_t n = 0; n < N; ++n) total += row_loss[n];
  *loss = count > 0 ? float(total / double(count)) : 0.0f;
}

}  // namespace safl::cpu
