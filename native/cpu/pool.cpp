// CPU 2×2 stride-2 max-pooling (see ops/pool.h), spread over (b, c) planes.
#include "ops/pool.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"
#include "common/threadpool.h"

namespace safl::cpu {
namespace {

void check_sizes(const char* op, int64_t B, int64_t C, int64_t H, int64_t W) {
  SAFL_CHECK_RANGE(B >= 0, op, ": expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(C >= 0, op, ": expected C >= 0 but received ", C);
  SAFL_CHECK_RANGE(H >= 0, op, ": expected H >= 0 but received ", H);
  SAFL_CHECK_RANGE(W >= 0, op, ": expected W >= 0 but received ", W);
  SAFL_CHECK_RANGE(H * W <= std::numeric_limits<int32_t>::max(), op,
                   ": expected H*W <= 2147483647 (int32 indices) but received ", H * W);
}

int64_t grain_for(int64_t values_per_plane) {
  constexpr int64_t kValuesPerChunk = 16384;
  return std::max<int64_t>(1, kValuesPerChunk / std::max<int64_t>(1, values_per_plane));
}

}  // namespace

void maxpool2x2_forward(float* out, int32_t* argmax, const float* x, int64_t B, int64_t C,
                        int64_t H, int64_t W) {
  check_sizes("maxpool2x2_forward", B, C, H, W);
  const int64_t Ho = H / 2, Wo = W / 2;
  if (Ho == 0 || Wo == 0) return;
  parallel_for(0, B * C, grain_for(H * W), [&](int64_t lo, int64_t hi) {
    for (int64_t plane = lo; plane < hi; ++plane) {
      const float* src = x + plane * H * W;
      float* dst = out + plane * Ho * Wo;
      int32_t* index = argmax + plane * Ho * Wo;
      for (int64_t oh = 0; oh < Ho; ++oh) {
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const int64_t top_left = (2 * oh) * W + 2 * ow;
          int64_t best = top_left;
          for (const int64_t candidate : {top_left + 1, top_left + W, top_left + W + 1}) {
            if (src[candidate] > src[best] || (std::isnan(src[candidate]) && !std::isnan(src[best])))
              best = candidate;
          }
          dst[oh * Wo + ow] = src[best];
          index[oh * Wo + ow] = int32_t(best);
        }
      }
    }
  });
}

void maxpool2x2_backward(float* dx, const int32_t* argmax, const float* dout, int64_t B, int64_t C,
                         int64_t H, int64_t W) {
  check_sizes("maxpool2x2_backward", B, C, H, W);
  const int64_t Ho = H / 2, Wo = W / 2;
  parallel_for(0, B * C, grain_for(H * W), [&](int64_t lo, int64_t hi) {
    for (int64_t plane = lo; plane < hi; ++plane) {
      float* dst = dx + plane * H * W;
      std::fill(dst, dst + H * W, 0.0f);
      const float* src = dout + plane * Ho * Wo;
      const int32_t* index = argmax + plane * Ho * Wo;
      for (int64_t i = 0; i < Ho * Wo; ++i) dst[index[i]] += src[i];
    }
  });
}

}  // namespace safl::cpu
