// Thin-plate-spline (TPS) grid generator of the rectification network (DESIGN.md §1 item 3).
// Host-only setup: the fiducial points and the constant (H·W, K) matrix M that maps K predicted
// control points to the H×W sampling grid. Per backend: the grid forward and its backward.
//
// Layouts: control points (B, K, 2) and grids (B, H, W, 2) store (x, y) pairs, x along the width.
// Control points live in [0,1]²; the grid is in the sampler's [-1,1] convention (native/ops/sampler.h).
// Backward rule: dcontrol_points is an activation gradient and is WRITTEN (=), not accumulated.
//
// Note [TPS as one matrix]: with target control points C (K, 2), the system matrix
//   L = [[U(C,C), 1, C], [1ᵀ, 0, 0], [Cᵀ, 0, 0]]   ((K+3)×(K+3)),  U(r) = r² log r,
// and, for output pixel p = (j/(W-1), i/(H-1)), the row R_p = [U(p,C), 1, p] (K+3), the TPS that
// sends C to the predicted points C′ maps p to R_p · L⁻¹ · Y with Y = [C′; 0] ((K+3)×2). The last
// three rows of Y are zero, so R · L⁻¹ · Y = (R · L⁻¹[:, :K]) · C′ = M · C′ with M = R · L⁻¹[:, :K]
// of shape (H·W, K), fixed once K, H, W and C are. Precomputing M in double at load time turns the
// per-batch work into one (H·W, K) × (K, 2) product per image instead of two GEMMs.
//
// Note [why the grid is clamped]: a TPS extrapolates freely, so M · C′ can leave [0,1]² when the
// localisation network predicts points near or past the border. Clamping to [0,1] keeps every
// sample inside the image (no zero-padding smear at the rectified image's border), as the
// reference model does with PyTorch's clamp. The gradient follows PyTorch's clamp: it passes
// unchanged where 0 <= M·C′ <= 1 (the exact boundary values 0 and 1 included) and is zero where
// the clamp is active, so a clamped grid entry sends no gradient to the control points.
//
// Note [TPS products as plain loops]: the per-batch products are M (H·W, K) × C′ (K, 2) per
// image, with K = 20: an N = 2 GEMM through safl::cpu::sgemm would be all packing overhead, so
// the forward and backward are plain loops over k with the clamp and the [-1,1] mapping fused in.
// Both backends compute the raw grid with one helper (tps_raw_coordinate, native/ops/sampler_math.h)
// that rounds alike on CPU and CUDA, so they take the same clamp decisions; the CPU backward sums
// its H·W terms in double (the reference), CUDA in a fixed-order block reduction. Forward +
// backward (which recomputes M · C′ for the clamp decision) cost ~12·B·H·W·K flops, ~50 MFLOP for
// a batch of 64 at 32×100 with K = 20: negligible next to the rest of the model. The setup's
// R · L⁻¹ runs once, in double, also as plain loops (sgemm is single precision).
#pragma once
#include "ops/backend.h"

namespace safl {

// Margin of the TPS target control points C (DESIGN.md §1 item 3).
constexpr double kTpsTargetMargin = 0.05;
// Margin of the initial control points: the localisation network's last FC bias (§1 item 2).
constexpr double kTpsInitialMargin = 0.01;

// Two rows of K/2 points, top row first: x = linspace(margin, 1 − margin, K/2), y = margin (top)
// and 1 − margin (bottom). Throws a RangeError unless K is even and >= 4 and 0 <= margin < 0.5.
void fiducial_points(float* points /* (K, 2) */, int64_t K, double margin);

// Number of floats of M for the given sizes: H · W · K.
int64_t tps_grid_matrix_size(int64_t K, int64_t H, int64_t W);

// M = R · L⁻¹[:, :K] for arbitrary target points (Note [TPS as one matrix]), computed in double
// and stored as float; the caller owns M (tps_grid_matrix_size floats). Pixel p of the H×W grid is
// (j/(W-1), i/(H-1)), with 0 for a size of 1 (as linspace(0, 1, 1)). L is inverted by Gauss-Jordan
// with partial pivoting; a singular L (repeated or collinear target points) throws safl::Error.
void tps_grid_matrix_for_points(float* M /* (H*W, K) */, const float* target_points /* (K, 2) */,
                                int64_t K, int64_t H, int64_t W);

// M for the model's target points: fiducial_points(K, kTpsTargetMargin).
void tps_grid_matrix(float* M /* (H*W, K) */, int64_t K, int64_t H, int64_t W);

namespace detail {
// The size checks of cpu:: and cuda:: tps_grid_forward/backward; `op` names the function.
void check_tps_grid_sizes(const char* op, int64_t B, int64_t K, int64_t H, int64_t W);
}  // namespace detail

}  // namespace safl

// grid = clamp(M · C′, 0, 1) · 2 − 1, per image. M is a host pointer for cpu::, a device pointer
// for cuda:: (upload the tps_grid_matrix result once). K even >= 4; B, H, W >= 0.
// Backward: dcontrol_points = Mᵀ · (dgrid ⊙ slope), slope = 2 inside the clamp range and 0
// where it is active (Note [why the grid is clamped]); the clamp decision is recomputed from
// control_points. dcontrol_points is written (zeros when H·W = 0).
#define SAFL_TPS_DECLS                                                                        \
  void tps_grid_forward(float* grid /* (B, H, W, 2) */,                                       \
                        const float* control_points /* (B, K, 2) */,                          \
                        const float* grid_matrix /* (H*W, K) */,                              \
                        int64_t B, int64_t K, int64_t H, int64_t W);                          \
  void tps_grid_backward(float* dcontrol_points /* (B, K, 2) */,                              \
                         const float* dgrid /* (B, H, W, 2) */,                               \
                         const float* control_points /* (B, K, 2) */,                         \
                         const float* grid_matrix /* (H*W, K) */,                             \
                         int64_t B, int64_t K, int64_t H, int64_t W);
SAFL_DECLARE_FOR_BACKENDS(SAFL_TPS_DECLS)
#undef SAFL_TPS_DECLS
