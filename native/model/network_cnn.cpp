// The convolutional part of the SAFL network (DESIGN.md §1 items 2–5): localisation network,
// TPS grid + bilinear sampler, ResNet-45 backbone; the training forward (batch statistics), its
// backward, and the inference forward with batch norm folded into the convolutions.
//
// Localisation: resize to loc_h×loc_w → six [conv3×3 → BN → ReLU], a 2×2 max-pool after the
// first five → flatten (C, H, W) → fc1 → BN1d → ReLU → ×0.1 → fc2 → (B, K, 2) control points.
// Rectification: grid = tps(control points) on the rect_h×rect_w output, grid_sample of the
// full-resolution input. The gradient reaches the localisation network through the sampler's grid
// gradient; the input image needs none.
// Backbone: stem conv3×3 → BN → ReLU, then basic blocks (see BlockRef); the (B, C4, 1, S) output
// becomes the sequence (B, S, C4).
#include <algorithm>

#include "common/threadpool.h"
#include "model/network_internal.h"
#include "ops/activation.h"
#include "ops/batchnorm.h"
#include "ops/conv.h"
#include "ops/linear.h"
#include "ops/pool.h"
#include "ops/resize.h"
#include "ops/sampler.h"
#include "ops/tps.h"

namespace safl::model::net {
namespace {

// The localisation head scales its hidden layer by this before fc2 (DESIGN.md §1 item 2).
constexpr float kLocHiddenScale = 0.1f;

void carve_conv_bn(Carver& c, ConvBnActs& a, const ConvRef& r, int64_t B, bool keep_out) {
  a.conv = c.floats(B * r.out_floats());
  a.out = keep_out ? c.floats(B * r.out_floats()) : nullptr;
  a.mean = c.floats(r.Co);
  a.inv_std = c.floats(r.Co);
}

void scale_in_place(float* x, float factor, int64_t n) {
  parallel_for(0, n, 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) x[i] *= factor;
  });
}

// out = ReLU(out + shortcut), NaN passing through as in the ReLU op.
void add_relu_in_place(float* out, const float* shortcut, int64_t n) {
  parallel_for(0, n, 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float v = out[i] + shortcut[i];
      out[i] = v < 0.0f ? 0.0f : v;
    }
  });
}

// ---- training ----------------------------------------------------------------------------------

void conv_forward(float* out, float* workspace, const float* x, const float* weight, const float* bias,
                  const ConvRef& r, int64_t B) {
  cpu::conv2d_forward(out, workspace, x, weight, bias, B, r.Ci, r.H, r.W, r.Co, r.kernel, r.kernel, r.stride_h,
                      r.stride_w, r.pad, r.pad);
}

// a.conv = conv(x); a.out = BN(a.conv) with batch statistics (running statistics updated),
// ReLU in place when `relu`.
void conv_bn_forward_train(ConvBnActs& a, const Weights& w, const ConvRef& r, const float* x, float* workspace,
                           int64_t B, bool relu) {
  const float* P = w.params;
  conv_forward(a.conv, workspace, x, P + r.weight, nullptr, r, B);
  cpu::batchnorm_forward_train(a.out, a.mean, a.inv_std, w.buffers + r.bn.mean, w.buffers + r.bn.var, a.conv,
                               P + r.bn.gamma, P + r.bn.beta, B, r.Co, r.Ho, r.Wo, kBatchNormEps,
                               kBatchNormMomentum);
  if (relu) cpu::relu_forward(a.out, a.out, B * r.out_floats());
}

// d (the gradient of a.out, consumed in place) through ReLU (when `relu`), BN and the conv;
// dx (nullable) receives the gradient of x.
void conv_bn_backward(float* grads, float* dx, float* d, const ConvBnActs& a, const Weights& w, const ConvRef& r,
                      const float* x, float* workspace, int64_t B, bool relu) {
  const float* P = w.params;
  if (relu) cpu::relu_backward(d, d, a.out, B * r.out_floats());
  cpu::batchnorm_backward(d, grads + r.bn.gamma, grads + r.bn.beta, a.mean, a.inv_std, d, a.conv, P + r.bn.gamma,
                          B, r.Co, r.Ho, r.Wo);
  cpu::conv2d_backward(dx, grads + r.weight, nullptr, workspace, d, x, P + r.weight, B, r.Ci, r.H, r.W, r.Co,
                       r.kernel, r.kernel, r.stride_h, r.stride_w, r.pad, r.pad);
}

void block_forward_train(BlockActs& a, const Weights& w, const BlockRef& r, const float* x, float* scratch,
                         float* workspace, int64_t B) {
  const int64_t n = B * r.conv2.out_floats();
  conv_bn_forward_train(a.c1, w, r.conv1, x, workspace, B, /*relu=*/true);
  conv_bn_forward_train(a.c2, w, r.conv2, a.c1.out, workspace, B, /*relu=*/false);
  if (r.has_down) {
    ConvBnActs down = a.down;
    down.out = scratch;
    conv_bn_forward_train(down, w, r.down, x, workspace, B, /*relu=*/false);
    add_relu_in_place(a.c2.out, scratch, n);
  } else {
    add_relu_in_place(a.c2.out, x, n);
  }
}

// dout (the gradient of the block's output, one of the five pool buffers) is consumed; returns
// the pool buffer that holds the gradient of the block's input x.
float* block_backward(float* grads, const BlockActs& a, const BlockRef& r, const Weights& w, const float* x,
                      float* dout, float* const pool[5], float* workspace, int64_t B) {
  float* free[4];
  int64_t k = 0;
  for (int64_t i = 0; i < 5; ++i)
    if (pool[i] != dout) free[k++] = pool[i];
  float* dc2 = free[0];
  float* dc1 = free[1];
  float* dx_main = free[2];
  float* dx_down = free[3];
  const float* P = w.params;

  cpu::relu_backward(dout, dout, a.c2.out, B * r.conv2.out_floats());
  cpu::batchnorm_backward(dc2, grads + r.conv2.bn.gamma, grads + r.conv2.bn.beta, a.c2.mean, a.c2.inv_std, dout,
                          a.c2.conv, P + r.conv2.bn.gamma, B, r.conv2.Co, r.conv2.Ho, r.conv2.Wo);
  float* dx = dout;  // identity shortcut: the sum's gradient is the input's
  if (r.has_down) {
    conv_bn_backward(grads, dx_down, dout, a.down, w, r.down, x, workspace, B, /*relu=*/false);
    dx = dx_down;
  }
  cpu::conv2d_backward(dc1, grads + r.conv2.weight, nullptr, workspace, dc2, a.c1.out, P + r.conv2.weight, B,
                       r.conv2.Ci, r.conv2.H, r.conv2.W, r.conv2.Co, r.conv2.kernel, r.conv2.kernel,
                       r.conv2.stride_h, r.conv2.stride_w, r.conv2.pad, r.conv2.pad);
  conv_bn_backward(grads, dx_main, dc1, a.c1, w, r.conv1, x, workspace, B, /*relu=*/true);
  add_in_place(dx, dx_main, B * r.conv1.in_floats());
  return dx;
}

}  // namespace

int64_t cnn_max_activation(const Config& config, const Refs& refs) {
  int64_t largest = std::max(3 * config.loc_h * config.loc_w, 3 * config.rect_h * config.rect_w);
  for_each_conv(refs, [&](const ConvRef& c) { largest = std::max({largest, c.in_floats(), c.out_floats()}); });
  return largest;
}

int64_t cnn_conv_workspace(const Refs& refs, int64_t B) {
  int64_t largest = 0;
  for_each_conv(refs, [&](const ConvRef& c) {
    largest = std::max(largest, cpu::conv2d_workspace_floats(B, c.Ci, c.H, c.W, c.Co, c.kernel, c.kernel,
                                                            c.stride_h, c.stride_w, c.pad, c.pad));
  });
  return largest;
}

void carve_cnn_train(Carver& c, CnnTrainActs& a, const Config& config, const Refs& refs, int64_t B) {
  LocActs& loc = a.loc;
  loc.small = c.floats(B * 3 * config.loc_h * config.loc_w);
  for (int64_t i = 0; i < 6; ++i) {
    const ConvRef& r = refs.loc_convs[i];
    carve_conv_bn(c, loc.conv[i], r, B, /*keep_out=*/true);
    if (i < 5) {
      const int64_t pooled = B * r.Co * (r.Ho / 2) * (r.Wo / 2);
      loc.pooled[i] = c.floats(pooled);
      loc.argmax[i] = c.ints(pooled);
    }
  }
  const int64_t F = config.loc_fc, K = config.fiducials;
  loc.fc1 = c.floats(B * F);
  loc.fc1_out = c.floats(B * F);
  loc.fc1_mean = c.floats(F);
  loc.fc1_inv_std = c.floats(F);
  loc.hidden = c.floats(B * F);
  loc.ctrl = c.floats(B * K * 2);
  loc.grid = c.floats(B * config.rect_h * config.rect_w * 2);
  loc.rect = c.floats(B * 3 * config.rect_h * config.rect_w);
  carve_conv_bn(c, a.stem, refs.stem, B, /*keep_out=*/true);
  a.blocks.resize(refs.blocks.size());
  for (size_t k = 0; k < refs.blocks.size(); ++k) {
    carve_conv_bn(c, a.blocks[k].c1, refs.blocks[k].conv1, B, /*keep_out=*/true);
    carve_conv_bn(c, a.blocks[k].c2, refs.blocks[k].conv2, B, /*keep_out=*/true);
    if (refs.blocks[k].has_down) carve_conv_bn(c, a.blocks[k].down, refs.blocks[k].down, B, /*keep_out=*/false);
  }
  a.sequence = c.floats(B * config.seq_len() * config.res_channels.back());
}

void carve_cnn_grads(Carver& c, CnnGrads& g, const Config& config, const Refs& refs, int64_t B) {
  const int64_t largest = B * cnn_max_activation(config, refs);
  for (float*& p : g.pool) p = c.floats(largest);
  g.drect = c.floats(B * 3 * config.rect_h * config.rect_w);
  g.dgrid = c.floats(B * config.rect_h * config.rect_w * 2);
  g.dctrl = c.floats(B * config.fiducials * 2);
  g.dhidden = c.floats(B * config.loc_fc);
}

void cnn_forward_train(CnnTrainActs& a, const Weights& w, const Config& config, const Refs& refs,
                       const float* images, const float* grid_matrix, float* scratch, float* workspace,
                       int64_t B) {
  const float* P = w.params;
  LocActs& loc = a.loc;
  cpu::bilinear_resize_forward(loc.small, images, B, 3, config.in_h, config.in_w, config.loc_h, config.loc_w);
  const float* x = loc.small;
  for (int64_t i = 0; i < 6; ++i) {
    const ConvRef& r = refs.loc_convs[i];
    conv_bn_forward_train(loc.conv[i], w, r, x, workspace, B, /*relu=*/true);
    x = loc.conv[i].out;
    if (i < 5) {
      cpu::maxpool2x2_forward(loc.pooled[i], loc.argmax[i], x, B, r.Co, r.Ho, r.Wo);
      x = loc.pooled[i];
    }
  }
  const LinearRef& fc1 = refs.loc_fc1;
  const BatchNormRef& bn = refs.loc_fc1_bn;
  const int64_t F = config.loc_fc, K = config.fiducials;
  cpu::linear_forward(loc.fc1, x, P + fc1.weight, P + fc1.bias, B, fc1.in, F);
  cpu::batchnorm_forward_train(loc.fc1_out, loc.fc1_mean, loc.fc1_inv_std, w.buffers + bn.mean, w.buffers + bn.var,
                               loc.fc1, P + bn.gamma, P + bn.beta, B, F, 1, 1, kBatchNormEps, kBatchNormMomentum);
  cpu::relu_forward(loc.fc1_out, loc.fc1_out, B * F);
  std::copy(loc.fc1_out, loc.fc1_out + B * F, loc.hidden);
  scale_in_place(loc.hidden, kLocHiddenScale, B * F);
  cpu::linear_forward(loc.ctrl, loc.hidden, P + refs.loc_fc2.weight, P + refs.loc_fc2.bias, B, F, 2 * K);
  cpu::tps_grid_forward(loc.grid, loc.ctrl, grid_matrix, B, K, config.rect_h, config.rect_w);
  cpu::grid_sample_forward(loc.rect, images, loc.grid, B, 3, config.in_h, config.in_w, config.rect_h,
                           config.rect_w);

  conv_bn_forward_train(a.stem, w, refs.stem, loc.rect, workspace, B, /*relu=*/true);
  x = a.stem.out;
  for (size_t k = 0; k < refs.blocks.size(); ++k) {
    block_forward_train(a.blocks[k], w, refs.blocks[k], x, scratch, workspace, B);
    x = a.blocks[k].c2.out;
  }
  transpose_last_two(a.sequence, x, B, refs.blocks.back().conv2.Co, config.seq_len());
}

void cnn_backward(float* grads, const CnnTrainActs& a, CnnGrads& g, const Weights& w, const Config& config,
                  const Refs& refs, const float* images, const float* grid_matrix, const float* dsequence,
                  float* workspace, int64_t B) {
  const float* P = w.params;
  const LocActs& loc = a.loc;
  float* d = g.pool[0];  // (B, C4, 1, S)
  transpose_last_two(d, dsequence, B, config.seq_len(), refs.blocks.back().conv2.Co);
  for (size_t k = refs.blocks.size(); k-- > 0;) {
    const float* x = k > 0 ? a.blocks[k - 1].c2.out : a.stem.out;
    d = block_backward(grads, a.blocks[k], refs.blocks[k], w, x, d, g.pool, workspace, B);
  }
  conv_bn_backward(grads, g.drect, d, a.stem, w, refs.stem, loc.rect, workspace, B, /*relu=*/true);
  cpu::grid_sample_backward(g.dgrid, nullptr, g.drect, images, loc.grid, B, 3, config.in_h, config.in_w,
                            config.rect_h, config.rect_w);
  const int64_t F = config.loc_fc, K = config.fiducials;
  cpu::tps_grid_backward(g.dctrl, g.dgrid, loc.ctrl, grid_matrix, B, K, config.rect_h, config.rect_w);

  const LinearRef& fc1 = refs.loc_fc1;
  const LinearRef& fc2 = refs.loc_fc2;
  const BatchNormRef& bn = refs.loc_fc1_bn;
  cpu::linear_backward(g.dhidden, grads + fc2.weight, grads + fc2.bias, g.dctrl, loc.hidden, P + fc2.weight, B, F,
                       2 * K);
  scale_in_place(g.dhidden, kLocHiddenScale, B * F);
  cpu::relu_backward(g.dhidden, g.dhidden, loc.fc1_out, B * F);
  cpu::batchnorm_backward(g.dhidden, grads + bn.gamma, grads + bn.beta, loc.fc1_mean, loc.fc1_inv_std, g.dhidden,
                          loc.fc1, P + bn.gamma, B, F, 1, 1);
  d = g.pool[0];  // the gradient of the last localisation conv's output
  cpu::linear_backward(d, grads + fc1.weight, grads + fc1.bias, g.dhidden, loc.conv[5].out, P + fc1.weight, B,
                       fc1.in, F);
  for (int64_t i = 5; i >= 0; --i) {
    const ConvRef& r = refs.loc_convs[i];
    if (i == 0) {
      conv_bn_backward(grads, nullptr, d, loc.conv[0], w, r, loc.small, workspace, B, /*relu=*/true);
      break;
    }
    float* dpooled = g.pool[1];
    conv_bn_backward(grads, dpooled, d, loc.conv[i], w, r, loc.pooled[i - 1], workspace, B, /*relu=*/true);
    const ConvRef& prev = refs.loc_convs[i - 1];
    cpu::maxpool2x2_backward(d, loc.argmax[i - 1], dpooled, B, prev.Co, prev.Ho, prev.Wo);
  }
}

// ---- inference -----------------------------------------------------------------------------------

void carve_cnn_infer(Carver& c, CnnInferBuffers& b, const Config& config, const Refs& refs, int64_t B) {
  const int64_t largest = B * cnn_max_activation(config, refs);
  b.small = c.floats(B * 3 * config.loc_h * config.loc_w);
  b.ping = c.floats(largest);
  b.pong = c.floats(largest);
  b.temp1 = c.floats(largest);
  b.temp2 = c.floats(largest);
  b.argmax = c.ints(largest);
  b.fc1 = c.floats(B * config.loc_fc);
  b.ctrl = c.floats(B * config.fiducials * 2);
  b.grid = c.floats(B * config.rect_h * config.rect_w * 2);
  b.rect = c.floats(B * 3 * config.rect_h * config.rect_w);
  b.sequence = c.floats(B * config.seq_len() * config.res_channels.back());
  b.workspace = c.floats(cnn_conv_workspace(refs, B));
}

void cnn_forward_infer(CnnInferBuffers& b, const Weights& w, const Config& config, const Refs& refs,
                       const float* images, const float* grid_matrix, int64_t B) {
  const float* Fw = w.folded;
  auto conv_folded = [&](float* out, const float* x, const ConvRef& r, bool relu) {
    conv_forward(out, b.workspace, x, Fw + r.folded_weight, Fw + r.folded_bias, r, B);
    if (relu) cpu::relu_forward(out, out, B * r.out_floats());
  };
  cpu::bilinear_resize_forward(b.small, images, B, 3, config.in_h, config.in_w, config.loc_h, config.loc_w);
  const float* x = b.small;
  for (int64_t i = 0; i < 6; ++i) {
    const ConvRef& r = refs.loc_convs[i];
    conv_folded(b.ping, x, r, /*relu=*/true);
    x = b.ping;
    if (i < 5) {
      cpu::maxpool2x2_forward(b.pong, b.argmax, b.ping, B, r.Co, r.Ho, r.Wo);
      x = b.pong;
    }
  }
  const int64_t F = config.loc_fc, K = config.fiducials;
  cpu::linear_forward(b.fc1, x, Fw + refs.loc_fc1_folded_weight, Fw + refs.loc_fc1_folded_bias, B, refs.loc_fc1.in,
                      F);
  cpu::relu_forward(b.fc1, b.fc1, B * F);
  scale_in_place(b.fc1, kLocHiddenScale, B * F);
  cpu::linear_forward(b.ctrl, b.fc1, w.params + refs.loc_fc2.weight, w.params + refs.loc_fc2.bias, B, F, 2 * K);
  cpu::tps_grid_forward(b.grid, b.ctrl, grid_matrix, B, K, config.rect_h, config.rect_w);
  cpu::grid_sample_forward(b.rect, images, b.grid, B, 3, config.in_h, config.in_w, config.rect_h, config.rect_w);

  float* cur = b.ping;
  float* next = b.pong;
  conv_folded(cur, b.rect, refs.stem, /*relu=*/true);
  for (const BlockRef& r : refs.blocks) {
    conv_folded(b.temp1, cur, r.conv1, /*relu=*/true);
    conv_folded(next, b.temp1, r.conv2, /*relu=*/false);
    const float* shortcut = cur;
    if (r.has_down) {
      conv_folded(b.temp2, cur, r.down, /*relu=*/false);
      shortcut = b.temp2;
    }
    add_relu_in_place(next, shortcut, B * r.conv2.out_floats());
    std::swap(cur, next);
  }
  transpose_last_two(b.sequence, cur, B, refs.blocks.back().conv2.Co, config.seq_len());
}

}  // namespace safl::model::net
