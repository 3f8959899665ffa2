// Bilinear grid sampler (DESIGN.md §1 item 4), PyTorch's grid_sample with mode="bilinear",
// padding_mode="zeros", align_corners=true: output pixel (b, c, i, j) reads input plane (b, c) at
// grid[b, i, j] = (x, y) in [-1,1], x along the width (-1 → column 0, +1 → column Wi-1), y along
// the height. Corners outside the input read as zero and send no gradient anywhere; points a pixel
// or more outside the input, or NaN, sample 0 with zero gradients. The per-element math is in
// native/ops/sampler_math.h.
//
// Backward rule: dgrid and dinput are activation gradients and are WRITTEN (=). dgrid is summed
// over channels per output point by the thread that owns that point (no atomics, deterministic);
// dinput (skipped when nullptr) is zeroed and then scatter-added: by (b, c) plane on the CPU,
// race-free; with bounds-checked atomicAdd on CUDA. At a point exactly on a pixel row or column
// the grid gradient is the one-sided derivative towards the next corner (as PyTorch).
#pragma once
#include "ops/backend.h"

namespace safl::detail {
// The size checks of cpu:: and cuda:: grid_sample_forward/backward; `op` names the function.
void check_grid_sample_sizes(const char* op, int64_t B, int64_t C, int64_t Hi, int64_t Wi, int64_t Ho,
                             int64_t Wo);
}  // namespace safl::detail

// All sizes >= 0. An input with Hi·Wi = 0 samples zeros.
#define SAFL_SAMPLER_DECLS                                                                    \
  void grid_sample_forward(float* out /* (B, C, Ho, Wo) */,                                   \
                           const float* input /* (B, C, Hi, Wi) */,                           \
                           const float* grid /* (B, Ho, Wo, 2) */,                            \
                           int64_t B, int64_t C, int64_t Hi, int64_t Wi, int64_t Ho,          \
                           int64_t Wo);                                                       \
  void grid_sample_backward(float* dgrid /* (B, Ho, Wo, 2) */,                                \
                            float* dinput /* (B, C, Hi, Wi) or nullptr */,                    \
                            const float* dout /* (B, C, Ho, Wo) */,                           \
                            const float* input /* (B, C, Hi, Wi) */,                          \
                            const float* grid /* (B, Ho, Wo, 2) */,                           \
                            int64_t B, int64_t C, int64_t Hi, int64_t Wi, int64_t Ho,         \
                            int64_t Wo);
SAFL_DECLARE_FOR_BACKENDS(SAFL_SAMPLER_DECLS)
#undef SAFL_SAMPLER_DECLS
