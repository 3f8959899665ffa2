// CPU Adam/AdamW step and global gradient norm (see ops/optimizer.h; the per-parameter update is
// adam_update_element, shared with CUDA).
#include "ops/optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"

namespace safl::cpu {

double grad_norm(const float* grads, int64_t P) {
  SAFL_CHECK_RANGE(P >= 0, "grad_norm: expected P >= 0 but received ", P);
  // Note [deterministic gradient norm]: the chunks depend on P only, never on the thread count.
  const int64_t chunks = (P + kGradNormChunk - 1) / kGradNormChunk;
  std::vector<double> partial(chunks, 0.0);
  parallel_for(0, chunks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      const int64_t end = std::min(P, (c + 1) * kGradNormChunk);
      double sum = 0.0;
      for (int64_t i = c * kGradNormChunk; i < end; ++i) sum += double(grads[i]) * double(grads[i]);
      partial[c] = sum;
    }
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}

void adam_step(float* params, float* m, float* v, const float* grads, int64_t P, int64_t step,
               float grad_scale, const AdamOptions& options) {
  check_adam_arguments(P, step, grad_scale, options);
  const AdamStepConstants k = adam_step_constants(options, step);
  parallel_for(0, P, 1 << 14, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      adam_update_element(params[i], m[i], v[i], grads[i], grad_scale, options.beta1,
                          options.beta2, options.eps, k);
  });
}

}  // namespace safl::cpu
