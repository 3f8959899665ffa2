// The Transformer of the SAFL network (DESIGN.md §1 items 6–7): post-LN encoder and decoder
// layers, forward and backward, composed from the CPU ops. Sequences are (B, T, d) row-major, so
// every projection is one linear op over B·T rows.
//
// Encoder layer:  x1 = LN1(x + drop(out_proj(attn(in_proj(x)))))          full attention
//                 y  = LN2(x1 + drop(fc2(drop(ReLU(fc1(x1))))))
// Decoder layer:  y1 = LN1(x + drop(self_out(attn(self_in(x)))))           causal
//                 y2 = LN2(y1 + drop(cross_out(attn(q_proj(y1), kv_proj(memory)))))
//                 y  = LN3(y2 + drop(FFN(y2)))
// Attention probabilities are not dropped out (the attention op has no dropout); dropout acts on
// each sublayer's output and on the FFN's hidden layer, as in PyTorch's nn.Transformer apart from
// its attention-probability dropout.
//
// Note [dropout seeds]: every dropout site (layer, sublayer) draws its mask from its own seed,
// derived from the call's seed by the splitmix64 mix, so masks differ between sites and steps and
// do not depend on the order of the calls or the thread count.
#include <algorithm>

#include "common/threadpool.h"
#include "model/network_internal.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/layernorm.h"
#include "ops/linear.h"

namespace safl::model::net {
namespace {

// Dropout sites of a layer, Note [dropout seeds].
int64_t encoder_site(int64_t layer, int64_t k) { return 3 * layer + k; }
int64_t decoder_site(int64_t layer, int64_t k) { return 1000 + 4 * layer + k; }

void carve_add_norm(Carver& c, AddNormActs& a, int64_t rows, int64_t d, bool dropout) {
  a.mask = dropout ? c.floats(rows * d) : nullptr;
  a.sum = c.floats(rows * d);
  a.mean = c.floats(rows);
  a.rstd = c.floats(rows);
  a.out = c.floats(rows * d);
}

void carve_self_attention(Carver& c, SelfAttentionActs& a, const Dims& dims, int64_t B, int64_t T) {
  a.qkv = c.floats(B * T * 3 * dims.d);
  a.attn = c.floats(B * T * dims.d);
  a.lse = c.floats(B * dims.heads * T);
  a.proj = c.floats(B * T * dims.d);
}

void carve_ffn(Carver& c, FfnActs& a, const Dims& dims, int64_t rows, bool dropout) {
  a.hidden = c.floats(rows * dims.ffn);
  a.mask = dropout ? c.floats(rows * dims.ffn) : nullptr;
  a.dropped = dropout ? c.floats(rows * dims.ffn) : a.hidden;
  a.out = c.floats(rows * dims.d);
}

// ---- forward pieces ----------------------------------------------------------------------------

void self_attention_forward(SelfAttentionActs& a, const float* P, const LinearRef& in_proj,
                            const LinearRef& out_proj, const float* x, const Dims& dims, int64_t B,
                            int64_t T, bool causal) {
  const int64_t d = dims.d, rows = B * T;
  cpu::linear_forward(a.qkv, x, P + in_proj.weight, P + in_proj.bias, rows, d, 3 * d);
  cpu::attention_forward(a.attn, a.lse, a.qkv, a.qkv + d, a.qkv + 2 * d, B, T, T, dims.heads,
                         dims.head_dim(), 3 * d, 3 * d, T, causal);
  cpu::linear_forward(a.proj, a.attn, P + out_proj.weight, P + out_proj.bias, rows, d, d);
}

// ---- backward pieces ---------------------------------------------------------------------------

// On entry dx is the gradient of a.out; on return that of the sum x + dropout(y), which is the
// gradient of the residual input x. Returns the gradient of y (before dropout): dx itself, or
// `scratch` holding it when there is dropout.
const float* add_norm_backward(float* grads, float* dx, float* scratch, const AddNormActs& a, const float* P,
                               const LayerNormRef& r, int64_t rows, int64_t d) {
  cpu::layernorm_backward(dx, grads + r.gamma, grads + r.beta, dx, a.sum, a.mean, a.rstd, P + r.gamma, rows, d);
  if (!a.mask) return dx;
  cpu::dropout_backward(scratch, a.mask, dx, rows * d);
  return scratch;
}

// dx += the gradient through the FFN of its output gradient dy; x is the FFN's input.
// Uses g.wide and g.t1 (dy may be g.t1: it is consumed before g.t1 is written).
void ffn_backward(float* grads, TransformerGrads& g, const FfnActs& a, const float* P, const LinearRef& fc1,
                  const LinearRef& fc2, const float* dy, const float* x, const Dims& dims, int64_t rows) {
  const int64_t n = rows * dims.ffn;
  cpu::linear_backward(g.wide, grads + fc2.weight, grads + fc2.bias, dy, a.dropped, P + fc2.weight, rows,
                       dims.ffn, dims.d);
  if (a.mask) cpu::dropout_backward(g.wide, a.mask, g.wide, n);
  cpu::relu_backward(g.wide, g.wide, a.hidden, n);
  cpu::linear_backward(g.t1, grads + fc1.weight, grads + fc1.bias, g.wide, x, P + fc1.weight, rows, dims.d,
                       dims.ffn);
  add_in_place(g.dx, g.t1, rows * dims.d);
}

// g.dx += the gradient through self-attention of its output gradient dy; x is its input.
void self_attention_backward(float* grads, TransformerGrads& g, const SelfAttentionActs& a, const float* P,
                             const LinearRef& in_proj, const LinearRef& out_proj, const float* dy,
                             const float* x, const Dims& dims, int64_t B, int64_t T, bool causal) {
  const int64_t d = dims.d, rows = B * T;
  cpu::linear_backward(g.t2, grads + out_proj.weight, grads + out_proj.bias, dy, a.attn, P + out_proj.weight,
                       rows, d, d);
  cpu::attention_backward(g.wide, g.wide + d, g.wide + 2 * d, a.attn, a.lse, g.t2, a.qkv, a.qkv + d,
                          a.qkv + 2 * d, B, T, T, dims.heads, dims.head_dim(), 3 * d, 3 * d, T, causal);
  cpu::linear_backward(g.t1, grads + in_proj.weight, grads + in_proj.bias, g.wide, x, P + in_proj.weight,
                       rows, d, 3 * d);
  add_in_place(g.dx, g.t1, rows * d);
}

}  // namespace

void add_norm_forward(AddNormActs& a, const float* P, const LayerNormRef& r, const float* x, float* y,
                      int64_t rows, int64_t d, const Dropout& dropout, int64_t site) {
  const int64_t n = rows * d;
  if (a.mask) cpu::dropout_forward(y, a.mask, y, n, dropout.p, dropout.site_seed(site));
  float* sum = a.sum;
  parallel_for(0, n, 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) sum[i] = x[i] + y[i];
  });
  cpu::layernorm_forward(a.out, a.mean, a.rstd, a.sum, P + r.gamma, P + r.beta, rows, d, kLayerNormEps);
}

void ffn_forward(FfnActs& a, const float* P, const LinearRef& fc1, const LinearRef& fc2, const float* x,
                 const Dims& dims, int64_t rows, const Dropout& dropout, int64_t site, const cpu::PackedB* fc1_packed,
                 const cpu::PackedB* fc2_packed) {
  cpu::linear_forward_packed(a.hidden, x, P + fc1.weight, fc1_packed, P + fc1.bias, rows, dims.d, dims.ffn);
  cpu::relu_forward(a.hidden, a.hidden, rows * dims.ffn);
  if (a.mask) cpu::dropout_forward(a.dropped, a.mask, a.hidden, rows * dims.ffn, dropout.p, dropout.site_seed(site));
  cpu::linear_forward_packed(a.out, a.dropped, P + fc2.weight, fc2_packed, P + fc2.bias, rows, dims.ffn, dims.d);
}

uint64_t Dropout::site_seed(int64_t site) const {
  return splitmix64_mix(seed + 0x9E3779B97F4A7C15ull * uint64_t(site + 1));
}

void carve_encoder_layer(Carver& c, EncoderLayerActs& a, const Dims& dims, int64_t B, int64_t S, bool dropout) {
  carve_self_attention(c, a.attn, dims, B, S);
  carve_add_norm(c, a.norm1, B * S, dims.d, dropout);
  carve_ffn(c, a.ffn, dims, B * S, dropout);
  carve_add_norm(c, a.norm2, B * S, dims.d, dropout);
}

void carve_decoder_layer(Carver& c, DecoderLayerActs& a, const Dims& dims, int64_t B, int64_t T, int64_t S,
                         bool dropout) {
  carve_self_attention(c, a.self_attn, dims, B, T);
  carve_add_norm(c, a.norm1, B * T, dims.d, dropout);
  a.cross.q = c.floats(B * T * dims.d);
  a.cross.kv = c.floats(B * S * 2 * dims.d);
  a.cross.attn = c.floats(B * T * dims.d);
  a.cross.lse = c.floats(B * dims.heads * T);
  a.cross.proj = c.floats(B * T * dims.d);
  carve_add_norm(c, a.norm2, B * T, dims.d, dropout);
  carve_ffn(c, a.ffn, dims, B * T, dropout);
  carve_add_norm(c, a.norm3, B * T, dims.d, dropout);
}

void carve_norm(Carver& c, NormActs& a, int64_t rows, int64_t d) {
  a.mean = c.floats(rows);
  a.rstd = c.floats(rows);
  a.out = c.floats(rows * d);
}

void carve_transformer_grads(Carver& c, TransformerGrads& g, const Dims& dims, int64_t B, int64_t S, int64_t T) {
  const int64_t rows = B * std::max(S, T);
  g.dx = c.floats(rows * dims.d);
  g.t1 = c.floats(rows * dims.d);
  g.t2 = c.floats(rows * dims.d);
  g.wide = c.floats(rows * std::max(dims.ffn, 3 * dims.d));
  g.dkv = c.floats(B * S * 2 * dims.d);
  g.dmemory = c.floats(B * S * dims.d);
  g.tmemory = c.floats(B * S * dims.d);
}

void encoder_layer_forward(EncoderLayerActs& a, const float* P, const EncoderLayerRef& r, const float* x,
                           const Dims& dims, int64_t B, int64_t S, const Dropout& dropout, int64_t layer) {
  const int64_t rows = B * S;
  a.x = x;
  self_attention_forward(a.attn, P, r.in_proj, r.out_proj, x, dims, B, S, /*causal=*/false);
  add_norm_forward(a.norm1, P, r.norm1, x, a.attn.proj, rows, dims.d, dropout, encoder_site(layer, 0));
  ffn_forward(a.ffn, P, r.fc1, r.fc2, a.norm1.out, dims, rows, dropout, encoder_site(layer, 1));
  add_norm_forward(a.norm2, P, r.norm2, a.norm1.out, a.ffn.out, rows, dims.d, dropout, encoder_site(layer, 2));
}

void decoder_layer_forward(DecoderLayerActs& a, const float* P, const DecoderLayerRef& r, const float* x,
                           const float* memory, const Dims& dims, int64_t B, int64_t T, int64_t S,
                           const Dropout& dropout, int64_t layer) {
  const int64_t d = dims.d, rows = B * T;
  a.x = x;
  self_attention_forward(a.self_attn, P, r.self_in_proj, r.self_out_proj, x, dims, B, T, /*causal=*/true);
  add_norm_forward(a.norm1, P, r.norm1, x, a.self_attn.proj, rows, d, dropout, decoder_site(layer, 0));

  CrossAttentionActs& c = a.cross;
  cpu::linear_forward(c.q, a.norm1.out, P + r.cross_q_proj.weight, P + r.cross_q_proj.bias, rows, d, d);
  cpu::linear_forward(c.kv, memory, P + r.cross_kv_proj.weight, P + r.cross_kv_proj.bias, B * S, d, 2 * d);
  cpu::attention_forward(c.attn, c.lse, c.q, c.kv, c.kv + d, B, T, S, dims.heads, dims.head_dim(), d, 2 * d, S,
                         /*causal=*/false);
  cpu::linear_forward(c.proj, c.attn, P + r.cross_out_proj.weight, P + r.cross_out_proj.bias, rows, d, d);
  add_norm_forward(a.norm2, P, r.norm2, a.norm1.out, c.proj, rows, d, dropout, decoder_site(layer, 1));

  ffn_forward(a.ffn, P, r.fc1, r.fc2, a.norm2.out, dims, rows, dropout, decoder_site(layer, 2));
  add_norm_forward(a.norm3, P, r.norm3, a.norm2.out, a.ffn.out, rows, d, dropout, decoder_site(layer, 3));
}

void norm_forward(NormActs& a, const float* P, const LayerNormRef& r, const float* x, int64_t rows, int64_t d) {
  cpu::layernorm_forward(a.out, a.mean, a.rstd, x, P + r.gamma, P + r.beta, rows, d, kLayerNormEps);
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
  const CrossAttentionActs& c = a.cross;
  cpu::linear_backward(g.t2, grads + r.cross_out_proj.weight, grads + r.cross_out_proj.bias, dy, c.attn,
                       P + r.cross_out_proj.weight, rows, d, d);
  float* dq = g.wide;  // (B, T, d)
  cpu::attention_backward(dq, g.dkv, g.dkv + d, c.attn, c.lse, g.t2, c.q, c.kv, c.kv + d, B, T, S, dims.heads,
                          dims.head_dim(), d, 2 * d, S, /*causal=*/false);
  cpu::linear_backward(g.t1, grads + r.cross_q_proj.weight, grads + r.cross_q_proj.bias, dq, a.norm1.out,
                       P + r.cross_q_proj.weight, rows, d, d);
  add_in_place(g.dx, g.t1, rows * d);
  cpu::linear_backward(g.tmemory, grads + r.cross_kv_proj.weight, grads + r.cross_kv_proj.bias, g.dkv, memory,
                       P + r.cross_kv_proj.weight, B * S, d, 2 * d);
  add_in_place(g.dmemory, g.tmemory, B * S * d);

  dy = add_norm_backward(grads, g.dx, g.t1, a.norm1, P, r.norm1, rows, d);
  self_attention_backward(grads, g, a.self_attn, P, r.self_in_proj, r.self_out_proj, dy, a.x, dims, B, T,
                          /*causal=*/true);
}

void norm_backward(float* grads, float* dx, const NormActs& a, const float* P, const LayerNormRef& r,
                   const float* x, int64_t rows, int64_t d) {
  cpu::layernorm_backward(dx, grads + r.gamma, grads + r.beta, dx, x, a.mean, a.rstd, P + r.gamma, rows, d);
}

void add_in_place(float* y, const float* x, int64_t n) {
  parallel_for(0, n, 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) y[i] += x[i];
  });
}

void transpose_last_two(float* out, const float* x, int64_t B, int64_t rows, int64_t cols) {
  parallel_for(0, B * rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols)), [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / rows, r = task % rows;
      const float* src = x + task * cols;
      float* dst = out + b * rows * cols + r;
      for (int64_t c = 0; c < cols; ++c) dst[c * rows] = src[c];
    }
  });
}

}  // namespace safl::model::net
