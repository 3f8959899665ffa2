// Test images for the whole-network tests (test_network.cpp, test_cuda_network.cpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "tests/harness.h"

namespace safl::test {

// Smooth images in [-1, 1], (B, 3, in_h, in_w): a sinusoid per image and channel. The bilinear
// sampler's gradient jumps between pixel cells; images whose values change little from one pixel to
// the next keep such jumps small (Note [gradcheck test point] in test_network.cpp), also when the
// grids of two backends differ by rounding.
inline std::vector<float> smooth_images(const model::Config& c, int64_t B, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(B * 3 * c.in_h * c.in_w);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t ch = 0; ch < 3; ++ch) {
      const float fx = rng.uniform(0.05f, 0.2f), fy = rng.uniform(0.05f, 0.3f), phase = rng.uniform(0.0f, 6.0f);
      for (int64_t i = 0; i < c.in_h; ++i)
        for (int64_t j = 0; j < c.in_w; ++j)
          x[((b * 3 + ch) * c.in_h + i) * c.in_w + j] = 0.8f * std::sin(fx * float(j) + fy * float(i) + phase);
    }
  return x;
}

}  // namespace safl::test
