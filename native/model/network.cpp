// The SAFL network (see network.h): storage of parameters, gradients and batch-norm buffers laid
// out by model/layout.h; initialisation; model files; the folded inference copy; and the top level
// of the training forward/backward, the teacher-forced forward and recognition. The parts are in
// network_cnn.cpp, network_transformer.cpp and network_decode.cpp (see network_internal.h).
//
// Memory: one activation arena per network (network_internal.h, Arena), grown to the largest
// batch seen, and one per part of Note [images in parts]. Each call lays out the buffers it needs
// (a Carver pass that counts, then one that hands out pieces), so nothing is allocated inside the
// computation apart from the arenas' growth.
//
// Note [images in parts]: inference (recognition, and the teacher-forced inference forward, so that
// the two agree) of a batch with enough images for several pool threads cuts it into one part of
// consecutive images per thread and runs each part's whole network on its thread (parallel_run;
// the ops inside a pool task run serially), each part in its own arena; the results are put back
// in order. One batch over all threads makes every op a parallel region whose
// threads wait for each other at its end, some 40 times per decoding step, and a decoding step's
// attention, bound by memory, leaves both threads' FMA units idle at once; parts meet only at the
// end, and one thread's attention overlaps the other's products. But each part reads the decoder's
// weights at every step, so a part needs enough images to make that read worth it: at least 8,
// and one per 2^19 floats of those weights (tiny 8, base 28). Each image's result is what
// recognising its part alone gives. Measured here (build/safl_bench_model --mode greedy, 2
// threads, runs alternating without parts and with; img/s): base batch 64, 8 runs, median 71.8
// both, but 61–74 without and 70–74 with (the single batch loses a sixth whenever the other
// process on the machine is busy); tiny batch 64, 4 runs, 360–497 → 481–533; tiny batch 16 (parts
// of 8) 305–309 → 424–432. With parts of 8, base batch 16 ran 61–62 → 46–47, and with parts of 16
// base batch 32 the same (67–69): hence the bound by the weights.
//
// Note [folded inference copy]: inference runs the convolutions (and the localisation fc1) with
// batch norm folded into their weights and biases (batchnorm_fold), kept in a separate buffer.
// It is rebuilt lazily, at the next inference call, after anything that may have changed the
// parameters or running statistics: a non-const accessor of parameters or buffers (params(),
// param(), buffers(), buffer()), init_random, load, and any training forward. A caller that keeps
// the params() pointer and writes through it later (an optimizer step) is covered when a
// forward_backward came after the last inference call, which a training loop always does; writing
// parameters between two inference calls without touching an accessor or training is not seen.
//
// Note [packed decoder weights]: decoding multiplies the decoder's weights at every step, and
// sgemm would pack each of them again each time (with bfloat16 products also converting them to
// bfloat16, the largest cost of a step at batch 64). Recognition keeps the decoder's projection,
// FFN and classifier weights packed once (Note [packed B] in ops/gemm.h; in bfloat16 half as many
// bytes as the weights), and the steps read the panels straight from memory, streamed (Note
// [streaming packed B] in gemm.cpp). In float32 the copy costs as much memory as the decoder's
// weights (base: 57 MiB, tiny: 8 MiB) and saved an eighth of a base batch-64 decoding; steps of a
// few rows keep their dot products (Note [few rows] in linear.cpp). The packed weights go stale
// with the folded copy, and are packed again when the kernels of the call change.
//
// Note [inference reuses one layer's buffers]: in inference the Transformer layers share one set
// of activation buffers, and a layer's output buffer is also the next layer's input: a layer reads
// its input only in its first sublayers (projection and first residual), before it writes its
// output.
#include "model/network.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "common/error.h"
#include "common/matmul_precision.h"
#include "common/threadpool.h"
#include "model/network_internal.h"
#include "ops/activation.h"
#include "ops/batchnorm.h"
#include "ops/conv.h"
#include "ops/embedding.h"
#include "ops/focal_loss.h"
#include "ops/linear.h"
#include "ops/tps.h"

namespace safl::model {

namespace net {

namespace {

LinearRef linear_ref(const Layout& layout, const std::string& prefix) {
  const TensorSpec& w = layout.param(prefix + ".weight");
  LinearRef r;
  r.weight = w.offset;
  r.bias = layout.param(prefix + ".bias").offset;
  r.out = w.shape[0];
  r.in = w.shape[1];
  return r;
}

LayerNormRef layernorm_ref(const Layout& layout, const std::string& prefix) {
  return {layout.param(prefix + ".weight").offset, layout.param(prefix + ".bias").offset};
}

BatchNormRef batchnorm_ref(const Layout& layout, const std::string& prefix) {
  BatchNormRef r;
  r.gamma = layout.param(prefix + ".weight").offset;
  r.beta = layout.param(prefix + ".bias").offset;
  r.mean = layout.buffer(prefix + ".running_mean").offset;
  r.var = layout.buffer(prefix + ".running_var").offset;
  r.channels = layout.param(prefix + ".weight").numel;
  return r;
}

// A convolution (no bias, square kernel, pad kernel/2) + its batch norm on a Ci×H×W input.
ConvRef conv_ref(const Layout& layout, const std::string& weight_name, const std::string& bn_prefix, int64_t H,
                 int64_t W, int64_t stride_h, int64_t stride_w, int64_t& folded_cursor) {
  const TensorSpec& w = layout.param(weight_name);
  ConvRef r;
  r.weight = w.offset;
  r.Co = w.shape[0];
  r.Ci = w.shape[1];
  r.kernel = w.shape[2];
  r.pad = r.kernel / 2;
  r.stride_h = stride_h;
  r.stride_w = stride_w;
  r.H = H;
  r.W = W;
  r.Ho = conv2d_output_size(H, r.kernel, stride_h, r.pad);
  r.Wo = conv2d_output_size(W, r.kernel, stride_w, r.pad);
  r.bn = batchnorm_ref(layout, bn_prefix);
  r.folded_weight = folded_cursor;
  folded_cursor += r.Co * r.weights_per_channel();
  r.folded_bias = folded_cursor;
  folded_cursor += r.Co;
  return r;
}

}  // namespace

Refs resolve_refs(const Config& c, const Layout& layout) {
  Refs refs;
  int64_t folded = 0;
  int64_t H = c.loc_h, W = c.loc_w;
  for (int64_t i = 0; i < 6; ++i) {
    const std::string p = "loc.conv" + std::to_string(i);
    refs.loc_convs.push_back(conv_ref(layout, p + ".weight", p + ".bn", H, W, 1, 1, folded));
    if (i < 5) H /= 2, W /= 2;
  }
  refs.loc_fc1 = linear_ref(layout, "loc.fc1");
  refs.loc_fc1_bn = batchnorm_ref(layout, "loc.fc1.bn");
  refs.loc_fc1_folded_weight = folded;
  folded += refs.loc_fc1.out * refs.loc_fc1.in;
  refs.loc_fc1_folded_bias = folded;
  folded += refs.loc_fc1.out;
  refs.loc_fc2 = linear_ref(layout, "loc.fc2");

  refs.stem = conv_ref(layout, "backbone.stem.weight", "backbone.stem.bn", c.rect_h, c.rect_w, 1, 1, folded);
  H = c.rect_h, W = c.rect_w;
  const int64_t stage_stride_w[5] = {2, 2, 1, 1, 1};  // every stage halves the height
  for (int64_t s = 0; s < 5; ++s) {
    for (int64_t k = 0; k < c.res_blocks[s]; ++k) {
      const std::string p = "backbone.stage" + std::to_string(s) + ".block" + std::to_string(k);
      const int64_t sh = k == 0 ? 2 : 1, sw = k == 0 ? stage_stride_w[s] : 1;
      BlockRef b;
      b.conv1 = conv_ref(layout, p + ".conv1.weight", p + ".bn1", H, W, sh, sw, folded);
      b.conv2 = conv_ref(layout, p + ".conv2.weight", p + ".bn2", b.conv1.Ho, b.conv1.Wo, 1, 1, folded);
      b.has_down = k == 0;
      if (b.has_down) b.down = conv_ref(layout, p + ".down.weight", p + ".down.bn", H, W, sh, sw, folded);
      H = b.conv2.Ho, W = b.conv2.Wo;
      refs.blocks.push_back(b);
    }
  }
  SAFL_CHECK(H == 1 && W == c.seq_len(), "Network: the backbone's output is ", H, "×", W, ", expected 1×",
             c.seq_len());
  refs.has_proj = c.res_channels.back() != c.d_model;
  if (refs.has_proj) refs.proj = linear_ref(layout, "backbone.proj");

  for (int64_t l = 0; l < c.enc_layers; ++l) {
    const std::string p = "encoder.layer" + std::to_string(l);
    EncoderLayerRef r;
    r.in_proj = linear_ref(layout, p + ".self_attn.in_proj");
    r.out_proj = linear_ref(layout, p + ".self_attn.out_proj");
    r.fc1 = linear_ref(layout, p + ".ffn.fc1");
    r.fc2 = linear_ref(layout, p + ".ffn.fc2");
    r.norm1 = layernorm_ref(layout, p + ".norm1");
    r.norm2 = layernorm_ref(layout, p + ".norm2");
    refs.encoder.push_back(r);
  }
  refs.encoder_norm = layernorm_ref(layout, "encoder.norm");
  refs.embed = layout.param("decoder.embed.weight").offset;
  for (int64_t l = 0; l < c.dec_layers; ++l) {
    const std::string p = "decoder.layer" + std::to_string(l);
    DecoderLayerRef r;
    r.self_in_proj = linear_ref(layout, p + ".self_attn.in_proj");
    r.self_out_proj = linear_ref(layout, p + ".self_attn.out_proj");
    r.cross_q_proj = linear_ref(layout, p + ".cross_attn.q_proj");
    r.cross_kv_proj = linear_ref(layout, p + ".cross_attn.kv_proj");
    r.cross_out_proj = linear_ref(layout, p + ".cross_attn.out_proj");
    r.fc1 = linear_ref(layout, p + ".ffn.fc1");
    r.fc2 = linear_ref(layout, p + ".ffn.fc2");
    r.norm1 = layernorm_ref(layout, p + ".norm1");
    r.norm2 = layernorm_ref(layout, p + ".norm2");
    r.norm3 = layernorm_ref(layout, p + ".norm3");
    refs.decoder.push_back(r);
  }
  refs.decoder_norm = layernorm_ref(layout, "decoder.norm");
  refs.classifier = linear_ref(layout, "classifier");
  refs.folded_floats = folded;
  return refs;
}

}  // namespace net

namespace {

// Deterministic random numbers for init_random: one splitmix64 stream per (seed, tensor index).
class InitRng {
 public:
  InitRng(uint64_t seed, uint64_t stream) : state_(splitmix64_mix(seed ^ splitmix64_mix(stream + 1))) {}
  double uniform() {  // [0, 1)
    state_ += 0x9E3779B97F4A7C15ull;
    return double(splitmix64_mix(state_) >> 11) * (1.0 / 9007199254740992.0);
  }
  double normal() {  // Box–Muller
    const double u1 = std::max(uniform(), 1e-300), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  uint64_t state_;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string prefix_of(const std::string& name) { return name.substr(0, name.rfind('.')); }

}  // namespace

// Note [images in parts]: the fewest images a part gets.
int64_t min_images_per_part(const Config& c) {
  const int64_t step_weights = c.dec_layers * (6 * c.d_model * c.d_model + 2 * c.d_model * c.ffn);
  return std::max<int64_t>(8, step_weights >> 19);
}

struct Network::Impl {
  Config config;
  Layout layout;
  net::Refs refs;
  net::Dims dims;
  std::vector<float> params, grads, buffers;
  std::vector<float> folded;  // Note [folded inference copy]
  bool folded_stale = true;
  net::PackedDecoder packed_decoder;  // Note [packed decoder weights]
  bool packed_stale = true;
  std::vector<float> grid_matrix;  // (rect_h·rect_w, K)
  std::vector<float> positions;    // (max(S, tgt_len), d) sinusoid table
  net::Arena arena;
  std::vector<net::Arena> part_arenas;  // Note [images in parts]

  explicit Impl(const Config& c) : config(c) {
    config.validate("Network config");
    layout = make_layout(config);
    refs = net::resolve_refs(config, layout);
    dims = {config.d_model, config.heads, config.ffn};
    params.assign(layout.param_floats, 0.0f);
    buffers.assign(layout.buffer_floats, 0.0f);
    for (const TensorSpec& spec : layout.buffers)
      if (ends_with(spec.name, ".running_var")) std::fill_n(buffers.begin() + spec.offset, spec.numel, 1.0f);
    folded.assign(refs.folded_floats, 0.0f);
    grid_matrix.resize(tps_grid_matrix_size(config.fiducials, config.rect_h, config.rect_w));
    tps_grid_matrix(grid_matrix.data(), config.fiducials, config.rect_h, config.rect_w);
    const int64_t rows = std::max(config.seq_len(), config.tgt_len());
    positions.resize(rows * config.d_model);
    cpu::sinusoid_table(positions.data(), rows, config.d_model);
  }

  net::Weights weights() { return {params.data(), buffers.data(), folded.data()}; }

  // Note [folded inference copy], Note [packed decoder weights].
  void invalidate_inference_copies() { folded_stale = packed_stale = true; }

  // The packed decoder weights for this call (Note [packed decoder weights]), packed again when
  // stale or packed for other kernels.
  const net::PackedDecoder* packed_decoder_for_this_call() {
    net::PackedDecoder& pd = packed_decoder;
    if (!packed_stale && pd.classifier.fits_this_call()) return &pd;
    const float* P = params.data();
    auto pack = [&](cpu::PackedB& packed, const net::LinearRef& r) {
      cpu::pack_linear_weight(packed, P + r.weight, r.in, r.out);
    };
    pd.layers.resize(refs.decoder.size());
    for (size_t l = 0; l < refs.decoder.size(); ++l) {
      const net::DecoderLayerRef& r = refs.decoder[l];
      net::PackedDecoderLayer& layer = pd.layers[l];
      pack(layer.self_in_proj, r.self_in_proj);
      pack(layer.self_out_proj, r.self_out_proj);
      pack(layer.cross_q_proj, r.cross_q_proj);
      pack(layer.cross_out_proj, r.cross_out_proj);
      pack(layer.fc1, r.fc1);
      pack(layer.fc2, r.fc2);
    }
    pack(pd.classifier, refs.classifier);
    packed_stale = false;
    return &pd;
  }

  void ensure_folded() {
    if (!folded_stale) return;
    const float* P = params.data();
    const float* buf = buffers.data();
    float* F = folded.data();
    auto fold = [&](const net::ConvRef& r) {
      cpu::batchnorm_fold(F + r.folded_weight, F + r.folded_bias, P + r.weight, nullptr, P + r.bn.gamma,
                          P + r.bn.beta, buf + r.bn.mean, buf + r.bn.var, r.Co, r.weights_per_channel(),
                          kBatchNormEps);
    };
    net::for_each_conv(refs, fold);
    const net::LinearRef& fc1 = refs.loc_fc1;
    const net::BatchNormRef& bn = refs.loc_fc1_bn;
    cpu::batchnorm_fold(F + refs.loc_fc1_folded_weight, F + refs.loc_fc1_folded_bias, P + fc1.weight,
                        P + fc1.bias, P + bn.gamma, P + bn.beta, buf + bn.mean, buf + bn.var, fc1.out, fc1.in,
                        kBatchNormEps);
    folded_stale = false;
  }

  void check_targets(const char* op, const int32_t* targets, int64_t B) const {
    const int64_t T = config.tgt_len();
    for (int64_t i = 0; i < B * T; ++i)
      SAFL_CHECK_RANGE(targets[i] >= 0 && targets[i] < config.num_classes, op, ": expected targets in [0, ",
                       config.num_classes, ") but received ", targets[i], " at (", i / T, ", ", i % T, ")");
  }

  // Decoder input ids (B, T): BOS, then targets[:, :-1].
  void decoder_ids(int32_t* ids, const int32_t* targets, int64_t B) const {
    const int64_t T = config.tgt_len();
    for (int64_t b = 0; b < B; ++b) {
      ids[b * T] = int32_t(config.bos());
      for (int64_t t = 1; t < T; ++t) ids[b * T + t] = targets[b * T + t - 1];
    }
  }

  // features (B, S, d) = proj(sequence) (or the sequence itself) + positions.
  void encoder_input(float* features, const float* sequence, int64_t B) const {
    const int64_t S = config.seq_len(), d = config.d_model;
    if (refs.has_proj) {
      cpu::linear_forward(features, sequence, params.data() + refs.proj.weight, params.data() + refs.proj.bias,
                          B * S, refs.proj.in, d);
    } else {
      std::copy(sequence, sequence + B * S * d, features);
    }
    cpu::add_positions(features, features, positions.data(), B, S, d);
  }

  // ---- training ----------------------------------------------------------------------------------

  // Every activation a training step saves for its backward, and the backward's scratch.
  struct TrainPlan {
    net::CnnTrainActs cnn;
    net::CnnGrads cnn_grads;      // pool[0] is also the forward's scratch
    float* workspace = nullptr;   // (cnn_conv_workspace(B)) convolution scratch
    float* features = nullptr;    // (B, S, d) encoder input
    std::vector<net::EncoderLayerActs> encoder;
    net::NormActs encoder_norm;   // out = memory (B, S, d)
    int32_t* ids = nullptr;       // (B, T) decoder input ids
    float* decoder_in = nullptr;  // (B, T, d)
    std::vector<net::DecoderLayerActs> decoder;
    net::NormActs decoder_norm;   // out (B, T, d)
    float* logits = nullptr;      // (B, T, C)
    net::TransformerGrads grads;
    float* dlogits = nullptr;     // (B, T, C)
    float* dsequence = nullptr;   // (B, S, C4) when there is a projection
    float* loss = nullptr;        // (1)
  };

  void carve_train(net::Carver& c, TrainPlan& p, int64_t B) {
    const int64_t S = config.seq_len(), T = config.tgt_len(), d = config.d_model;
    const bool dropout = config.dropout > 0.0f;
    net::carve_cnn_train(c, p.cnn, config, refs, B);
    net::carve_cnn_grads(c, p.cnn_grads, config, refs, B);
    p.workspace = c.floats(net::cnn_conv_workspace(refs, B));
    p.features = c.floats(B * S * d);
    p.encoder.resize(refs.encoder.size());
    for (auto& a : p.encoder) net::carve_encoder_layer(c, a, dims, B, S, dropout);
    net::carve_norm(c, p.encoder_norm, B * S, d);
    p.ids = c.ints(B * T);
    p.decoder_in = c.floats(B * T * d);
    p.decoder.resize(refs.decoder.size());
    for (auto& a : p.decoder) net::carve_decoder_layer(c, a, dims, B, T, S, dropout);
    net::carve_norm(c, p.decoder_norm, B * T, d);
    p.logits = c.floats(B * T * config.num_classes);
    net::carve_transformer_grads(c, p.grads, dims, B, S, T);
    p.dlogits = c.floats(B * T * config.num_classes);
    p.dsequence = refs.has_proj ? c.floats(B * S * config.res_channels.back()) : nullptr;
    p.loss = c.floats(1);
  }

  // Training-mode forward into p.logits (batch statistics, running statistics updated, dropout).
  void forward_train(TrainPlan& p, const float* images, const int32_t* targets, int64_t B, uint64_t seed) {
    invalidate_inference_copies();
    const int64_t S = config.seq_len(), T = config.tgt_len(), d = config.d_model;
    const float* P = params.data();
    const net::Dropout dropout{config.dropout, seed};
    net::cnn_forward_train(p.cnn, weights(), config, refs, images, grid_matrix.data(), p.cnn_grads.pool[0],
                           p.workspace, B);
    encoder_input(p.features, p.cnn.sequence, B);
    const float* x = p.features;
    for (size_t l = 0; l < refs.encoder.size(); ++l) {
      net::encoder_layer_forward(p.encoder[l], P, refs.encoder[l], x, dims, B, S, dropout, int64_t(l));
      x = p.encoder[l].norm2.out;
    }
    net::norm_forward(p.encoder_norm, P, refs.encoder_norm, x, B * S, d);
    decoder_ids(p.ids, targets, B);
    cpu::embedding_forward(p.decoder_in, p.ids, P + refs.embed, B * T, config.num_classes + 1, d);
    cpu::add_positions(p.decoder_in, p.decoder_in, positions.data(), B, T, d);
    const float* y = p.decoder_in;
    for (size_t l = 0; l < refs.decoder.size(); ++l) {
      net::decoder_layer_forward(p.decoder[l], P, refs.decoder[l], y, p.encoder_norm.out, dims, B, T, S, dropout,
                                 int64_t(l));
      y = p.decoder[l].norm3.out;
    }
    net::norm_forward(p.decoder_norm, P, refs.decoder_norm, y, B * T, d);
    cpu::linear_forward(p.logits, p.decoder_norm.out, P + refs.classifier.weight, P + refs.classifier.bias, B * T,
                        d, config.num_classes);
  }

  // Backward of everything from p.dlogits; parameter gradients accumulate into grads.
  void backward(TrainPlan& p, const float* images, int64_t B) {
    const int64_t S = config.seq_len(), T = config.tgt_len(), d = config.d_model;
    const float* P = params.data();
    float* G = grads.data();
    net::TransformerGrads& g = p.grads;
    cpu::linear_backward(g.dx, G + refs.classifier.weight, G + refs.classifier.bias, p.dlogits, p.decoder_norm.out,
                         P + refs.classifier.weight, B * T, d, config.num_classes);
    net::norm_backward(G, g.dx, p.decoder_norm, P, refs.decoder_norm, p.decoder.back().norm3.out, B * T, d);
    std::fill(g.dmemory, g.dmemory + B * S * d, 0.0f);
    for (size_t l = refs.decoder.size(); l-- > 0;)
      net::decoder_layer_backward(G, g, p.decoder[l], P, refs.decoder[l], p.encoder_norm.out, dims, B, T, S);
    cpu::embedding_backward(G + refs.embed, g.dx, p.ids, B * T, config.num_classes + 1, d);

    const float* last_encoder = refs.encoder.empty() ? p.features : p.encoder.back().norm2.out;  // enc_layers may be 0
    net::norm_backward(G, g.dmemory, p.encoder_norm, P, refs.encoder_norm, last_encoder, B * S, d);
    std::copy(g.dmemory, g.dmemory + B * S * d, g.dx);
    for (size_t l = refs.encoder.size(); l-- > 0;)
      net::encoder_layer_backward(G, g, p.encoder[l], P, refs.encoder[l], dims, B, S);
    // The positions are constants: g.dx is the gradient of the projected features.
    const float* dsequence = g.dx;
    if (refs.has_proj) {
      cpu::linear_backward(p.dsequence, G + refs.proj.weight, G + refs.proj.bias, g.dx, p.cnn.sequence,
                           P + refs.proj.weight, B * S, refs.proj.in, d);
      dsequence = p.dsequence;
    }
    net::cnn_backward(G, p.cnn, p.cnn_grads, weights(), config, refs, images, grid_matrix.data(), dsequence,
                      p.workspace, B);
  }

  // ---- inference ---------------------------------------------------------------------------------

  struct EncoderPlan {
    net::CnnInferBuffers cnn;
    float* features = nullptr;  // (B, S, d)
    net::EncoderLayerActs layer;  // shared by all layers, Note [inference reuses one layer's buffers]
    net::NormActs norm;           // out = memory (B, S, d)
  };

  void carve_encoder(net::Carver& c, EncoderPlan& p, int64_t B) {
    const int64_t S = config.seq_len();
    net::carve_cnn_infer(c, p.cnn, config, refs, B);
    p.features = c.floats(B * S * config.d_model);
    net::carve_encoder_layer(c, p.layer, dims, B, S, /*dropout=*/false);
    net::carve_norm(c, p.norm, B * S, config.d_model);
  }

  // Inference encoder: returns the memory (B, S, d).
  const float* encode(EncoderPlan& p, const float* images, int64_t B) {
    const int64_t S = config.seq_len();
    net::cnn_forward_infer(p.cnn, weights(), config, refs, images, grid_matrix.data(), B);
    encoder_input(p.features, p.cnn.sequence, B);
    const float* x = p.features;
    for (size_t l = 0; l < refs.encoder.size(); ++l) {
      net::encoder_layer_forward(p.layer, params.data(), refs.encoder[l], x, dims, B, S, net::Dropout{},
                                 int64_t(l));
      x = p.layer.norm2.out;
    }
    net::norm_forward(p.norm, params.data(), refs.encoder_norm, x, B * S, config.d_model);
    return p.norm.out;
  }

  // Note [images in parts]: calls part(arena, b0, n) for the images [b0, b0 + n) of each part of a
  // batch of B, the parts concurrently, each with its own arena (one part: the network's arena).
  template <class Part>
  void run_in_parts(int64_t B, Part&& part) {
    const int64_t parts = std::min<int64_t>(num_threads(), B / min_images_per_part(config));
    if (parts <= 1) {
      part(arena, 0, B);
      return;
    }
    if (int64_t(part_arenas.size()) < parts) part_arenas.resize(size_t(parts));
    parallel_run(int(parts), [&](int task, int tasks) {
      // tasks < parts only if the pool shrank meanwhile: then a task takes several parts in turn.
      for (int64_t p = task; p < parts; p += tasks) {
        const int64_t b0 = B * p / parts, b1 = B * (p + 1) / parts;
        part(part_arenas[size_t(p)], b0, b1 - b0);
      }
    });
  }

  // Floats of one input image (3, in_h, in_w).
  int64_t image_floats() const { return 3 * config.in_h * config.in_w; }

  void forward_infer(float* logits, const float* images, const int32_t* targets, int64_t B) {
    ensure_folded();
    const int64_t T = config.tgt_len(), C = config.num_classes;
    run_in_parts(B, [&](net::Arena& part_arena, int64_t b0, int64_t n) {
      forward_infer_part(part_arena, logits + b0 * T * C, images + b0 * image_floats(), targets + b0 * T, n);
    });
  }

  // Teacher-forced inference of B images (one part) in `into`.
  void forward_infer_part(net::Arena& into, float* logits, const float* images, const int32_t* targets,
                          int64_t B) {
    const int64_t S = config.seq_len(), T = config.tgt_len(), d = config.d_model;
    EncoderPlan encoder;
    int32_t* ids = nullptr;
    float* decoder_in = nullptr;
    net::DecoderLayerActs layer;
    net::NormActs norm;
    into.carve([&](net::Carver& c) {
      carve_encoder(c, encoder, B);
      ids = c.ints(B * T);
      decoder_in = c.floats(B * T * d);
      net::carve_decoder_layer(c, layer, dims, B, T, S, /*dropout=*/false);
      net::carve_norm(c, norm, B * T, d);
    });
    const float* memory = encode(encoder, images, B);
    const float* P = params.data();
    decoder_ids(ids, targets, B);
    cpu::embedding_forward(decoder_in, ids, P + refs.embed, B * T, config.num_classes + 1, d);
    cpu::add_positions(decoder_in, decoder_in, positions.data(), B, T, d);
    const float* y = decoder_in;
    for (size_t l = 0; l < refs.decoder.size(); ++l) {
      net::decoder_layer_forward(layer, P, refs.decoder[l], y, memory, dims, B, T, S, net::Dropout{}, int64_t(l));
      y = layer.norm3.out;
    }
    net::norm_forward(norm, P, refs.decoder_norm, y, B * T, d);
    cpu::linear_forward(logits, norm.out, P + refs.classifier.weight, P + refs.classifier.bias, B * T, d,
                        config.num_classes);
  }
};

Network::Network(const Config& config) : impl_(std::make_unique<Impl>(config)) {}
Network::~Network() = default;

const Config& Network::config() const { return impl_->config; }
const Layout& Network::layout() const { return impl_->layout; }

float* Network::params() {
  impl_->invalidate_inference_copies();
  return impl_->params.data();
}

const float* Network::params() const { return impl_->params.data(); }

const float* Network::buffers() const { return impl_->buffers.data(); }

float* Network::grads() {
  if (impl_->grads.empty()) impl_->grads.assign(impl_->layout.param_floats, 0.0f);
  return impl_->grads.data();
}

float* Network::buffers() {
  impl_->invalidate_inference_copies();
  return impl_->buffers.data();
}

float* Network::param(const std::string& name) {
  const TensorSpec& spec = impl_->layout.param(name);
  return params() + spec.offset;
}

float* Network::grad(const std::string& name) {
  const TensorSpec& spec = impl_->layout.param(name);
  return grads() + spec.offset;
}

float* Network::buffer(const std::string& name) {
  const TensorSpec& spec = impl_->layout.buffer(name);
  return buffers() + spec.offset;
}

// Per tensor, by its role (its name and shape in the layout): see network.h.
void Network::init_random(uint64_t seed) {
  Impl& m = *impl_;
  m.invalidate_inference_copies();
  std::set<std::string> batchnorms;
  for (const TensorSpec& spec : m.layout.buffers)
    if (ends_with(spec.name, ".running_mean")) batchnorms.insert(prefix_of(spec.name));
  const int64_t K = m.config.fiducials;
  for (size_t index = 0; index < m.layout.params.size(); ++index) {
    const TensorSpec& spec = m.layout.params[index];
    float* x = m.params.data() + spec.offset;
    const int64_t n = spec.numel;
    InitRng rng(seed, index);
    const std::string prefix = prefix_of(spec.name);
    const bool is_weight = ends_with(spec.name, ".weight");
    auto fill_uniform = [&](double bound) {
      for (int64_t i = 0; i < n; ++i) x[i] = float((2.0 * rng.uniform() - 1.0) * bound);
    };
    auto fill_normal = [&](double stddev) {
      for (int64_t i = 0; i < n; ++i) x[i] = float(rng.normal() * stddev);
    };
    if (batchnorms.count(prefix)) {  // batch norm: weight 1, bias 0
      std::fill_n(x, n, is_weight ? 1.0f : 0.0f);
    } else if (spec.shape.size() == 4) {  // convolution: Kaiming normal, fan_out, ReLU gain
      fill_normal(std::sqrt(2.0 / double(spec.shape[0] * spec.shape[2] * spec.shape[3])));
    } else if (prefix == "loc.fc1") {  // PyTorch's default Linear init: U(±1/sqrt(fan_in))
      fill_uniform(1.0 / std::sqrt(double(m.layout.param("loc.fc1.weight").shape[1])));
    } else if (spec.name == "loc.fc2.weight") {  // the identity transform at the start
      std::fill_n(x, n, 0.0f);
    } else if (spec.name == "loc.fc2.bias") {
      fiducial_points(x, K, kTpsInitialMargin);
    } else if (spec.name == "decoder.embed.weight") {
      fill_normal(1.0 / std::sqrt(double(m.config.d_model)));
    } else if (spec.shape.size() == 2) {  // Transformer and classifier matrices: Xavier uniform
      fill_uniform(std::sqrt(6.0 / double(spec.shape[0] + spec.shape[1])));
    } else {  // layer norm weight 1; layer-norm and linear biases 0
      std::fill_n(x, n, is_weight ? 1.0f : 0.0f);
    }
  }
  std::fill(m.buffers.begin(), m.buffers.end(), 0.0f);
  for (const TensorSpec& spec : m.layout.buffers)
    if (ends_with(spec.name, ".running_var")) std::fill_n(m.buffers.begin() + spec.offset, spec.numel, 1.0f);
}

void Network::load(const SafeTensors& file, bool allow_extra) {
  Impl& m = *impl_;
  std::set<std::string> known;
  for (const TensorSpec& spec : m.layout.params) known.insert(spec.name);
  for (const TensorSpec& spec : m.layout.buffers) known.insert(spec.name);
  for (const TensorInfo& t : file.tensors())
    SAFL_CHECK(allow_extra || known.count(t.name), file.source(), ": unexpected tensor '", t.name,
               "' (not part of this model's layout)");
  // Read into fresh storage so that a failure leaves the network as it was.
  std::vector<float> params(m.layout.param_floats), buffers(m.layout.buffer_floats);
  for (const TensorSpec& spec : m.layout.params) file.read(spec.name, spec.shape, params.data() + spec.offset);
  for (const TensorSpec& spec : m.layout.buffers) file.read(spec.name, spec.shape, buffers.data() + spec.offset);
  m.params.swap(params);
  m.buffers.swap(buffers);
  m.invalidate_inference_copies();
}

std::vector<uint8_t> Network::save(DType dtype, const std::map<std::string, std::string>& metadata) const {
  const Impl& m = *impl_;
  std::vector<TensorView> views;
  for (const TensorSpec& spec : m.layout.params) views.push_back({spec.name, spec.shape, m.params.data() + spec.offset});
  for (const TensorSpec& spec : m.layout.buffers)
    views.push_back({spec.name, spec.shape, m.buffers.data() + spec.offset});
  return write_safetensors(views, metadata, dtype);
}

std::vector<Decoded> Network::recognize(const float* images, int64_t B, int64_t beam_width) {
  Impl& m = *impl_;
  SAFL_CHECK_RANGE(B >= 0, "Network::recognize: expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(beam_width >= 1 && beam_width <= m.config.num_classes,
                   "Network::recognize: expected beam_width between 1 and ", m.config.num_classes,
                   " but received ", beam_width);
  if (B == 0) return {};
  m.ensure_folded();
  const net::PackedDecoder* packed = m.packed_decoder_for_this_call();
  std::vector<Decoded> results(static_cast<size_t>(B));
  m.run_in_parts(B, [&](net::Arena& arena, int64_t b0, int64_t n) {
    Impl::EncoderPlan encoder;
    net::DecodeBuffers decode;
    arena.carve([&](net::Carver& c) {
      m.carve_encoder(c, encoder, n);
      net::carve_decode(c, decode, m.config, n, beam_width);
    });
    const float* memory = m.encode(encoder, images + b0 * m.image_floats(), n);
    std::vector<Decoded> part = net::decode(decode, m.params.data(), packed, m.config, m.refs, memory,
                                            m.positions.data(), n, beam_width);
    std::move(part.begin(), part.end(), results.begin() + b0);
  });
  return results;
}

void Network::forward(float* logits, const float* images, const int32_t* targets, int64_t B, bool training,
                      uint64_t dropout_seed) {
  Impl& m = *impl_;
  SAFL_CHECK_RANGE(B >= 0, "Network::forward: expected B >= 0 but received ", B);
  m.check_targets("Network::forward", targets, B);
  if (!training) {
    if (B > 0) m.forward_infer(logits, images, targets, B);
    return;
  }
  SAFL_CHECK_RANGE(B >= 2, "Network::forward: expected B >= 2 in training (batch statistics) but received ", B);
  Impl::TrainPlan plan;
  m.arena.carve([&](net::Carver& c) { m.carve_train(c, plan, B); });
  m.forward_train(plan, images, targets, B, dropout_seed);
  std::copy(plan.logits, plan.logits + B * m.config.tgt_len() * m.config.num_classes, logits);
}

float Network::forward_backward(const float* images, const int32_t* targets, int64_t B, float gamma, float alpha,
                                uint64_t dropout_seed, int64_t* correct) {
  Impl& m = *impl_;
  SAFL_CHECK_RANGE(B >= 2, "Network::forward_backward: expected B >= 2 (batch statistics) but received ", B);
  m.check_targets("Network::forward_backward", targets, B);
  check_focal_loss_arguments(B * m.config.tgt_len(), m.config.num_classes, gamma, alpha, 1.0f);
  float* G = grads();
  std::fill(G, G + m.layout.param_floats, 0.0f);
  Impl::TrainPlan plan;
  m.arena.carve([&](net::Carver& c) { m.carve_train(c, plan, B); });
  m.forward_train(plan, images, targets, B, dropout_seed);
  const int64_t N = B * m.config.tgt_len(), C = m.config.num_classes;
  const int32_t pad = int32_t(m.config.pad());
  cpu::focal_loss(plan.loss, nullptr, plan.dlogits, plan.logits, targets, N, C, pad, gamma, alpha, 1.0f);
  if (correct) {
    int64_t hits = 0;
    for (int64_t i = 0; i < N; ++i) {
      if (targets[i] == pad) continue;
      const float* row = plan.logits + i * C;
      hits += std::max_element(row, row + C) - row == targets[i];
    }
    *correct = hits;
  }
  m.backward(plan, images, B);
  return *plan.loss;
}

}  // namespace safl::model
