// The Transformer of the SAFL network on CUDA: post-LN encoder and decoder layers, forward and
// backward, composed from the safl::cuda ops. The computation, the buffers (carved by the CPU
// network's carve_* functions) and the dropout sites are native/model/network_transformer.cpp's,
// step for step; the dropout masks are the CPU's too, since both backends draw them from the same
// counter-based hash (ops/activation.h) with the same per-site seeds (Note [dropout seeds] there).
#include "cuda/network_cuda_internal.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/layernorm.h"
#include "ops/linear.h"

namespace safl::model::cuda_net {
namespace {

// Dropout sites of a layer, Note [dropout seeds] in native/model/network_transformer.cpp.
int64_t encoder_site(int64_t layer, int64_t k) { return 3 * layer + k; }
int64_t decoder_site(int64_t layer, int64_t k) { return 1000 + 4 * layer + k; }

// ---- forward pieces ----------------------------------------------------------------------------

void self_attention_forward(net::SelfAttentionActs& a, const float* P, const LinearRef& in_proj,
                            const LinearRef& out_proj, const float* x, const Dims& dims, int64_t B,
                            int64_t T, bool causal) {
  const int64_t d = dims.d, rows = B * T;
  cuda::linear_forward(a.qkv, x, P + in_proj.weight, P + in_proj.bias, rows, d, 3 * d);
  cuda::attention_forward(a.attn, a.lse, a.qkv, a.qkv + d, a.qkv + 2 * d, B, T, T, dims.heads,
                          dims.head_dim(), 3 * d, 3 * d, T, causal);
  cuda::linear_forward(a.proj, a.attn, P + out_proj.weight, P + out_proj.bias, rows, d, d);
}

// ---- backward pieces ---------------------------------------------------------------------------

// On entry dx is the gradient of a.out; on return that of the sum x + dropout(y), which is the
// gradient of the residual input x. Returns the gradient of y (before dropout): dx itself, or
// `scratch` holding it when there is dropout.
const float* add_norm_backward(float* grads, float* dx, float* scratch, const net::AddNormActs& a, const float* P,
                               const LayerNormRef& r, int64_t rows, int64_t d) {
  cuda::layernorm_backward(dx, grads + r.gamma, grads + r.beta, dx, a.sum, a.mean, a.rstd, P + r.gamma, rows, d);
  if (!a.mask) return dx;
  cuda::dropout_backward(scratch, a.mask, dx, rows * d);
  return scratch;
}

// g.dx += the gradient through the FFN of its output gradient dy; x is the FFN's input.
// Uses g.wide and g.t1 (dy may be g.t1: it is consumed before g.t1 is written).
void ffn_backward(float* grads, TransformerGrads& g, const net::FfnActs& a, const float* P, const LinearRef& fc1,
                  const LinearRef& fc2, const float* dy, const float* x, const Dims& dims, int64_t rows) {
  const int64_t n = rows * dims.ffn;
  cuda::linear_backward(g.wide, grads + fc2.weight, grads + fc2.bias, dy, a.dropped, P + fc2.weight, rows,
                        dims.ffn, dims.d);
  if (a.mask) cuda::dropout_backward(g.wide, a.mask, g.wide, n);
  cuda::relu_backward(g.wide, g.wide, a.hidden, n);
  cuda::linear_backward(g.t1, grads + fc1.weight, grads + fc1.bias, g.wide, x, P + fc1.weight, rows, dims.d,
                        dims.ffn);
  add_in_place(g.dx, g.t1, rows * dims.d);
}

// g.dx += the gradient through self-attention of its output gradient dy; x is its input.
void self_attention_backward(float* grads, TransformerGrads& g, const net::SelfAttentionActs& a, const float* P,
                             const LinearRef& in_proj, const LinearRef& out_proj, const float* dy,
                             const float* x, const Dims& dims, int64_t B, int64_t T, bool causal) {
  const int64_t d = dims.d, rows = B * T;
  cuda::linear_backward(g.t2, grads + out_proj.weight, grads + out_proj.bias, dy, a.attn, P + out_proj.weight,
                        rows, d, d);
  cuda::attention_backward(g.wide, g.wide + d, g.wide + 2 * d, a.attn, a.lse, g.t2, a.qkv, a.qkv + d,
                           a.qkv + 2 * d, B, T, T, dims.heads, dims.head_dim(), 3 * d, 3 * d, T, causal);
  cuda::linear_backward(g.t1, grads + in_proj.weight, grads + in_proj.bias, g.wide, x, P + in_proj.weight,
                        rows, d, 3 * d);
  add_in_place(g.dx, g.t1, rows * d);
}

}  // namespace

void add_norm_forward(net::AddNormActs& a, const float* P, const LayerNormRef& r, const float* x, float* y,
                      int64_t rows, int64_t d, const Dropout& dropout, int64_t site) {
  const int64_t n = rows * d;
  if (a.mask) cuda::dropout_forward(y, a.mask, y, n, dropout.p, dropout.site_seed(site));
  add(a.sum, x, y, n);
  cuda::layernorm_forward(a.out, a.mean, a.rstd, a.sum, P + r.gamma, P + r.beta, rows, d, net::kLayerNormEps);
}

void ffn_forward(net::FfnActs& a, const float* P, const LinearRef& fc1, const LinearRef& fc2, const float* x,
                 const Dims& dims, int64_t rows, const Dropout& dropout, int64_t site) {
  cuda::linear_forward(a.hidden, x, P + fc1.weight, P + fc1.bias, rows, dims.d, dims.ffn);
  cuda::relu_forward(a.hidden, a.hidden, rows * dims.ffn);
  if (a.mask)
    cuda::dropout_forward(a.dropped, a.mask, a.hidden, rows * dims.ffn, dropout.p, dropout.site_seed(site));
  cuda::linear_forward(a.out, a.dropped, P + fc2.weight, P + fc2.bias, rows, dims.ffn, dims.d);
}

void encoder_layer_forward(EncoderLayerActs& a, const float* P, const EncoderLayerRef& r, const float* x,
                           const Dims& dims, int64_t B, int64_t S, const Dropout& dropout, int64_t layer) {
  const int64_t rows = B * S;
  a.x = x;
  self_attention_forward(a.attn, P, r.in_proj, r.out_proj, x, dims, B, S, /*causal=*/false);
  cuda_net::add_norm_forward(a.norm1, P, r.norm1, x, a.attn.proj, rows, dims.d, dropout, encoder_site(layer, 0));
  cuda_net::ffn_forward(a.ffn, P, r.fc1, r.fc2, a.norm1.out, dims, rows, dropout, encoder_site(layer, 1));
  cuda_net::add_norm_forward(a.norm2, P, r.norm2, a.norm1.out, a.ffn.out, rows, dims.d, dropout,
                             encoder_site(layer, 2));
}

void decoder_layer_forward(DecoderLayerActs& a, const float* P, const DecoderLayerRef& r, const float* x,
                           const float* memory, const Dims& dims, int64_t B, int64_t T, int64_t S,
                           const Dropout& dropout, int64_t layer) {
  const int64_t d = dims.d, rows = B * T;
  a.x = x;
  self_attention_forward(a.self_attn, P, r.self_in_proj, r.self_out_proj, x, dims, B, T, /*causal=*/true);
  cuda_net::add_norm_forward(a.norm1, P, r.norm1, x, a.self_attn.proj, rows, d, dropout, decoder_site(layer, 0));

  net::CrossAttentionActs& c = a.cross;
  cuda::linear_forward(c.q, a.norm1.out, P + r.cross_q_proj.weight, P + r.cross_q_proj.bias, rows, d, d);
  cuda::linear_forward(c.kv, memory, P + r.cross_kv_proj.weight, P + r.cross_kv_proj.bias, B * S, d, 2 * d);
  cuda::attention_forward(c.attn, c.lse, c.q, c.kv, c.kv + d, B, T, S, dims.heads, dims.head_dim(), d, 2 * d, S,
                          /*causal=*/false);
  cuda::linear_forward(c.proj, c.attn, P + r.cross_out_proj.weight, P + r.cross_out_proj.bias, rows, d, d);
  cuda_net::add_norm_forward(a.norm2, P, r.norm2, a.norm1.out, c.proj, rows, d, dropout, decoder_site(layer, 1));

  cuda_net::ffn_forward(a.ffn, P, r.fc1, r.fc2, a.norm2.out, dims, rows, dropout, decoder_site(layer, 2));
  cuda_net::add_norm_forward(a.norm3, P, r.norm3, a.norm2.out, a.ffn.out, rows, d, dropout, decoder_site(layer, 3));
}

void norm_forward(NormActs& a, const float* P, const LayerNormRef& r, const float* x, int64_t rows, int64_t d) {
  cuda::layernorm_forward(a.out, a.mean, a.rstd, x, P + r.gamma, P + r.beta, rows, d, net::kLayerNormEps);
}

void encoder_layer_backward(float* grads, TransformerGrads& g, const EncoderLayerActs& a, const float* P,
                            const EncoderLayerRef& r, const Dims& dims, int64_t B, int64_t S) {
  const int64_t rows = B * S;
  const float* dy = add_norm_backward(grads, g.dx, g.t1, a.norm2, P, r.norm2, rows, dims.d);
  ffn_backward(grads, g, a.ffn, P, r.fc1, r.fc2, dy, a.norm1.out, dims, rows);
  dy = add_norm_backward(grads, g.dx, g.t1, a.norm1, P, r.norm1, rows, dims.d);
  self_attention_backward(grads, g, a.attn, P, r.in_proj, r.out_proj, dy, a.x, dims, B, S, /*causal=*/false);
}

void decoder_layer_backward(float* grads, TransformerGrads& g, const DecoderLayerActs& a, const float* P,
                            const DecoderLayerRef& r, const float* memory, const Dims& dims, int64_t B,
                            int64_t T, int64_t S) {
  const int64_t d = dims.d, rows = B * T;
  const float* dy = add_norm_backward(grads, g.dx, g.t1, a.norm3, P, r.norm3, rows, d);
  ffn_backward(grads, g, a.ffn, P, r.fc1, r.fc2, dy, a.norm2.out, dims, rows);

  dy = add_norm_backward(grads, g.dx, g.t1, a.norm2, P, r.norm2, rows, d);
  const net::CrossAttentionActs& c = a.cross;
  cuda::linear_backward(g.t2, grads + r.cross_out_proj.weight, grads + r.cross_out_proj.bias, dy, c.attn,
                        P + r.cross_out_proj.weight, rows, d, d);
  float* dq = g.wide;  // (B, T, d)
  cuda::attention_backward(dq, g.dkv, g.dkv + d, c.attn, c.lse, g.t2, c.q, c.kv, c.kv + d, B, T, S, dims.heads,
                           dims.head_dim(), d, 2 * d, S, /*causal=*/false);
  cuda::linear_backward(g.t1, grads + r.cross_q_proj.weight, grads + r.cross_q_proj.bias, dq, a.norm1.out,
                        P + r.cross_q_proj.weight, rows, d, d);
  add_in_place(g.dx, g.t1, rows * d);
  cuda::linear_backward(g.tmemory, grads + r.cross_kv_proj.weight, grads + r.cross_kv_proj.bias, g.dkv, memory,
                        P + r.cross_kv_proj.weight, B * S, d, 2 * d);
  add_in_place(g.dmemory, g.tmemory, B * S * d);

  dy = add_norm_backward(grads, g.dx, g.t1, a.norm1, P, r.norm1, rows, d);
  self_attention_backward(grads, g, a.self_attn, P, r.self_in_proj, r.self_out_proj, dy, a.x, dims, B, T,
                          /*causal=*/true);
}

void norm_backward(float* grads, float* dx, const NormActs& a, const float* P, const LayerNormRef& r,
                   const float* x, int64_t rows, int64_t d) {
  cuda::layernorm_backward(dx, grads + r.gamma, grads + r.beta, dx, x, a.mean, a.rstd, P + r.gamma, rows, d);
}

}  // namespace safl::model::cuda_net
