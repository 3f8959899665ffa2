// Adam and AdamW over one contiguous parameter buffer (params, grads, m, v all (P,)), and global
// gradient-norm clipping.
//
//   grad_norm   sqrt(Σ g_i²) accumulated in double. See Note [deterministic gradient norm].
//   clip_factor min(1, max_norm / (norm + 1e-6)): the grad_scale that clips the global norm to
//               max_norm. A norm that is NaN or infinite gives 1: the caller should test the norm
//               with std::isfinite and skip the step instead.
//   adam_step   one step t (1, 2, ...), PyTorch's update with bias correction:
//                 g = grad_scale · grad  (+ weight_decay · param for Adam, not AdamW)
//                 m = β1 m + (1 - β1) g,  v = β2 v + (1 - β2) g²
//                 param -= lr · weight_decay · param          (AdamW only, before the update)
//                 param -= lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)
//               params, m and v are updated in place; m and v start at zero.
//
// Note [deterministic gradient norm]: the sum of squares is split into fixed chunks of
// kGradNormChunk elements (CPU) or a grid fixed by P (CUDA), each summed in double in index
// order, and the partial sums are added in chunk order. The chunking depends only on P, so the
// norm is bit-identical whatever the number of threads. On CUDA grad_norm copies the result to
// the host (one synchronisation).
#pragma once
#include <cmath>

#include "common/error.h"
#include "ops/backend.h"
#include "ops/host_device.h"

namespace safl {

// Elements per partial sum of the CPU grad_norm (Note [deterministic gradient norm]).
constexpr int64_t kGradNormChunk = 1 << 16;

struct AdamOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.98f;
  float eps = 1e-9f;
  float weight_decay = 0.0f;
  bool decoupled_weight_decay = false;  // false: Adam (L2 term in the gradient); true: AdamW
};

// The grad_scale of adam_step that clips the global gradient norm to max_norm (see above).
inline float clip_factor(double norm, float max_norm) {
  SAFL_CHECK_RANGE(max_norm > 0.0f, "clip_factor: expected max_norm > 0 but received ", max_norm);
  const double denominator = norm + 1e-6;
  return denominator > double(max_norm) ? float(double(max_norm) / denominator) : 1.0f;
}

// The argument checks of adam_step, shared by both backends (host side).
inline void check_adam_arguments(int64_t P, int64_t step, float grad_scale, const AdamOptions& options) {
  SAFL_CHECK_RANGE(P >= 0, "adam_step: expected P >= 0 but received ", P);
  SAFL_CHECK_RANGE(step >= 1, "adam_step: expected step >= 1 but received ", step);
  SAFL_CHECK_RANGE(options.lr >= 0.0f && std::isfinite(options.lr),
                   "adam_step: expected a finite lr >= 0 but received ", options.lr);
  SAFL_CHECK_RANGE(options.beta1 >= 0.0f && options.beta1 < 1.0f,
                   "adam_step: expected 0 <= beta1 < 1 but received ", options.beta1);
  SAFL_CHECK_RANGE(options.beta2 >= 0.0f && options.beta2 < 1.0f,
                   "adam_step: expected 0 <= beta2 < 1 but received ", options.beta2);
  SAFL_CHECK_RANGE(options.eps > 0.0f && std::isfinite(options.eps),
                   "adam_step: expected a finite eps > 0 but received ", options.eps);
  SAFL_CHECK_RANGE(options.weight_decay >= 0.0f && std::isfinite(options.weight_decay),
                   "adam_step: expected a finite weight_decay >= 0 but received ", options.weight_decay);
  SAFL_CHECK_RANGE(grad_scale >= 0.0f && std::isfinite(grad_scale),
                   "adam_step: expected a finite grad_scale >= 0 but received ", grad_scale);
}

// The step's per-parameter constants, computed once on the host in double.
struct AdamStepConstants {
  float step_size;          // lr / (1 - β1^t)
  float inv_sqrt_bias2;     // 1 / sqrt(1 - β2^t)
  float decay_in_gradient;  // weight_decay for Adam, 0 for AdamW
  float decay_factor;       // 1 - lr · weight_decay for AdamW, 1 for Adam
};

inline AdamStepConstants adam_step_constants(const AdamOptions& o, int64_t step) {
  const double bias1 = 1.0 - std::pow(double(o.beta1), double(step));
  const double bias2 = 1.0 - std::pow(double(o.beta2), double(step));
  AdamStepConstants k;
  k.step_size = float(double(o.lr) / bias1);
  k.inv_sqrt_bias2 = float(1.0 / std::sqrt(bias2));
  k.decay_in_gradient = o.decoupled_weight_decay ? 0.0f : o.weight_decay;
  k.decay_factor = o.decoupled_weight_decay ? float(1.0 - double(o.lr) * double(o.weight_decay)) : 1.0f;
  return k;
}

// One parameter's update, shared by both backends.
SAFL_HOST_DEVICE void adam_update_element(float& param, float& m, float& v, float grad,
                                          float grad_scale, float beta1, float beta2, float eps,
                                          const AdamStepConstants& k) {
  const float g = grad * grad_scale + k.decay_in_gradient * param;
  m = beta1 * m + (1.0f - beta1) * g;
  v = beta2 * v + (1.0f - beta2) * g * g;
  const float denominator = sqrtf(v) * k.inv_sqrt_bias2 + eps;
  param = param * k.decay_factor - k.step_size * (m / denominator);
}

}  // namespace safl

#define SAFL_OPTIMIZER_DECLS                                                                    \
  double grad_norm(const float* grads /* (P) */, int64_t P);                                    \
  void adam_step(float* params /* (P), updated */, float* m /* (P), updated */,                 \
                 float* v /* (P), updated */, const float* grads /* (P) */, int64_t P,          \
                 int64_t step, float grad_scale, const AdamOptions& options);
SAFL_DECLARE_FOR_BACKENDS(SAFL_OPTIMIZER_DECLS)
#undef SAFL_OPTIMIZER_DECLS
