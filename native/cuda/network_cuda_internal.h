// The pieces of model::CudaNetwork (model/network_cuda.h) that its .cu files share (not a public
// header). The device network reuses the CPU network's tensor refs and buffer layouts
// (model/network_internal.h: Refs, Carver, the *Acts structs and their carve_* functions, which
// only do pointer arithmetic and so carve device memory as well as host memory) and mirrors its
// forward/backward functions with the CUDA ops, one file per part as on the CPU:
//   network.cu              the public class: storage, copies, folding, top level, small kernels
//   network_cnn.cu          localisation network, TPS + sampler, ResNet-45 (training and inference)
//   network_transformer.cu  encoder and decoder layers (forward, backward)
//   network_decode.cu       greedy decoding with device key/value caches
//
// Every pointer here is a device pointer unless its comment says host.
//
// Note [streams]: the ops of native/cuda take no stream argument and launch on the legacy default
// stream, and so do the network's own small kernels. The network owns one blocking stream
// (cudaStreamCreate) for its copies between pinned host staging and the device; the legacy default
// stream synchronises with blocking streams in both directions, so copies and kernels run in the
// order they are issued and no event is needed. A copy back to the host is followed by
// cudaStreamSynchronize on the network's stream before the host reads it.
#pragma once
#include <cuda_runtime.h>

// Note [streams] relies on the legacy default stream; with per-thread default streams the copies
// and kernels would no longer be ordered.
#ifdef CUDA_API_PER_THREAD_DEFAULT_STREAM
#error "the CUDA network needs the legacy default stream (Note [streams]): do not build with --default-stream per-thread"
#endif

#include <cstdint>
#include <vector>

#include "cuda/cuda_check.h"
#include "model/network_internal.h"

namespace safl::model::cuda_net {

using net::BlockActs;
using net::BlockRef;
using net::Carver;
using net::CnnGrads;
using net::CnnInferBuffers;
using net::CnnTrainActs;
using net::ConvBnActs;
using net::ConvRef;
using net::DecoderLayerActs;
using net::DecoderLayerRef;
using net::Dims;
using net::Dropout;
using net::EncoderLayerActs;
using net::EncoderLayerRef;
using net::LayerNormRef;
using net::LinearRef;
using net::NormActs;
using net::Refs;
using net::TransformerGrads;
using net::Weights;

// ---- the device activation arena ------------------------------------------------------------------

// One float and one int32 device allocation, grown to the largest request seen, never shrunk; the
// two-pass carve of net::Arena (count, then hand out pieces) over device memory. Contents do not
// survive a growth: every call carves and fills its buffers anew.
class DeviceArena {
 public:
  template <class Fn>
  void carve(Fn&& fn) {
    Carver count(nullptr, nullptr);
    fn(count);
    if (size_t(count.float_count()) > floats_.size()) {
      floats_ = cuda::DeviceBuffer<float>();  // free before allocating the larger one
      floats_ = cuda::DeviceBuffer<float>(size_t(count.float_count()));
    }
    if (size_t(count.int_count()) > ints_.size()) {
      ints_ = cuda::DeviceBuffer<int32_t>();
      ints_ = cuda::DeviceBuffer<int32_t>(size_t(count.int_count()));
    }
    Carver real(floats_.data(), ints_.data());
    fn(real);
  }

 private:
  cuda::DeviceBuffer<float> floats_;
  cuda::DeviceBuffer<int32_t> ints_;
};

// ---- small element-wise kernels (network.cu), on the legacy default stream ------------------------

void add_in_place(float* y /* (n) */, const float* x /* (n) */, int64_t n);                // y += x
void add(float* out /* (n) */, const float* x /* (n) */, const float* y /* (n) */, int64_t n);  // out = x + y
void add_relu_in_place(float* out /* (n) */, const float* shortcut /* (n) */, int64_t n);  // out = ReLU(out + s)
void scale(float* out /* (n), may be x */, const float* x /* (n) */, float factor, int64_t n);
void copy(float* out /* (n) */, const float* x /* (n) */, int64_t n);
// (B, rows, cols) → (B, cols, rows).
void transpose_last_two(float* out /* (B, cols, rows) */, const float* x /* (B, rows, cols) */, int64_t B,
                        int64_t rows, int64_t cols);

// ---- the CNN part (network_cnn.cu) ------------------------------------------------------------------

// Floats of CUDA conv workspace for the largest need of any convolution at batch B.
int64_t cnn_conv_workspace(const Refs& refs, int64_t B);

// The same computations as net::cnn_forward_train / net::cnn_backward, with the CUDA ops.
void cnn_forward_train(CnnTrainActs& a, const Weights& w, const Config& config, const Refs& refs,
                       const float* images /* (B, 3, in_h, in_w) */,
                       const float* grid_matrix /* (rect_h·rect_w, K) */,
                       float* scratch /* (B, max activation) */,
                       float* workspace /* (cnn_conv_workspace(B)) */, int64_t B);
void cnn_backward(float* grads /* (param_floats) */, const CnnTrainActs& a, CnnGrads& g, const Weights& w,
                  const Config& config, const Refs& refs, const float* images /* (B, 3, in_h, in_w) */,
                  const float* grid_matrix /* (rect_h·rect_w, K) */, const float* dsequence /* (B, S, C4) */,
                  float* workspace /* (cnn_conv_workspace(B)) */, int64_t B);

// Inference buffers as net::carve_cnn_infer, with the CUDA conv workspace size.
void carve_cnn_infer(Carver& c, CnnInferBuffers& b, const Config& config, const Refs& refs, int64_t B);
// Inference forward with the folded weights (w.folded), as net::cnn_forward_infer.
void cnn_forward_infer(CnnInferBuffers& b, const Weights& w, const Config& config, const Refs& refs,
                       const float* images /* (B, 3, in_h, in_w) */,
                       const float* grid_matrix /* (rect_h·rect_w, K) */, int64_t B);

// ---- the Transformer (network_transformer.cu): the net:: functions of the same names, on CUDA ------

void encoder_layer_forward(EncoderLayerActs& a, const float* params, const EncoderLayerRef& r,
                           const float* x /* (B, S, d) */, const Dims& dims, int64_t B, int64_t S,
                           const Dropout& dropout, int64_t layer);
void decoder_layer_forward(DecoderLayerActs& a, const float* params, const DecoderLayerRef& r,
                           const float* x /* (B, T, d) */, const float* memory /* (B, S, d) */,
                           const Dims& dims, int64_t B, int64_t T, int64_t S, const Dropout& dropout,
                           int64_t layer);
void norm_forward(NormActs& a, const float* params, const LayerNormRef& r, const float* x /* (rows, d) */,
                  int64_t rows, int64_t d);
void add_norm_forward(net::AddNormActs& a, const float* params, const LayerNormRef& r,
                      const float* x /* (rows, d) */, float* y /* (rows, d) */, int64_t rows, int64_t d,
                      const Dropout& dropout, int64_t site);
void ffn_forward(net::FfnActs& a, const float* params, const LinearRef& fc1, const LinearRef& fc2,
                 const float* x /* (rows, d) */, const Dims& dims, int64_t rows, const Dropout& dropout,
                 int64_t site);
void encoder_layer_backward(float* grads, TransformerGrads& g, const EncoderLayerActs& a, const float* params,
                            const EncoderLayerRef& r, const Dims& dims, int64_t B, int64_t S);
void decoder_layer_backward(float* grads, TransformerGrads& g, const DecoderLayerActs& a, const float* params,
                            const DecoderLayerRef& r, const float* memory /* (B, S, d) */, const Dims& dims,
                            int64_t B, int64_t T, int64_t S);
void norm_backward(float* grads, float* dx /* (rows, d) */, const NormActs& a, const float* params,
                   const LayerNormRef& r, const float* x /* (rows, d) */, int64_t rows, int64_t d);

// ---- greedy decoding (network_decode.cu) -------------------------------------------------------------

// Per-row state of greedy decoding on the device, beside net::DecodeBuffers (carved with width 1).
struct GreedyState {
  int32_t* tokens = nullptr;  // (B, max_len) the characters so far
  float* probs = nullptr;     // (B, max_len) their probabilities
  int32_t* lengths = nullptr; // (B) characters so far
  float* eos_prob = nullptr;  // (B) EOS's probability once finished, else -1
  int32_t* done = nullptr;    // (B) 1 once the row has finished (EOS or the last position)
  int32_t* live = nullptr;    // (1) rows not done after the step
};
void carve_greedy(Carver& c, GreedyState& s, const Config& config, int64_t B);

// Greedy decoding of B images from their memory (B, S, d), as net::decode with beam_width 1 (same
// token choices; probabilities and confidences up to rounding: expf on the device, std::exp on the
// CPU). `copy_stream` is the network's stream and
// `pinned_live` one pinned host int32: the number of live rows comes back through them once per
// step, and decoding stops when it is zero.
std::vector<Decoded> greedy_decode(net::DecodeBuffers& b, GreedyState& s, const float* params,
                                   const Config& config, const Refs& refs, const float* memory /* (B, S, d) */,
                                   const float* positions /* (>= tgt_len, d) */, int64_t B,
                                   cudaStream_t copy_stream, int32_t* pinned_live /* host, pinned */);

}  // namespace safl::model::cuda_net
