// Element-wise activations over flat float32 buffers of n elements: ReLU and (inverted) dropout.
//
// ReLU: out = max(x, 0), NaN passing through as in PyTorch. Backward reads the saved OUTPUT
// (dx = dout where out > 0, else 0; the gradient at x = 0 is 0, as in PyTorch), so the forward may
// run in place (out == x) without losing what backward needs. relu_backward may also run in place
// (dx == dout).
//
// Dropout: out = x·mask with mask[i] = 1/(1 − p) where element i is kept and 0 where it is dropped.
// The mask is saved as floats (that scale, so backward is one multiply and the mask lives in the
// float activation arena). Whether element i is kept depends only on (seed, i) through the
// counter-based hash dropout_keep below, so results do not depend on the thread count and both
// backends draw the same mask. p = 0 keeps everything (out = x). Forward may run in place (out ==
// x), backward too (dx == dout). The caller picks a fresh seed per layer and step.
//
// Backward: dx is WRITTEN (=); there are no parameters.
#pragma once
#include "ops/backend.h"
#include "ops/host_device.h"

namespace safl {
// The splitmix64 finaliser: a bijective 64-bit mix whose output bits all depend on every input bit.
SAFL_HOST_DEVICE uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// A uniform number in [0, 1) with 24 random bits (exact in float) for element `index` of the draw
// keyed by `seed`: element `index` of the splitmix64 stream whose start is the mixed seed, so
// nearby seeds give unrelated streams.
SAFL_HOST_DEVICE float dropout_uniform(uint64_t seed, uint64_t index) {
  constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
  const uint64_t z = splitmix64_mix(splitmix64_mix(seed + kGolden) + (index + 1) * kGolden);
  return float(z >> 40) * (1.0f / 16777216.0f);
}
// Whether element `index` survives dropout with probability p of being dropped.
SAFL_HOST_DEVICE bool dropout_keep(uint64_t seed, uint64_t index, float p) {
  return dropout_uniform(seed, index) >= p;
}
}  // namespace safl

#define SAFL_ACTIVATION_DECLS                                                                  \
  void relu_forward(float* out /* (n), may alias x */, const float* x /* (n) */, int64_t n);   \
                                                                                               \
  void relu_backward(float* dx /* (n) written, may alias dout */, const float* dout /* (n) */, \
                     const float* out /* (n) the forward's output */, int64_t n);              \
                                                                                               \
  void dropout_forward(float* out /* (n), may alias x */,                                      \
                       float* mask /* (n) saved: 0 or 1/(1 - p) */, const float* x /* (n) */,  \
                       int64_t n, float p, uint64_t seed);                                     \
                                                                                               \
  void dropout_backward(float* dx /* (n) written, may alias dout */,                           \
                        const float* mask /* (n) from dropout_forward */,                      \
                        const float* dout /* (n) */, int64_t n);
SAFL_DECLARE_FOR_BACKENDS(SAFL_ACTIVATION_DECLS)
#undef SAFL_ACTIVATION_DECLS
