// The convolutional part of the SAFL network on CUDA: localisation network, TPS grid + bilinear
// sampler, ResNet-45 backbone; the training forward (batch statistics), its backward, and the
// inference forward with batch norm folded into the convolutions. The computation is
// native/model/network_cnn.cpp's, step for step, with the safl::cuda ops on device buffers carved
// by the CPU network's carve functions (the buffer layout is shared; only the conv workspace size
// is the CUDA op's).
#include <algorithm>
#include <utility>

#include "cuda/network_cuda_internal.h"
#include "ops/activation.h"
#include "ops/batchnorm.h"
#include "ops/conv.h"
#include "ops/linear.h"
#include "ops/pool.h"
#include "ops/resize.h"
#include "ops/sampler.h"
#include "ops/tps.h"

namespace safl::model::cuda_net {
namespace {

// The localisation head scales its hidden layer by this before fc2 (DESIGN.md §1 item 2).
constexpr float kLocHiddenScale = 0.1f;

// ---- training ----------------------------------------------------------------------------------

void conv_forward(float* out, float* workspace, const float* x, const float* weight, const float* bias,
                  const ConvRef& r, int64_t B) {
  cuda::conv2d_forward(out, workspace, x, weight, bias, B, r.Ci, r.H, r.W, r.Co, r.kernel, r.kernel, r.stride_h,
                       r.stride_w, r.pad, r.pad);
}

// a.conv = conv(x); a.out = BN(a.conv) with batch statistics (running statistics updated),
// ReLU in place when `relu`.
void conv_bn_forward_train(ConvBnActs& a, const Weights& w, const ConvRef& r, const float* x, float* workspace,
                           int64_t B, bool relu) {
  const float* P = w.params;
  conv_forward(a.conv, workspace, x, P + r.weight, nullptr, r, B);
  cuda::batchnorm_forward_train(a.out, a.mean, a.inv_std, w.buffers + r.bn.mean, w.buffers + r.bn.var, a.conv,
                                P + r.bn.gamma, P + r.bn.beta, B, r.Co, r.Ho, r.Wo, kBatchNormEps,
                                kBatchNormMomentum);
  if (relu) cuda::relu_forward(a.out, a.out, B * r.out_floats());
}

// d (the gradient of a.out, consumed in place) through ReLU (when `relu`), BN and the conv;
// dx (nullable) receives the gradient of x.
void conv_bn_backward(float* grads, float* dx, float* d, const ConvBnActs& a, const Weights& w, const ConvRef& r,
                      const float* x, float* workspace, int64_t B, bool relu) {
  const float* P = w.params;
  if (relu) cuda::relu_backward(d, d, a.out, B * r.out_floats());
  cuda::batchnorm_backward(d, grads + r.bn.gamma, grads + r.bn.beta, a.mean, a.inv_std, d, a.conv, P + r.bn.gamma,
                           B, r.Co, r.Ho, r.Wo);
  cuda::conv2d_backward(dx, grads + r.weight, nullptr, workspace, d, x, P + r.weight, B, r.Ci, r.H, r.W, r.Co,
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
  float* dc2 = free[0];      // (B, conv2 out)
  float* dc1 = free[1];      // (B, conv1 out)
  float* dx_main = free[2];  // (B, block in)
  float* dx_down = free[3];  // (B, block in)
  const float* P = w.params;

  cuda::relu_backward(dout, dout, a.c2.out, B * r.conv2.out_floats());
  cuda::batchnorm_backward(dc2, grads + r.conv2.bn.gamma, grads + r.conv2.bn.beta, a.c2.mean, a.c2.inv_std, dout,
                           a.c2.conv, P + r.conv2.bn.gamma, B, r.conv2.Co, r.conv2.Ho, r.conv2.Wo);
  float* dx = dout;  // identity shortcut: the sum's gradient is the input's
  if (r.has_down) {
    conv_bn_backward(grads, dx_down, dout, a.down, w, r.down, x, workspace, B, /*relu=*/false);
    dx = dx_down;
  }
  cuda::conv2d_backward(dc1, grads + r.conv2.weight, nullptr, workspace, dc2, a.c1.out, P + r.conv2.weight, B,
                        r.conv2.Ci, r.conv2.H, r.conv2.W, r.conv2.Co, r.conv2.kernel, r.conv2.kernel,
                        r.conv2.stride_h, r.conv2.stride_w, r.conv2.pad, r.conv2.pad);
  conv_bn_backward(grads, dx_main, dc1, a.c1, w, r.conv1, x, workspace, B, /*relu=*/true);
  add_in_place(dx, dx_main, B * r.conv1.in_floats());
  return dx;
}

}  // namespace

int64_t cnn_conv_workspace(const Refs& refs, int64_t B) {
  int64_t largest = 0;
  net::for_each_conv(refs, [&](const ConvRef& c) {
    largest = std::max(largest, cuda::conv2d_workspace_floats(B, c.Ci, c.H, c.W, c.Co, c.kernel, c.kernel,
                                                             c.stride_h, c.stride_w, c.pad, c.pad));
  });
  return largest;
}

void cnn_forward_train(CnnTrainActs& a, const Weights& w, const Config& config, const Refs& refs,
                       const float* images, const float* grid_matrix, float* scratch, float* workspace,
                       int64_t B) {
  const float* P = w.params;
  net::LocActs& loc = a.loc;
  cuda::bilinear_resize_forward(loc.small, images, B, 3, config.in_h, config.in_w, config.loc_h, config.loc_w);
  const float* x = loc.small;
  for (int64_t i = 0; i < 6; ++i) {
    const ConvRef& r = refs.loc_convs[i];
    conv_bn_forward_train(loc.conv[i], w, r, x, workspace, B, /*relu=*/true);
    x = loc.conv[i].out;
    if (i < 5) {
      cuda::maxpool2x2_forward(loc.pooled[i], loc.argmax[i], x, B, r.Co, r.Ho, r.Wo);
      x = loc.pooled[i];
    }
  }
  const LinearRef& fc1 = refs.loc_fc1;
  const net::BatchNormRef& bn = refs.loc_fc1_bn;
  const int64_t F = config.loc_fc, K = config.fiducials;
  cuda::linear_forward(loc.fc1, x, P + fc1.weight, P + fc1.bias, B, fc1.in, F);
  cuda::batchnorm_forward_train(loc.fc1_out, loc.fc1_mean, loc.fc1_inv_std, w.buffers + bn.mean,
                                w.buffers + bn.var, loc.fc1, P + bn.gamma, P + bn.beta, B, F, 1, 1, kBatchNormEps,
                                kBatchNormMomentum);
  cuda::relu_forward(loc.fc1_out, loc.fc1_out, B * F);
  scale(loc.hidden, loc.fc1_out, kLocHiddenScale, B * F);
  cuda::linear_forward(loc.ctrl, loc.hidden, P + refs.loc_fc2.weight, P + refs.loc_fc2.bias, B, F, 2 * K);
  cuda::tps_grid_forward(loc.grid, loc.ctrl, grid_matrix, B, K, config.rect_h, config.rect_w);
  cuda::grid_sample_forward(loc.rect, images, loc.grid, B, 3, config.in_h, config.in_w, config.rect_h,
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
  const net::LocActs& loc = a.loc;
  float* d = g.pool[0];  // (B, C4, 1, S)
  transpose_last_two(d, dsequence, B, config.seq_len(), refs.blocks.back().conv2.Co);
  for (size_t k = refs.blocks.size(); k-- > 0;) {
    const float* x = k > 0 ? a.blocks[k - 1].c2.out : a.stem.out;
    d = block_backward(grads, a.blocks[k], refs.blocks[k], w, x, d, g.pool, workspace, B);
  }
  conv_bn_backward(grads, g.drect, d, a.stem, w, refs.stem, loc.rect, workspace, B, /*relu=*/true);
  cuda::grid_sample_backward(g.dgrid, nullptr, g.drect, images, loc.grid, B, 3, config.in_h, config.in_w,
                             config.rect_h, config.rect_w);
  const int64_t F = config.loc_fc, K = config.fiducials;
  cuda::tps_grid_backward(g.dctrl, g.dgrid, loc.ctrl, grid_matrix, B, K, config.rect_h, config.rect_w);

  const LinearRef& fc1 = refs.loc_fc1;
  const LinearRef& fc2 = refs.loc_fc2;
  const net::BatchNormRef& bn = refs.loc_fc1_bn;
  cuda::linear_backward(g.dhidden, grads + fc2.weight, grads + fc2.bias, g.dctrl, loc.hidden, P + fc2.weight, B,
                        F, 2 * K);
  scale(g.dhidden, g.dhidden, kLocHiddenScale, B * F);
  cuda::relu_backward(g.dhidden, g.dhidden, loc.fc1_out, B * F);
  cuda::batchnorm_backward(g.dhidden, grads + bn.gamma, grads + bn.beta, loc.fc1_mean, loc.fc1_inv_std, g.dhidden,
                           loc.fc1, P + bn.gamma, B, F, 1, 1);
  d = g.pool[0];  // the gradient of the last localisation conv's output
  cuda::linear_backward(d, grads + fc1.weight, grads + fc1.bias, g.dhidden, loc.conv[5].out, P + fc1.weight, B,
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
    cuda::maxpool2x2_backward(d, loc.argmax[i - 1], dpooled, B, prev.Co, prev.Ho, prev.Wo);
  }
}

// ---- inference -----------------------------------------------------------------------------------

void carve_cnn_infer(Carver& c, CnnInferBuffers& b, const Config& config, const Refs& refs, int64_t B) {
  const int64_t largest = B * net::cnn_max_activation(config, refs);
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
  b.workspace = c.floats(cuda_net::cnn_conv_workspace(refs, B));
}

void cnn_forward_infer(CnnInferBuffers& b, const Weights& w, const Config& config, const Refs& refs,
                       const float* images, const float* grid_matrix, int64_t B) {
  const float* Fw = w.folded;
  auto conv_folded = [&](float* out, const float* x, const ConvRef& r, bool relu) {
    conv_forward(out, b.workspace, x, Fw + r.folded_weight, Fw + r.folded_bias, r, B);
    if (relu) cuda::relu_forward(out, out, B * r.out_floats());
  };
  cuda::bilinear_resize_forward(b.small, images, B, 3, config.in_h, config.in_w, config.loc_h, config.loc_w);
  const float* x = b.small;
  for (int64_t i = 0; i < 6; ++i) {
    const ConvRef& r = refs.loc_convs[i];
    conv_folded(b.ping, x, r, /*relu=*/true);
    x = b.ping;
    if (i < 5) {
      cuda::maxpool2x2_forward(b.pong, b.argmax, b.ping, B, r.Co, r.Ho, r.Wo);
      x = b.pong;
    }
  }
  const int64_t F = config.loc_fc, K = config.fiducials;
  cuda::linear_forward(b.fc1, x, Fw + refs.loc_fc1_folded_weight, Fw + refs.loc_fc1_folded_bias, B,
                       refs.loc_fc1.in, F);
  cuda::relu_forward(b.fc1, b.fc1, B * F);
  scale(b.fc1, b.fc1, kLocHiddenScale, B * F);
  cuda::linear_forward(b.ctrl, b.fc1, w.params + refs.loc_fc2.weight, w.params + refs.loc_fc2.bias, B, F, 2 * K);
  cuda::tps_grid_forward(b.grid, b.ctrl, grid_matrix, B, K, config.rect_h, config.rect_w);
  cuda::grid_sample_forward(b.rect, images, b.grid, B, 3, config.in_h, config.in_w, config.rect_h, config.rect_w);

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

}  // namespace safl::model::cuda_net
