// The pieces of the SAFL network that its implementation files share (not a public header):
// where each layer's tensors sit in the parameter, buffer and folded-weight buffers; the
// activation arena and how buffers are carved from it; the per-layer activation records; and the
// forward/backward functions of the network's parts, one file each:
//   network.cpp              the public class: storage, initialisation, files, the folded copy
//   network_cnn.cpp          localisation network, TPS + sampler, ResNet-45 (training and inference)
//   network_transformer.cpp  encoder and decoder layers (forward, backward)
//   network_decode.cpp       greedy and beam-search decoding with key/value caches
//
// Tensors are addressed by offsets, not pointers: the same ConvRef finds a weight in params, its
// gradient in grads (same offset) and its folded copy in the folded buffer (folded_* offsets).
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/layout.h"
#include "model/network.h"
#include "ops/gemm.h"

namespace safl::model::net {

// ---- where the tensors are ---------------------------------------------------------------------

struct BatchNormRef {
  int64_t gamma = 0, beta = 0;  // parameter offsets
  int64_t mean = 0, var = 0;    // buffer offsets (running statistics)
  int64_t channels = 0;
};

// A convolution without bias followed by a batch norm; geometry fixed by the config.
struct ConvRef {
  int64_t weight = 0;
  int64_t Ci = 0, H = 0, W = 0;  // input (per image)
  int64_t Co = 0, Ho = 0, Wo = 0;  // output (per image)
  int64_t kernel = 1, stride_h = 1, stride_w = 1, pad = 0;
  BatchNormRef bn;
  int64_t folded_weight = 0, folded_bias = 0;  // offsets in the folded buffer
  int64_t in_floats() const { return Ci * H * W; }
  int64_t out_floats() const { return Co * Ho * Wo; }
  int64_t weights_per_channel() const { return Ci * kernel * kernel; }
};

struct LinearRef {
  int64_t weight = 0, bias = 0;  // parameter offsets
  int64_t out = 0, in = 0;
};

struct LayerNormRef {
  int64_t gamma = 0, beta = 0;
};

// A ResNet basic block: conv1 (1×1, the stride) → bn1 → ReLU → conv2 (3×3) → bn2, plus the
// shortcut (down: 1×1 conv with the stride + BN, in each stage's first block; identity otherwise).
struct BlockRef {
  ConvRef conv1, conv2;
  bool has_down = false;
  ConvRef down;
};

struct EncoderLayerRef {
  LinearRef in_proj, out_proj, fc1, fc2;
  LayerNormRef norm1, norm2;
};

struct DecoderLayerRef {
  LinearRef self_in_proj, self_out_proj, cross_q_proj, cross_kv_proj, cross_out_proj, fc1, fc2;
  LayerNormRef norm1, norm2, norm3;
};

struct Refs {
  std::vector<ConvRef> loc_convs;  // six; a 2×2 max-pool follows each of the first five
  LinearRef loc_fc1;
  BatchNormRef loc_fc1_bn;
  int64_t loc_fc1_folded_weight = 0, loc_fc1_folded_bias = 0;
  LinearRef loc_fc2;
  ConvRef stem;
  std::vector<BlockRef> blocks;  // every stage's blocks, in order
  bool has_proj = false;
  LinearRef proj;
  std::vector<EncoderLayerRef> encoder;
  LayerNormRef encoder_norm;
  int64_t embed = 0;
  std::vector<DecoderLayerRef> decoder;
  LayerNormRef decoder_norm;
  LinearRef classifier;
  int64_t folded_floats = 0;  // size of the folded buffer
};

// Resolves every tensor of the layout once (a missing name throws, so layout and network agree).
Refs resolve_refs(const Config& config, const Layout& layout);

// Calls fn(const ConvRef&) for every convolution: localisation, stem, then each block's conv1,
// conv2 and down.
template <class Fn>
void for_each_conv(const Refs& refs, Fn&& fn) {
  for (const ConvRef& c : refs.loc_convs) fn(c);
  fn(refs.stem);
  for (const BlockRef& b : refs.blocks) {
    fn(b.conv1);
    fn(b.conv2);
    if (b.has_down) fn(b.down);
  }
}

// The tensors a computation reads: parameters, batch-norm buffers and the folded copy.
struct Weights {
  const float* params = nullptr;
  float* buffers = nullptr;  // running statistics (updated by training forwards)
  const float* folded = nullptr;
};

// ---- the activation arena ----------------------------------------------------------------------

// Hands out consecutive pieces of the arena, 64-byte aligned. Run once without storage to count
// (every pointer nullptr), then again over an arena at least that large.
class Carver {
 public:
  Carver(float* floats, int32_t* ints) : floats_(floats), ints_(ints) {}
  float* floats(int64_t n) {
    float* p = floats_ ? floats_ + float_count_ : nullptr;
    float_count_ += round_up(n);
    return p;
  }
  int32_t* ints(int64_t n) {
    int32_t* p = ints_ ? ints_ + int_count_ : nullptr;
    int_count_ += round_up(n);
    return p;
  }
  int64_t float_count() const { return float_count_; }
  int64_t int_count() const { return int_count_; }

 private:
  static int64_t round_up(int64_t n) { return (n + 15) / 16 * 16; }
  float* floats_;
  int32_t* ints_;
  int64_t float_count_ = 0, int_count_ = 0;
};

// One activation arena per network, grown to the largest request seen, never shrunk.
class Arena {
 public:
  // Carves with fn(Carver&) twice: to count, then over storage that is large enough.
  template <class Fn>
  void carve(Fn&& fn) {
    Carver count(nullptr, nullptr);
    fn(count);
    if (count.float_count() > int64_t(floats_.size())) floats_.assign(count.float_count(), 0.0f);
    if (count.int_count() > int64_t(ints_.size())) ints_.assign(count.int_count(), 0);
    Carver real(floats_.data(), ints_.data());
    fn(real);
  }

 private:
  std::vector<float> floats_;
  std::vector<int32_t> ints_;  // max-pool indices and token ids
};

// ---- dropout ------------------------------------------------------------------------------------

// Dropout of the Transformer in training: rate p with one seed per site, derived from the call's
// seed (Note [dropout seeds] in network_transformer.cpp). Whether a site drops out at all is
// decided when its buffers are carved: a mask buffer exists only in training with p > 0.
struct Dropout {
  float p = 0.0f;
  uint64_t seed = 0;
  uint64_t site_seed(int64_t site) const;
};

// ---- the CNN part: localisation, rectification, backbone ----------------------------------------

struct ConvBnActs {
  float* conv = nullptr;     // (B, Co, Ho, Wo) the convolution's output, the batch norm's input
  float* out = nullptr;      // (B, Co, Ho, Wo) batch norm output (ReLU applied in place if any)
  float* mean = nullptr;     // (Co) saved batch mean
  float* inv_std = nullptr;  // (Co) saved 1/sqrt(var + eps)
};

struct LocActs {
  float* small = nullptr;               // (B, 3, loc_h, loc_w) resized input
  ConvBnActs conv[6];                   // out = ReLU(BN(conv))
  float* pooled[5] = {};                // (B, c_i, h_i/2, w_i/2)
  int32_t* argmax[5] = {};              // (B, c_i, h_i/2, w_i/2)
  float* fc1 = nullptr;                 // (B, loc_fc) before its batch norm
  float* fc1_out = nullptr;             // (B, loc_fc) ReLU(BN(fc1))
  float* fc1_mean = nullptr, *fc1_inv_std = nullptr;  // (loc_fc)
  float* hidden = nullptr;              // (B, loc_fc) 0.1 · fc1_out, the input of fc2
  float* ctrl = nullptr;                // (B, K, 2) control points
  float* grid = nullptr;                // (B, rect_h, rect_w, 2)
  float* rect = nullptr;                // (B, 3, rect_h, rect_w) rectified image
};

struct BlockActs {
  ConvBnActs c1;    // out = ReLU(BN1(conv1(x)))
  ConvBnActs c2;    // out = the block's output: ReLU(BN2(conv2) + shortcut), built in place
  ConvBnActs down;  // down.out is scratch shared by all blocks (only the conv is saved)
};

struct CnnTrainActs {
  LocActs loc;
  ConvBnActs stem;
  std::vector<BlockActs> blocks;
  float* sequence = nullptr;  // (B, S, C4) the backbone's output as a sequence
};

// Scratch of the CNN backward: five buffers of the largest activation (rotated), the gradients
// of the rectified image, grid and control points, and the localisation head's.
struct CnnGrads {
  float* pool[5] = {};        // (B, max activation)
  float* drect = nullptr;     // (B, 3, rect_h, rect_w)
  float* dgrid = nullptr;     // (B, rect_h, rect_w, 2)
  float* dctrl = nullptr;     // (B, K, 2)
  float* dhidden = nullptr;   // (B, loc_fc)
};

// Largest per-image activation of the localisation network and backbone (floats).
int64_t cnn_max_activation(const Config& config, const Refs& refs);
// Floats of conv workspace for the largest convolution at batch B.
int64_t cnn_conv_workspace(const Refs& refs, int64_t B);

void carve_cnn_train(Carver& c, CnnTrainActs& a, const Config& config, const Refs& refs, int64_t B);
void carve_cnn_grads(Carver& c, CnnGrads& g, const Config& config, const Refs& refs, int64_t B);

// Training forward (batch statistics, running statistics updated) from images (B, 3, in_h, in_w)
// to a.sequence (B, S, C4). `scratch` holds the largest activation; `workspace` the convs'.
void cnn_forward_train(CnnTrainActs& a, const Weights& w, const Config& config, const Refs& refs,
                       const float* images /* (B, 3, in_h, in_w) */,
                       const float* grid_matrix /* (rect_h·rect_w, K) */,
                       float* scratch /* (B, max activation) */,
                       float* workspace /* (cnn_conv_workspace(B)) */, int64_t B);
// Backward from dsequence (B, S, C4) to every CNN parameter gradient (accumulated into grads).
void cnn_backward(float* grads /* (param_floats) */, const CnnTrainActs& a, CnnGrads& g,
                  const Weights& w, const Config& config, const Refs& refs,
                  const float* images /* (B, 3, in_h, in_w) */,
                  const float* grid_matrix /* (rect_h·rect_w, K) */,
                  const float* dsequence /* (B, S, C4) */,
                  float* workspace /* (cnn_conv_workspace(B)) */, int64_t B);

struct CnnInferBuffers {
  float* small = nullptr;    // (B, 3, loc_h, loc_w)
  float* ping = nullptr;      // (B, max activation): the current activation and the next,
  float* pong = nullptr;      //   swapped after each block
  float* temp1 = nullptr;     // (B, max activation) a block's conv1 output
  float* temp2 = nullptr;     // (B, max activation) a block's shortcut (down) output
  int32_t* argmax = nullptr;  // (B, max activation) the pools' indices, not needed in inference
  float* fc1 = nullptr;       // (B, loc_fc)
  float* ctrl = nullptr;      // (B, K, 2)
  float* grid = nullptr;      // (B, rect_h, rect_w, 2)
  float* rect = nullptr;      // (B, 3, rect_h, rect_w)
  float* sequence = nullptr;  // (B, S, C4)
  float* workspace = nullptr;  // (cnn_conv_workspace(B))
};
void carve_cnn_infer(Carver& c, CnnInferBuffers& b, const Config& config, const Refs& refs, int64_t B);
// Inference forward with the folded weights (batch norm merged into the convolutions).
void cnn_forward_infer(CnnInferBuffers& b, const Weights& w, const Config& config, const Refs& refs,
                       const float* images /* (B, 3, in_h, in_w) */,
                       const float* grid_matrix /* (rect_h·rect_w, K) */, int64_t B);

// ---- the Transformer ----------------------------------------------------------------------------

constexpr float kLayerNormEps = 1e-5f;

struct Dims {
  int64_t d = 0, heads = 0, ffn = 0;
  int64_t head_dim() const { return d / heads; }
};

// out = LayerNorm(x + dropout(y)); y is dropped out in place.
struct AddNormActs {
  float* mask = nullptr;  // (rows, d) dropout mask, or nullptr without dropout
  float* sum = nullptr;   // (rows, d) x + dropout(y), the layer norm's input
  float* mean = nullptr;  // (rows)
  float* rstd = nullptr;  // (rows)
  float* out = nullptr;   // (rows, d)
};

struct SelfAttentionActs {
  float* qkv = nullptr;   // (B, T, 3d) packed q, k, v
  float* attn = nullptr;  // (B, T, d) attention output
  float* lse = nullptr;   // (B, heads, T)
  float* proj = nullptr;  // (B, T, d) out_proj output
};

struct CrossAttentionActs {
  float* q = nullptr;     // (B, T, d)
  float* kv = nullptr;    // (B, S, 2d) packed k, v of the memory
  float* attn = nullptr;  // (B, T, d)
  float* lse = nullptr;   // (B, heads, T)
  float* proj = nullptr;  // (B, T, d)
};

struct FfnActs {
  float* hidden = nullptr;   // (B, T, ffn) ReLU(fc1(x))
  float* mask = nullptr;     // (B, T, ffn) dropout mask, or nullptr
  float* dropped = nullptr;  // (B, T, ffn) dropout(hidden), or == hidden without dropout
  float* out = nullptr;      // (B, T, d) fc2 output
};

struct EncoderLayerActs {
  const float* x = nullptr;  // (B, S, d) the layer's input
  SelfAttentionActs attn;
  AddNormActs norm1;
  FfnActs ffn;
  AddNormActs norm2;  // norm2.out is the layer's output
};

struct DecoderLayerActs {
  const float* x = nullptr;  // (B, T, d) the layer's input
  SelfAttentionActs self_attn;
  AddNormActs norm1;
  CrossAttentionActs cross;
  AddNormActs norm2;
  FfnActs ffn;
  AddNormActs norm3;  // norm3.out is the layer's output
};

struct NormActs {
  float* mean = nullptr;  // (rows)
  float* rstd = nullptr;  // (rows)
  float* out = nullptr;   // (rows, d)
};

void carve_encoder_layer(Carver& c, EncoderLayerActs& a, const Dims& dims, int64_t B, int64_t S, bool dropout);
void carve_decoder_layer(Carver& c, DecoderLayerActs& a, const Dims& dims, int64_t B, int64_t T, int64_t S,
                         bool dropout);
void carve_norm(Carver& c, NormActs& a, int64_t rows, int64_t d);

// Dropout sites: encoder layer l uses sites 3l..3l+2, decoder layer l uses 1000 + 4l..4l+3.
void encoder_layer_forward(EncoderLayerActs& a, const float* params, const EncoderLayerRef& r,
                           const float* x /* (B, S, d) */, const Dims& dims, int64_t B, int64_t S,
                           const Dropout& dropout, int64_t layer);
void decoder_layer_forward(DecoderLayerActs& a, const float* params, const DecoderLayerRef& r,
                           const float* x /* (B, T, d) */, const float* memory /* (B, S, d) */,
                           const Dims& dims, int64_t B, int64_t T, int64_t S, const Dropout& dropout,
                           int64_t layer);
void norm_forward(NormActs& a, const float* params, const LayerNormRef& r, const float* x /* (rows, d) */,
                  int64_t rows, int64_t d);
// The sublayers, also used one token at a time by decoding. a.out = LN(x + dropout(y)), y dropped
// out in place when a.mask is set; a.out may be x (x is read before a.out is written).
void add_norm_forward(AddNormActs& a, const float* params, const LayerNormRef& r, const float* x /* (rows, d) */,
                      float* y /* (rows, d) */, int64_t rows, int64_t d, const Dropout& dropout, int64_t site);
// a.out = fc2(dropout(ReLU(fc1(x)))), dropout when a.mask is set; fc1_packed and fc2_packed, when
// given, are those weights packed for this call (Note [packed decoder weights] in network.cpp).
void ffn_forward(FfnActs& a, const float* params, const LinearRef& fc1, const LinearRef& fc2,
                 const float* x /* (rows, d) */, const Dims& dims, int64_t rows, const Dropout& dropout, int64_t site,
                 const cpu::PackedB* fc1_packed = nullptr, const cpu::PackedB* fc2_packed = nullptr);

// Scratch of the Transformer backward.
struct TransformerGrads {
  float* dx = nullptr;        // (B, max(S, T), d) the running gradient
  float* t1 = nullptr;        // (B, max(S, T), d)
  float* t2 = nullptr;        // (B, max(S, T), d)
  float* wide = nullptr;      // (B, max(S, T), max(ffn, 3d))
  float* dkv = nullptr;       // (B, S, 2d)
  float* dmemory = nullptr;   // (B, S, d) accumulated over the decoder layers
  float* tmemory = nullptr;   // (B, S, d)
};
void carve_transformer_grads(Carver& c, TransformerGrads& g, const Dims& dims, int64_t B, int64_t S,
                             int64_t T);

// Backward of one layer: on entry dx holds the gradient of the layer's output, on return that of
// its input. Parameter gradients accumulate into grads; the decoder adds its memory gradient to
// g.dmemory.
void encoder_layer_backward(float* grads, TransformerGrads& g, const EncoderLayerActs& a, const float* params,
                            const EncoderLayerRef& r, const Dims& dims, int64_t B, int64_t S);
void decoder_layer_backward(float* grads, TransformerGrads& g, const DecoderLayerActs& a, const float* params,
                            const DecoderLayerRef& r, const float* memory /* (B, S, d) */, const Dims& dims,
                            int64_t B, int64_t T, int64_t S);
// dx holds the gradient of the norm's output on entry, of its input x on return.
void norm_backward(float* grads, float* dx /* (rows, d) */, const NormActs& a, const float* params,
                   const LayerNormRef& r, const float* x /* (rows, d) */, int64_t rows, int64_t d);

// ---- decoding ------------------------------------------------------------------------------------

// Buffers of cached decoding for up to B images × beam_width hypotheses (rows n = B·beam_width).
struct DecodeBuffers {
  std::vector<float*> cross_kv;    // per layer (B, S, 2d): k and v of the memory
  std::vector<float*> cache;       // per layer (n, tgt_len, 2d): k and v of the tokens so far
  std::vector<float*> cache_next;  // per layer, the gather target of beam search (beam_width > 1)
  float* x = nullptr;       // (n, d)
  float* qkv = nullptr;     // (n, 3d)
  float* attn = nullptr;    // (n, d)
  float* proj = nullptr;    // (n, d)
  float* sum = nullptr;     // (n, d)
  float* hidden = nullptr;  // (n, ffn)
  float* logits = nullptr;    // (n, num_classes)
  float* logprobs = nullptr;  // (n, num_classes) their log-softmax
  float* lse = nullptr;     // (n, heads)
  float* mean = nullptr;    // (n)
  float* rstd = nullptr;    // (n)
  int32_t* ids = nullptr;   // (n)
};
void carve_decode(Carver& c, DecodeBuffers& b, const Config& config, int64_t B, int64_t beam_width);

// The decoder's weights packed for sgemm (Note [packed decoder weights] in network.cpp), each as
// pack_linear_weight packs the LinearRef of the same name.
struct PackedDecoderLayer {
  cpu::PackedB self_in_proj, self_out_proj, cross_q_proj, cross_out_proj, fc1, fc2;
};
struct PackedDecoder {
  std::vector<PackedDecoderLayer> layers;  // one per decoder layer
  cpu::PackedB classifier;
};

// Greedy (beam_width 1) or beam-search decoding of B images from their encoder output
// memory (B, S, d), in inference mode. positions: the sinusoid table, at least tgt_len rows;
// packed: the decoder's weights of params packed for the kernels of this call, or nullptr.
std::vector<Decoded> decode(DecodeBuffers& b, const float* params, const PackedDecoder* packed, const Config& config,
                            const Refs& refs, const float* memory /* (B, S, d) */,
                            const float* positions /* (>= tgt_len, d) */, int64_t B, int64_t beam_width);

// ---- small helpers --------------------------------------------------------------------------------

// y += x over n floats.
void add_in_place(float* y /* (n) */, const float* x /* (n) */, int64_t n);
// (B, C, S) ↔ (B, S, C).
void transpose_last_two(float* out /* (B, cols, rows) */, const float* x /* (B, rows, cols) */, int64_t B,
                        int64_t rows, int64_t cols);

}  // namespace safl::model::net
