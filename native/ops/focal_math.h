// Per-token focal-loss math shared by the CPU and CUDA focal loss (ops/focal_loss.h). Everything
// is a function of ℓ = log p_t, the log-probability of the target class, which is <= 0.
//
// Note [focal gradient]: with q = 1 - p_t,
//   FL(ℓ)   = -α q^γ ℓ,                        dq/dℓ = -p_t
//   dFL/dℓ  = α [γ q^(γ-1) p_t ℓ - q^γ]         (the "factor" below)
//   dℓ/dz_j = δ_jt - p_j                        (log-softmax)
//   dFL/dz_j = α [γ q^(γ-1) p_t ℓ - q^γ] (δ_jt - p_j).
// Numerics: q is computed as -expm1(ℓ), exact where p_t is close to 1. The factor is evaluated as
// α q^γ (γ p_t (ℓ/q) - 1), because q^(γ-1) is infinite at q = 0 when γ < 1 while q^γ ℓ/q is not:
// ℓ/q -> -1 as q -> 0 (q ≈ -ℓ). At p_t = 1 exactly (ℓ = 0, q = 0) the ratio is taken as -1, so
// the factor is α · 0 · (-γ - 1) = 0 for γ > 0 (its limit) and -α for γ = 0, never 0·∞ = NaN.
//
// Note [gamma = 0 is cross-entropy]: q^0 = 1 exactly (powf(x, 0) = 1 for every x) and γ·(finite)
// = 0, so the loss is -α ℓ and the factor is -α bit for bit. With α = 1 the focal loss then gives
// IDENTICAL BITS (not merely within an ulp) to a plain cross-entropy built on the same log-softmax
// arithmetic: loss -ℓ, gradient scale · (p_j - δ_jt), since (-s)·(δ - p) = s·(p - δ) exactly.
// test_focal_loss.cpp compares the two with memcmp.
#pragma once
#include <math.h>

#include "ops/host_device.h"

namespace safl {

// 1 - p_t from ℓ = log p_t, without the cancellation of 1 - exp(ℓ).
SAFL_HOST_DEVICE float focal_one_minus_p(float log_p) { return -expm1f(log_p); }

// FL = -α (1 - p_t)^γ log p_t.
SAFL_HOST_DEVICE float focal_loss_term(float log_p, float gamma, float alpha) {
  const float q = focal_one_minus_p(log_p);
  return -alpha * powf(q, gamma) * log_p;
}

// dFL/dℓ = α [γ (1 - p_t)^(γ-1) p_t ℓ - (1 - p_t)^γ]; see Note [focal gradient]. The gradient
// with respect to logit j is this factor times (δ_jt - p_j).
SAFL_HOST_DEVICE float focal_grad_factor(float log_p, float gamma, float alpha) {
  const float q = focal_one_minus_p(log_p);
  const float p = expf(log_p);
  const float log_p_over_q = q > 0.0f ? log_p / q : -1.0f;
  return alpha * powf(q, gamma) * (gamma * p * log_p_over_q - 1.0f);
}

}  // namespace safl
