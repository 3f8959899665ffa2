// Focal loss over N tokens of C classes, fused with the log-softmax gradient: one pass over each
// logits row (three sweeps of a row that stays in cache) computes its max, its log-sum-exp, the
// token's loss and the gradient row; the log-probabilities are never stored.
//   FL_n = -α (1 - p_t)^γ log p_t,  p = softmax(logits[n]), t = targets[n]
// Rows whose target equals pad_index are ignored (loss 0, gradient row 0). Outputs:
//   loss        the mean of FL_n over the non-pad rows; 0 when every row is pad (an empty mean is
//               taken as 0 so that an all-pad batch trains nothing instead of producing NaN).
//               On CUDA this is a device scalar: the model keeps everything on the device.
//   token_loss  FL_n per row (0 on pad rows), or nullptr.
//   dlogits     grad_scale · d(loss)/d(logits), the gradient of the MEAN loss (pad rows 0);
//               written (=), or nullptr to compute the loss only.
// γ = 0, α = 1 is exactly cross-entropy (see Note [gamma = 0 is cross-entropy] in
// ops/focal_math.h, which also derives the gradient). A target outside [0, C) that is not the pad
// index is a RangeError naming its position; nothing is written then. pad_index itself may lie
// outside [0, C) (e.g. -1). C must be at least 1.
//
// Note [log-sum-exp near p_t = 1]: log Σ_j exp(z_j - max) is computed as log1p(ties - 1 + rest),
// where ties counts the logits equal to the max and rest sums exp(z_j - max) over the others.
// When the target is a clear maximum, log p_t = -log1p(rest) keeps full relative precision however
// small rest is, whereas log(1 + rest) rounds to 0 once rest < 6e-8 (half the float epsilon): the
// loss and gradient of a confidently right token stay small but nonzero instead of collapsing to
// 0. For the same reason the target's gradient entry uses 1 - p_t = -expm1(log p_t), not
// 1 - exp(log p_t).
//
// Note [CUDA focal loss syncs once]: the CUDA version checks the targets and counts the non-pad
// rows on the device, then copies those two numbers to the host (one synchronisation) so that it
// can throw the RangeError and pass grad_scale / count to the row kernel. The loss itself stays on
// the device, summed in double by one block in a fixed order, so it is deterministic. Without
// token_loss the CUDA version allocates N floats of scratch for the row losses.
#pragma once
#include <cmath>

#include "common/error.h"
#include "ops/backend.h"

#define SAFL_FOCAL_LOSS_DECLS                                                                    \
  void focal_loss(float* loss /* (1), device scalar on CUDA */,                                 \
                  float* token_loss /* (N) or nullptr */,                                       \
                  float* dlogits /* (N, C), =, or nullptr */, const float* logits /* (N, C) */, \
                  const int32_t* targets /* (N) */, int64_t N, int64_t C, int32_t pad_index,    \
                  float gamma = 2.0f, float alpha = 1.0f, float grad_scale = 1.0f);
SAFL_DECLARE_FOR_BACKENDS(SAFL_FOCAL_LOSS_DECLS)
#undef SAFL_FOCAL_LOSS_DECLS

namespace safl {
// The checks of the sizes and scalars of focal_loss, shared by both backends (host side).
inline void check_focal_loss_arguments(int64_t N, int64_t C, float gamma, float alpha, float grad_scale) {
  SAFL_CHECK_RANGE(N >= 0, "focal_loss: expected N >= 0 but received ", N);
  SAFL_CHECK_RANGE(C >= 1, "focal_loss: expected C >= 1 but received ", C);
  SAFL_CHECK_RANGE(gamma >= 0.0f && std::isfinite(gamma),
                   "focal_loss: expected a finite gamma >= 0 but received ", gamma);
  SAFL_CHECK_RANGE(alpha > 0.0f && std::isfinite(alpha),
                   "focal_loss: expected a finite alpha > 0 but received ", alpha);
  SAFL_CHECK_RANGE(std::isfinite(grad_scale),
                   "focal_loss: expected a finite grad_scale but received ", grad_scale);
}
}  // namespace safl
