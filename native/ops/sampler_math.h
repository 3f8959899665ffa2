// Per-element math shared by the CPU and CUDA TPS grid generator and bilinear grid sampler
// (native/cpu/{tps,sampler}.cpp, native/cuda/{tps,sampler}.cu): the TPS radial kernel, one raw
// TPS grid coordinate with its clamp-and-map and gradient, and the bilinear corners, weights,
// sample and derivatives of a grid point under align_corners=true with zero padding. Keeping one
// copy makes both backends round alike.
#pragma once
#include <cmath>
#include <cstdint>

#include "ops/host_device.h"

namespace safl {

// ---- TPS -------------------------------------------------------------------------------------

// The TPS radial kernel U(r) = r² log r, written in terms of the squared distance d2 = r²:
// U = 0.5 · d2 · log d2, and U = 0 at r = 0 (its limit). Host-only use (setup in double).
SAFL_HOST_DEVICE double tps_kernel_from_squared(double d2) { return d2 > 0.0 ? 0.5 * d2 * log(d2) : 0.0; }

// One raw TPS grid coordinate: Σ_k m_row[k] · points[2k + coord] (coord 0 = x, 1 = y), summed in
// k order with a rounding after each multiply and each add on both backends (no FMA contraction
// on CUDA), so the CPU and CUDA grids match bit for bit and take the same clamp decisions
// (Note [TPS products as plain loops] in native/ops/tps.h).
SAFL_HOST_DEVICE float tps_raw_coordinate(const float* m_row /* (K) */, const float* points /* (K, 2) */,
                                          int64_t K, int coord) {
  float acc = 0.0f;
  for (int64_t k = 0; k < K; ++k) {
#ifdef __CUDA_ARCH__
    acc = __fadd_rn(acc, __fmul_rn(m_row[k], points[2 * k + coord]));
#else
    acc += m_row[k] * points[2 * k + coord];
#endif
  }
  return acc;
}

// A raw TPS grid coordinate (in [0,1] inside the image) → the sampler's [-1,1] convention:
// clamp(raw, 0, 1) · 2 − 1. See Note [why the grid is clamped] in native/ops/tps.h.
SAFL_HOST_DEVICE float tps_grid_value(float raw) {
  const float clamped = raw < 0.0f ? 0.0f : (raw > 1.0f ? 1.0f : raw);
  return clamped * 2.0f - 1.0f;
}

// The gradient reaching a raw coordinate from dgrid: 2 · dgrid where 0 <= raw <= 1 (the boundary
// included, as PyTorch's clamp), exactly 0 where the clamp is active or raw is NaN (a selection,
// so a NaN dgrid at a clamped entry does not leak through).
SAFL_HOST_DEVICE float tps_grid_backprop(float raw, float dgrid) {
  return (raw >= 0.0f && raw <= 1.0f) ? 2.0f * dgrid : 0.0f;
}

// ---- bilinear sampling (align_corners=true, zero padding) -------------------------------------

// Grid coordinate g in [-1,1] → pixel coordinate: -1 → 0, +1 → size-1 (align_corners=true).
SAFL_HOST_DEVICE float grid_to_pixel(float g, int64_t size) { return (g + 1.0f) * 0.5f * float(size - 1); }
// d(pixel)/d(g) of grid_to_pixel.
SAFL_HOST_DEVICE float grid_to_pixel_slope(int64_t size) { return 0.5f * float(size - 1); }

// The four corners around one grid point: top-left (x0, y0), the other three at +1 in x and/or y,
// and the fractional offsets tx, ty in [0,1). A corner outside the image reads as zero (zero
// padding). `any_inside` is false when no corner can be inside — the pixel coordinate x lies
// below -1 or at or beyond width (likewise y), or is NaN — and then the sample and all its
// gradients are zero; the test also keeps floor() of a huge or NaN coordinate away from the int
// conversion. At x = -1 exactly, column 0 is a corner with weight 0: the value is 0 and the
// gradient the one-sided one, as in PyTorch.
struct BilinearCorners {
  int64_t x0, y0;
  float tx, ty;
  bool any_inside;
};

SAFL_HOST_DEVICE BilinearCorners bilinear_corners(float gx, float gy, int64_t width, int64_t height) {
  BilinearCorners c{0, 0, 0.0f, 0.0f, false};
  const float x = grid_to_pixel(gx, width);
  const float y = grid_to_pixel(gy, height);
  if (!(x >= -1.0f && x < float(width) && y >= -1.0f && y < float(height))) return c;
  const float fx = floorf(x), fy = floorf(y);
  c.x0 = int64_t(fx);
  c.y0 = int64_t(fy);
  c.tx = x - fx;
  c.ty = y - fy;
  c.any_inside = true;
  return c;
}

// Whether pixel (x, y) lies in a (height, width) plane.
SAFL_HOST_DEVICE bool pixel_inside(int64_t x, int64_t y, int64_t width, int64_t height) {
  return x >= 0 && x < width && y >= 0 && y < height;
}

// The input values at the four corners of one (height, width) plane: top-left, top-right,
// bottom-left, bottom-right; zero for a corner outside the plane, all zero when !any_inside.
struct CornerValues {
  float nw, ne, sw, se;
};

SAFL_HOST_DEVICE CornerValues corner_values(const float* plane /* (height, width) */, const BilinearCorners& c,
                                            int64_t width, int64_t height) {
  CornerValues v{0.0f, 0.0f, 0.0f, 0.0f};
  if (!c.any_inside) return v;
  const int64_t x1 = c.x0 + 1, y1 = c.y0 + 1;
  if (pixel_inside(c.x0, c.y0, width, height)) v.nw = plane[c.y0 * width + c.x0];
  if (pixel_inside(x1, c.y0, width, height)) v.ne = plane[c.y0 * width + x1];
  if (pixel_inside(c.x0, y1, width, height)) v.sw = plane[y1 * width + c.x0];
  if (pixel_inside(x1, y1, width, height)) v.se = plane[y1 * width + x1];
  return v;
}

// The corner weights: top-left (1-tx)(1-ty), top-right tx(1-ty), bottom-left (1-tx)ty,
// bottom-right tx·ty. They are also d(sample)/d(corner value), the input gradient's scatter weights.
SAFL_HOST_DEVICE CornerValues bilinear_weights(const BilinearCorners& c) {
  return CornerValues{(1.0f - c.tx) * (1.0f - c.ty), c.tx * (1.0f - c.ty), (1.0f - c.tx) * c.ty, c.tx * c.ty};
}

// The bilinear sample.
SAFL_HOST_DEVICE float bilinear_interpolate(const CornerValues& v, const BilinearCorners& c) {
  const CornerValues w = bilinear_weights(c);
  return w.nw * v.nw + w.ne * v.ne + w.sw * v.sw + w.se * v.se;
}

// d(sample)/dx and d(sample)/dy in pixel units (multiply by grid_to_pixel_slope for grid units).
SAFL_HOST_DEVICE float bilinear_dx(const CornerValues& v, const BilinearCorners& c) {
  return (1.0f - c.ty) * (v.ne - v.nw) + c.ty * (v.se - v.sw);
}
SAFL_HOST_DEVICE float bilinear_dy(const CornerValues& v, const BilinearCorners& c) {
  return (1.0f - c.tx) * (v.sw - v.nw) + c.tx * (v.se - v.ne);
}

}  // namespace safl
