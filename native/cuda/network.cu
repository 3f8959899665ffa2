// The SAFL network on the CUDA backend (model/network_cuda.h): device storage of parameters,
// gradients, Adam moments and batch-norm buffers (one allocation each, laid out by model/layout.h
// as on the CPU), the folded inference copy, pinned staging of the inputs, the top level of the
// training forward/backward, the teacher-forced forward and recognition, the optimizer step, and
// the network's small element-wise kernels. The parts are in network_cnn.cu,
// network_transformer.cu and network_decode.cu (see network_cuda_internal.h); every part mirrors
// the CPU network's file of the same name.
//
// Memory: one device activation arena (DeviceArena), grown to the largest batch seen. Each call
// lays out the buffers it needs with the CPU network's carve functions (a counting pass, then one
// that hands out pieces), its inputs included, so nothing is allocated inside the computation
// apart from the arena's growth and the ops' own small scratch, which they allocate and free per
// call: the focal loss's row losses and status, the gradient norm's partial sums, and the id check
// of embedding_forward/backward (one int64 and a copy back to the host: a device synchronisation
// per decoding step and two per training step).
//
// Note [device folded copy]: inference runs the convolutions (and the localisation fc1) with batch
// norm folded into their weights and biases, as the CPU network does (Note [folded inference copy]
// in network.cpp), folded on the device by batchnorm_fold_kernel with the CPU fold's float
// operations in the same order (explicitly rounded, so no FMA contraction), so the folded weights
// are the CPU's bit for bit. The copy is rebuilt at the next inference call after anything that
// may change the parameters or the running statistics: construction, a training forward, an
// optimizer step, an upload of the running statistics.
//
// Streams: Note [streams] in network_cuda_internal.h.
#include "model/network_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cuda/network_cuda_internal.h"
#include "ops/batchnorm.h"
#include "ops/embedding.h"
#include "ops/focal_loss.h"
#include "ops/linear.h"
#include "ops/optimizer.h"
#include "ops/tps.h"

namespace safl::model {

namespace cuda_net {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // one warp per row in the argmax kernel
constexpr int kFoldBlock = 128;

__global__ void add_in_place_kernel(float* y, const float* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] += x[i];
}

__global__ void add_kernel(float* out, const float* x, const float* y, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = x[i] + y[i];
}

// out = ReLU(out + shortcut), NaN passing through as in the ReLU op.
__global__ void add_relu_kernel(float* out, const float* shortcut, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = out[i] + shortcut[i];
  out[i] = v < 0.0f ? 0.0f : v;
}

__global__ void scale_kernel(float* out, const float* x, float factor, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = x[i] * factor;
}

// One thread per element of x (B, rows, cols) → out (B, cols, rows).
__global__ void transpose_last_two_kernel(float* out, const float* x, int64_t total, int64_t rows, int64_t cols) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t c = i % cols, r = (i / cols) % rows, b = i / (rows * cols);
  out[(b * cols + c) * rows + r] = x[i];
}

// One block per output channel: cpu::batchnorm_fold's arithmetic (Note [device folded copy]).
__global__ void batchnorm_fold_kernel(float* folded_weight /* (Co, per_channel) */, float* folded_bias /* (Co) */,
                                      const float* weight /* (Co, per_channel) */,
                                      const float* bias /* (Co) or nullptr */, const float* gamma /* (Co) */,
                                      const float* beta /* (Co) */, const float* running_mean /* (Co) */,
                                      const float* running_var /* (Co) */, int64_t per_channel, float eps) {
  const int64_t co = blockIdx.x;
  const float scale = __fdiv_rn(gamma[co], __fsqrt_rn(__fadd_rn(running_var[co], eps)));
  for (int64_t i = threadIdx.x; i < per_channel; i += blockDim.x)
    folded_weight[co * per_channel + i] = __fmul_rn(weight[co * per_channel + i], scale);
  if (threadIdx.x == 0) {
    const float b = bias ? bias[co] : 0.0f;
    folded_bias[co] = __fadd_rn(__fmul_rn(__fsub_rn(b, running_mean[co]), scale), beta[co]);
  }
}

// One warp per row: whether the argmax of the logits (the first maximum, as std::max_element) is
// the target, counted over the non-pad rows.
__global__ void count_correct_kernel(int32_t* count /* (1), += */, const float* logits /* (N, C) */,
                                     const int32_t* targets /* (N) */, int N, int C, int32_t pad) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= N || targets[row] == pad) return;
  const float* z = logits + int64_t(row) * C;
  float best = -INFINITY;
  int best_index = C;  // none yet
  for (int c = lane; c < C; c += kWarp) {  // ascending c: a tie keeps the lower index
    if (best_index == C || z[c] > best) {
      best = z[c];
      best_index = c;
    }
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const float other = __shfl_down_sync(0xffffffffu, best, offset);
    const int other_index = __shfl_down_sync(0xffffffffu, best_index, offset);
    if (other_index < C && (best_index == C || other > best || (other == best && other_index < best_index))) {
      best = other;
      best_index = other_index;
    }
  }
  if (lane == 0 && best_index == targets[row]) atomicAdd(count, 1);
}

}  // namespace

void add_in_place(float* y, const float* x, int64_t n) {
  if (n == 0) return;
  add_in_place_kernel<<<cuda::grid_1d(size_t(n)), cuda::kBlock1D>>>(y, x, n);
  SAFL_CUDA_CHECK_LAUNCH();
}

void add(float* out, const float* x, const float* y, int64_t n) {
  if (n == 0) return;
  add_kernel<<<cuda::grid_1d(size_t(n)), cuda::kBlock1D>>>(out, x, y, n);
  SAFL_CUDA_CHECK_LAUNCH();
}

void add_relu_in_place(float* out, const float* shortcut, int64_t n) {
  if (n == 0) return;
  add_relu_kernel<<<cuda::grid_1d(size_t(n)), cuda::kBlock1D>>>(out, shortcut, n);
  SAFL_CUDA_CHECK_LAUNCH();
}

void scale(float* out, const float* x, float factor, int64_t n) {
  if (n == 0) return;
  scale_kernel<<<cuda::grid_1d(size_t(n)), cuda::kBlock1D>>>(out, x, factor, n);
  SAFL_CUDA_CHECK_LAUNCH();
}

void copy(float* out, const float* x, int64_t n) {
  if (n == 0) return;
  SAFL_CUDA_CHECK(cudaMemcpyAsync(out, x, sizeof(float) * size_t(n), cudaMemcpyDeviceToDevice));
}

void transpose_last_two(float* out, const float* x, int64_t B, int64_t rows, int64_t cols) {
  const int64_t total = B * rows * cols;
  if (total == 0) return;
  transpose_last_two_kernel<<<cuda::grid_1d(size_t(total)), cuda::kBlock1D>>>(out, x, total, rows, cols);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda_net

bool cuda_device_available(std::string* reason) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the error so that later calls do not report it again
    if (reason) *reason = std::string("no usable CUDA device: ") + cudaGetErrorString(status);
    return false;
  }
  if (count == 0) {
    if (reason) *reason = "no CUDA device found";
    return false;
  }
  return true;
}

namespace {

// Page-locked host memory of T, grown to the largest request, never shrunk (staging for copies).
template <class T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  T* reserve(size_t n) {
    if (n > n_) {
      if (ptr_) SAFL_CUDA_CHECK(cudaFreeHost(ptr_));
      ptr_ = nullptr;
      n_ = 0;
      T* grown = nullptr;  // stays unset when the allocation fails
      SAFL_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&grown), n * sizeof(T)));
      ptr_ = grown;
      n_ = n;
    }
    return ptr_;
  }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

// The network's own stream (Note [streams] in network_cuda_internal.h), destroyed with it.
struct OwnedStream {
  cudaStream_t handle = nullptr;
  OwnedStream() = default;
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  ~OwnedStream() {
    if (handle) cudaStreamDestroy(handle);
  }
};

}  // namespace

struct CudaNetwork::Impl {
  Config config;
  Layout layout;
  net::Refs refs;
  net::Dims dims;
  int device = 0;
  OwnedStream stream;
  cuda::DeviceBuffer<float> params;       // (param_floats)
  cuda::DeviceBuffer<float> grads;        // (param_floats)
  cuda::DeviceBuffer<float> adam_m;       // (param_floats)
  cuda::DeviceBuffer<float> adam_v;       // (param_floats)
  cuda::DeviceBuffer<float> buffers;      // (buffer_floats) batch-norm running statistics
  cuda::DeviceBuffer<float> folded;       // (refs.folded_floats) Note [device folded copy]
  bool folded_stale = true;
  cuda::DeviceBuffer<float> grid_matrix;  // (rect_h·rect_w, K)
  cuda::DeviceBuffer<float> positions;    // (max(S, tgt_len), d) sinusoid table
  cuda_net::DeviceArena arena;
  PinnedBuffer<float> staged_images;      // (B, 3, in_h, in_w)
  PinnedBuffer<int32_t> staged_ids;       // (2, B, T): targets, then the decoder's input ids
  PinnedBuffer<float> pinned_loss;        // (1)
  PinnedBuffer<int32_t> pinned_count;     // (1) correct tokens, or live rows while decoding

  Impl(const Network& host, int device_index) : config(host.config()), layout(host.layout()), device(device_index) {
    std::string reason;
    SAFL_CHECK(cuda_device_available(&reason), "CudaNetwork: ", reason);
    int count = 0;
    SAFL_CUDA_CHECK(cudaGetDeviceCount(&count));
    SAFL_CHECK_RANGE(device >= 0 && device < count, "CudaNetwork: expected a device index in [0, ", count,
                     ") but received ", device);
    use_device();
    refs = net::resolve_refs(config, layout);
    dims = {config.d_model, config.heads, config.ffn};
    SAFL_CUDA_CHECK(cudaStreamCreate(&stream.handle));
    const size_t P = size_t(layout.param_floats);
    params = cuda::DeviceBuffer<float>(P);
    params.upload(host.params());
    buffers = cuda::DeviceBuffer<float>(size_t(layout.buffer_floats));
    buffers.upload(host.buffers());
    grads = cuda::DeviceBuffer<float>(P);
    grads.zero();
    adam_m = cuda::DeviceBuffer<float>(P);
    adam_m.zero();
    adam_v = cuda::DeviceBuffer<float>(P);
    adam_v.zero();
    folded = cuda::DeviceBuffer<float>(size_t(refs.folded_floats));
    std::vector<float> matrix(tps_grid_matrix_size(config.fiducials, config.rect_h, config.rect_w));
    tps_grid_matrix(matrix.data(), config.fiducials, config.rect_h, config.rect_w);
    grid_matrix = cuda::DeviceBuffer<float>(matrix);
    const int64_t rows = std::max(config.seq_len(), config.tgt_len());
    std::vector<float> table(rows * config.d_model);
    cpu::sinusoid_table(table.data(), rows, config.d_model);
    positions = cuda::DeviceBuffer<float>(table);
    pinned_loss.reserve(1);
    pinned_count.reserve(1);
  }

  ~Impl() { cudaSetDevice(device); }  // the members free their memory on the network's device

  // The CUDA runtime's current device is per host thread: every entry point sets it.
  void use_device() const { SAFL_CUDA_CHECK(cudaSetDevice(device)); }

  net::Weights weights() { return {params.data(), buffers.data(), folded.data()}; }

  void ensure_folded() {
    if (!folded_stale) return;
    const float* P = params.data();
    const float* buf = buffers.data();
    float* F = folded.data();
    auto fold = [&](float* weight_out, float* bias_out, const float* weight, const float* bias,
                    const net::BatchNormRef& bn, int64_t Co, int64_t per_channel) {
      if (Co == 0) return;
      cuda_net::batchnorm_fold_kernel<<<unsigned(Co), cuda_net::kFoldBlock>>>(
          weight_out, bias_out, weight, bias, P + bn.gamma, P + bn.beta, buf + bn.mean, buf + bn.var, per_channel,
          kBatchNormEps);
      SAFL_CUDA_CHECK_LAUNCH();
    };
    net::for_each_conv(refs, [&](const net::ConvRef& r) {
      fold(F + r.folded_weight, F + r.folded_bias, P + r.weight, nullptr, r.bn, r.Co, r.weights_per_channel());
    });
    const net::LinearRef& fc1 = refs.loc_fc1;
    fold(F + refs.loc_fc1_folded_weight, F + refs.loc_fc1_folded_bias, P + fc1.weight, P + fc1.bias,
         refs.loc_fc1_bn, fc1.out, fc1.in);
    folded_stale = false;
  }

  void check_targets(const char* op, const int32_t* targets, int64_t B) const {
    const int64_t T = config.tgt_len();
    for (int64_t i = 0; i < B * T; ++i)
      SAFL_CHECK_RANGE(targets[i] >= 0 && targets[i] < config.num_classes, op, ": expected targets in [0, ",
                       config.num_classes, ") but received ", targets[i], " at (", i / T, ", ", i % T, ")");
  }

  // Copies the images (and the targets with the decoder's input ids, BOS then targets[:, :-1],
  // when targets is given) through pinned staging to the device, on the network's stream.
  void stage_inputs(float* device_images /* (B, 3, in_h, in_w) */, int32_t* device_targets /* (B, T) */,
                    int32_t* device_ids /* (B, T) */, const float* images, const int32_t* targets, int64_t B) {
    SAFL_CUDA_CHECK(cudaStreamSynchronize(stream.handle));  // the staging buffers are free again
    const size_t image_floats = size_t(B * 3 * config.in_h * config.in_w);
    float* staged = staged_images.reserve(image_floats);
    std::memcpy(staged, images, sizeof(float) * image_floats);
    SAFL_CUDA_CHECK(cudaMemcpyAsync(device_images, staged, sizeof(float) * image_floats, cudaMemcpyHostToDevice,
                                    stream.handle));
    if (!targets) return;
    const int64_t T = config.tgt_len();
    int32_t* ids = staged_ids.reserve(size_t(2 * B * T));
    std::memcpy(ids, targets, sizeof(int32_t) * size_t(B * T));
    int32_t* decoder_ids = ids + B * T;
    for (int64_t b = 0; b < B; ++b) {
      decoder_ids[b * T] = int32_t(config.bos());
      for (int64_t t = 1; t < T; ++t) decoder_ids[b * T + t] = targets[b * T + t - 1];
    }
    SAFL_CUDA_CHECK(cudaMemcpyAsync(device_targets, ids, sizeof(int32_t) * size_t(B * T), cudaMemcpyHostToDevice,
                                    stream.handle));
    SAFL_CUDA_CHECK(cudaMemcpyAsync(device_ids, decoder_ids, sizeof(int32_t) * size_t(B * T),
                                    cudaMemcpyHostToDevice, stream.handle));
  }

  // features (B, S, d) = proj(sequence) (or the sequence itself) + positions.
  void encoder_input(float* features, const float* sequence, int64_t B) {
    const int64_t S = config.seq_len(), d = config.d_model;
    if (refs.has_proj) {
      cuda::linear_forward(features, sequence, params.data() + refs.proj.weight, params.data() + refs.proj.bias,
                           B * S, refs.proj.in, d);
    } else {
      cuda_net::copy(features, sequence, B * S * d);
    }
    cuda::add_positions(features, features, positions.data(), B, S, d);
  }

  // ---- training ----------------------------------------------------------------------------------

  // Every buffer a training step uses on the device: its inputs, the activations saved for the
  // backward (the CPU network's TrainPlan) and the backward's scratch.
  struct TrainPlan {
    float* images = nullptr;      // (B, 3, in_h, in_w)
    int32_t* targets = nullptr;   // (B, T)
    int32_t* ids = nullptr;       // (B, T) decoder input ids
    net::CnnTrainActs cnn;
    net::CnnGrads cnn_grads;      // pool[0] is also the forward's scratch
    float* workspace = nullptr;   // (cuda_net::cnn_conv_workspace(B)) convolution scratch
    float* features = nullptr;    // (B, S, d) encoder input
    std::vector<net::EncoderLayerActs> encoder;
    net::NormActs encoder_norm;   // out = memory (B, S, d)
    float* decoder_in = nullptr;  // (B, T, d)
    std::vector<net::DecoderLayerActs> decoder;
    net::NormActs decoder_norm;   // out (B, T, d)
    float* logits = nullptr;      // (B, T, C)
    net::TransformerGrads grads;
    float* dlogits = nullptr;     // (B, T, C)
    float* dsequence = nullptr;   // (B, S, C4) when there is a projection
    float* loss = nullptr;        // (1)
    int32_t* correct = nullptr;   // (1)
  };

  void carve_train(net::Carver& c, TrainPlan& p, int64_t B) {
    const int64_t S = config.seq_len(), T = config.tgt_len(), d = config.d_model;
    const bool dropout = config.dropout > 0.0f;
    p.images = c.floats(B * 3 * config.in_h * config.in_w);
    p.targets = c.ints(B * T);
    p.ids = c.ints(B * T);
    net::carve_cnn_train(c, p.cnn, config, refs, B);
    net::carve_cnn_grads(c, p.cnn_grads, config, refs, B);
    p.workspace = c.floats(cuda_net::cnn_conv_workspace(refs, B));
    p.features = c.floats(B * S * d);
    p.encoder.resize(refs.encoder.size());
    for (auto& a : p.encoder) net::carve_encoder_layer(c, a, dims, B, S, dropout);
    net::carve_norm(c, p.encoder_norm, B * S, d);
    p.decoder_in = c.floats(B * T * d);
    p.decoder.resize(refs.decoder.size());
    for (auto& a : p.decoder) net::carve_decoder_layer(c, a, dims, B, T, S, dropout);
    net::carve_norm(c, p.decoder_norm, B * T, d);
    p.logits = c.floats(B * T * config.num_classes);
    net::carve_transformer_grads(c, p.grads, dims, B, S, T);
    p.dlogits = c.floats(B * T * config.num_classes);
    p.dsequence = refs.has_proj ? c.floats(B * S * config.res_channels.back()) : nullptr;
    p.loss = c.floats(1);
    p.correct = c.ints(1);
  }

  // Training-mode forward into p.logits (batch statistics, running statistics updated, dropout).
  void forward_train(TrainPlan& p, int64_t B, uint64_t seed) {
    folded_stale = true;
    const int64_t S = config.seq_len(), T = config.tgt_len(), d = config.d_model;
    const float* P = params.data();
    const net::Dropout dropout{config.dropout, seed};
    cuda_net::cnn_forward_train(p.cnn, weights(), config, refs, p.images, grid_matrix.data(), p.cnn_grads.pool[0],
                                p.workspace, B);
    encoder_input(p.features, p.cnn.sequence, B);
    const float* x = p.features;
    for (size_t l = 0; l < refs.encoder.size(); ++l) {
      cuda_net::encoder_layer_forward(p.encoder[l], P, refs.encoder[l], x, dims, B, S, dropout, int64_t(l));
      x = p.encoder[l].norm2.out;
    }
    cuda_net::norm_forward(p.encoder_norm, P, refs.encoder_norm, x, B * S, d);
    cuda::embedding_forward(p.decoder_in, p.ids, P + refs.embed, B * T, config.num_classes + 1, d);
    cuda::add_positions(p.decoder_in, p.decoder_in, positions.data(), B, T, d);
    const float* y = p.decoder_in;
    for (size_t l = 0; l < refs.decoder.size(); ++l) {
      cuda_net::decoder_layer_forward(p.decoder[l], P, refs.decoder[l], y, p.encoder_norm.out, dims, B, T, S,
                                      dropout, int64_t(l));
      y = p.decoder[l].norm3.out;
    }
    cuda_net::norm_forward(p.decoder_norm, P, refs.decoder_norm, y, B * T, d);
    cuda::linear_forward(p.logits, p.decoder_norm.out, P + refs.classifier.weight, P + refs.classifier.bias, B * T,
                         d, config.num_classes);
  }

  // Backward of everything from p.dlogits; parameter gradients accumulate into grads.
  void backward(TrainPlan& p, int64_t B) {
    const int64_t S = config.seq_len(), T = config.tgt_len(), d = config.d_model;
    const float* P = params.data();
    float* G = grads.data();
    net::TransformerGrads& g = p.grads;
    cuda::linear_backward(g.dx, G + refs.classifier.weight, G + refs.classifier.bias, p.dlogits,
                          p.decoder_norm.out, P + refs.classifier.weight, B * T, d, config.num_classes);
    const float* last_decoder = refs.decoder.empty() ? p.decoder_in : p.decoder.back().norm3.out;
    cuda_net::norm_backward(G, g.dx, p.decoder_norm, P, refs.decoder_norm, last_decoder, B * T, d);
    SAFL_CUDA_CHECK(cudaMemsetAsync(g.dmemory, 0, sizeof(float) * size_t(B * S * d)));
    for (size_t l = refs.decoder.size(); l-- > 0;)
      cuda_net::decoder_layer_backward(G, g, p.decoder[l], P, refs.decoder[l], p.encoder_norm.out, dims, B, T, S);
    cuda::embedding_backward(G + refs.embed, g.dx, p.ids, B * T, config.num_classes + 1, d);

    const float* last_encoder = refs.encoder.empty() ? p.features : p.encoder.back().norm2.out;
    cuda_net::norm_backward(G, g.dmemory, p.encoder_norm, P, refs.encoder_norm, last_encoder, B * S, d);
    cuda_net::copy(g.dx, g.dmemory, B * S * d);
    for (size_t l = refs.encoder.size(); l-- > 0;)
      cuda_net::encoder_layer_backward(G, g, p.encoder[l], P, refs.encoder[l], dims, B, S);
    // The positions are constants: g.dx is the gradient of the projected features.
    const float* dsequence = g.dx;
    if (refs.has_proj) {
      cuda::linear_backward(p.dsequence, G + refs.proj.weight, G + refs.proj.bias, g.dx, p.cnn.sequence,
                            P + refs.proj.weight, B * S, refs.proj.in, d);
      dsequence = p.dsequence;
    }
    cuda_net::cnn_backward(G, p.cnn, p.cnn_grads, weights(), config, refs, p.images, grid_matrix.data(), dsequence,
                           p.workspace, B);
  }

  // ---- inference ---------------------------------------------------------------------------------

  struct EncoderPlan {
    float* images = nullptr;      // (B, 3, in_h, in_w)
    net::CnnInferBuffers cnn;
    float* features = nullptr;    // (B, S, d)
    net::EncoderLayerActs layer;  // shared by all layers, Note [inference reuses one layer's buffers]
    net::NormActs norm;           // out = memory (B, S, d)
  };

  void carve_encoder(net::Carver& c, EncoderPlan& p, int64_t B) {
    const int64_t S = config.seq_len();
    p.images = c.floats(B * 3 * config.in_h * config.in_w);
    cuda_net::carve_cnn_infer(c, p.cnn, config, refs, B);
    p.features = c.floats(B * S * config.d_model);
    net::carve_encoder_layer(c, p.layer, dims, B, S, /*dropout=*/false);
    net::carve_norm(c, p.norm, B * S, config.d_model);
  }

  // Inference encoder of the staged p.images: returns the memory (B, S, d).
  const float* encode(EncoderPlan& p, int64_t B) {
    const int64_t S = config.seq_len();
    cuda_net::cnn_forward_infer(p.cnn, weights(), config, refs, p.images, grid_matrix.data(), B);
    encoder_input(p.features, p.cnn.sequence, B);
    const float* x = p.features;
    for (size_t l = 0; l < refs.encoder.size(); ++l) {
      cuda_net::encoder_layer_forward(p.layer, params.data(), refs.encoder[l], x, dims, B, S, net::Dropout{},
                                      int64_t(l));
      x = p.layer.norm2.out;
    }
    cuda_net::norm_forward(p.norm, params.data(), refs.encoder_norm, x, B * S, config.d_model);
    return p.norm.out;
  }

  void forward_infer(float* logits, const float* images, const int32_t* targets, int64_t B) {
    ensure_folded();
    const int64_t S = config.seq_len(), T = config.tgt_len(), d = config.d_model, C = config.num_classes;
    EncoderPlan encoder;
    int32_t* device_targets = nullptr;
    int32_t* ids = nullptr;
    float* decoder_in = nullptr;
    net::DecoderLayerActs layer;
    net::NormActs norm;
    float* device_logits = nullptr;
    arena.carve([&](net::Carver& c) {
      carve_encoder(c, encoder, B);
      device_targets = c.ints(B * T);
      ids = c.ints(B * T);
      decoder_in = c.floats(B * T * d);
      net::carve_decoder_layer(c, layer, dims, B, T, S, /*dropout=*/false);
      net::carve_norm(c, norm, B * T, d);
      device_logits = c.floats(B * T * C);
    });
    stage_inputs(encoder.images, device_targets, ids, images, targets, B);
    const float* memory = encode(encoder, B);
    const float* P = params.data();
    cuda::embedding_forward(decoder_in, ids, P + refs.embed, B * T, C + 1, d);
    cuda::add_positions(decoder_in, decoder_in, positions.data(), B, T, d);
    const float* y = decoder_in;
    for (size_t l = 0; l < refs.decoder.size(); ++l) {
      cuda_net::decoder_layer_forward(layer, P, refs.decoder[l], y, memory, dims, B, T, S, net::Dropout{},
                                      int64_t(l));
      y = layer.norm3.out;
    }
    cuda_net::norm_forward(norm, P, refs.decoder_norm, y, B * T, d);
    cuda::linear_forward(device_logits, norm.out, P + refs.classifier.weight, P + refs.classifier.bias, B * T, d, C);
    download_to_host(logits, device_logits, B * T * C);
  }

  // Copies n floats from the device to (pageable) host memory and waits for them.
  void download_to_host(float* host, const float* device_floats, int64_t n) {
    if (n == 0) return;
    SAFL_CUDA_CHECK(cudaMemcpyAsync(host, device_floats, sizeof(float) * size_t(n), cudaMemcpyDeviceToHost,
                                    stream.handle));
    SAFL_CUDA_CHECK(cudaStreamSynchronize(stream.handle));
  }
};

CudaNetwork::CudaNetwork(const Network& host, int device) : impl_(std::make_unique<Impl>(host, device)) {}
CudaNetwork::~CudaNetwork() = default;

const Config& CudaNetwork::config() const { return impl_->config; }
const Layout& CudaNetwork::layout() const { return impl_->layout; }

std::vector<Decoded> CudaNetwork::recognize(const float* images, int64_t B, int64_t beam_width) {
  Impl& m = *impl_;
  SAFL_CHECK_RANGE(B >= 0, "CudaNetwork::recognize: expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(beam_width >= 1 && beam_width <= m.config.num_classes,
                   "CudaNetwork::recognize: expected beam_width between 1 and ", m.config.num_classes,
                   " but received ", beam_width);
  SAFL_CHECK(beam_width == 1, "CudaNetwork::recognize: beam search (beam_width ", beam_width,
             ") runs on the CPU backend only; use beam_width 1 (greedy) on CUDA");
  if (B == 0) return {};
  m.use_device();
  m.ensure_folded();
  Impl::EncoderPlan encoder;
  net::DecodeBuffers decode;
  cuda_net::GreedyState greedy;
  m.arena.carve([&](net::Carver& c) {
    m.carve_encoder(c, encoder, B);
    net::carve_decode(c, decode, m.config, B, /*beam_width=*/1);
    cuda_net::carve_greedy(c, greedy, m.config, B);
  });
  m.stage_inputs(encoder.images, nullptr, nullptr, images, nullptr, B);
  const float* memory = m.encode(encoder, B);
  return cuda_net::greedy_decode(decode, greedy, m.params.data(), m.config, m.refs, memory, m.positions.data(), B,
                                 m.stream.handle, m.pinned_count.reserve(1));
}

void CudaNetwork::forward(float* logits, const float* images, const int32_t* targets, int64_t B, bool training,
                          uint64_t dropout_seed) {
  Impl& m = *impl_;
  SAFL_CHECK_RANGE(B >= 0, "CudaNetwork::forward: expected B >= 0 but received ", B);
  m.check_targets("CudaNetwork::forward", targets, B);
  m.use_device();
  if (!training) {
    if (B > 0) m.forward_infer(logits, images, targets, B);
    return;
  }
  SAFL_CHECK_RANGE(B >= 2, "CudaNetwork::forward: expected B >= 2 in training (batch statistics) but received ", B);
  Impl::TrainPlan plan;
  m.arena.carve([&](net::Carver& c) { m.carve_train(c, plan, B); });
  m.stage_inputs(plan.images, plan.targets, plan.ids, images, targets, B);
  m.forward_train(plan, B, dropout_seed);
  m.download_to_host(logits, plan.logits, B * m.config.tgt_len() * m.config.num_classes);
}

float CudaNetwork::forward_backward(const float* images, const int32_t* targets, int64_t B, float gamma,
                                    float alpha, uint64_t dropout_seed, int64_t* correct) {
  Impl& m = *impl_;
  SAFL_CHECK_RANGE(B >= 2, "CudaNetwork::forward_backward: expected B >= 2 (batch statistics) but received ", B);
  m.check_targets("CudaNetwork::forward_backward", targets, B);
  check_focal_loss_arguments(B * m.config.tgt_len(), m.config.num_classes, gamma, alpha, 1.0f);
  m.use_device();
  m.grads.zero();
  Impl::TrainPlan plan;
  m.arena.carve([&](net::Carver& c) { m.carve_train(c, plan, B); });
  m.stage_inputs(plan.images, plan.targets, plan.ids, images, targets, B);
  m.forward_train(plan, B, dropout_seed);
  const int64_t N = B * m.config.tgt_len(), C = m.config.num_classes;
  const int32_t pad = int32_t(m.config.pad());
  cuda::focal_loss(plan.loss, nullptr, plan.dlogits, plan.logits, plan.targets, N, C, pad, gamma, alpha, 1.0f);
  if (correct) {
    SAFL_CUDA_CHECK(cudaMemsetAsync(plan.correct, 0, sizeof(int32_t)));
    const unsigned blocks = unsigned((N + cuda_net::kRowsPerBlock - 1) / cuda_net::kRowsPerBlock);
    cuda_net::count_correct_kernel<<<blocks, cuda_net::kRowsPerBlock * cuda_net::kWarp>>>(
        plan.correct, plan.logits, plan.targets, int(N), int(C), pad);
    SAFL_CUDA_CHECK_LAUNCH();
  }
  m.backward(plan, B);
  float* loss = m.pinned_loss.reserve(1);
  int32_t* hits = m.pinned_count.reserve(1);
  SAFL_CUDA_CHECK(cudaMemcpyAsync(loss, plan.loss, sizeof(float), cudaMemcpyDeviceToHost, m.stream.handle));
  if (correct)
    SAFL_CUDA_CHECK(cudaMemcpyAsync(hits, plan.correct, sizeof(int32_t), cudaMemcpyDeviceToHost, m.stream.handle));
  SAFL_CUDA_CHECK(cudaStreamSynchronize(m.stream.handle));
  if (correct) *correct = *hits;
  return *loss;
}

double CudaNetwork::grad_norm() {
  Impl& m = *impl_;
  m.use_device();
  return cuda::grad_norm(m.grads.data(), m.layout.param_floats);
}

void CudaNetwork::adam_step(int64_t step, float grad_scale, const AdamOptions& options) {
  Impl& m = *impl_;
  m.use_device();
  cuda::adam_step(m.params.data(), m.adam_m.data(), m.adam_v.data(), m.grads.data(), m.layout.param_floats, step,
                  grad_scale, options);
  m.folded_stale = true;
}

void CudaNetwork::download(Network& host) const {
  Impl& m = *impl_;
  SAFL_CHECK(host.layout().param_floats == m.layout.param_floats &&
                 host.layout().buffer_floats == m.layout.buffer_floats,
             "CudaNetwork::download: expected a network of the same layout (", m.layout.param_floats,
             " parameters, ", m.layout.buffer_floats, " buffer floats) but received one of ",
             host.layout().param_floats, " and ", host.layout().buffer_floats);
  m.use_device();
  m.params.download(host.params());
  m.buffers.download(host.buffers());
}

void CudaNetwork::download_grads(float* grads) const {
  impl_->use_device();
  impl_->grads.download(grads);
}

void CudaNetwork::download_moments(float* m, float* v) const {
  impl_->use_device();
  impl_->adam_m.download(m);
  impl_->adam_v.download(v);
}

void CudaNetwork::upload_moments(const float* m, const float* v) {
  impl_->use_device();
  impl_->adam_m.upload(m);
  impl_->adam_v.upload(v);
}

void CudaNetwork::download_buffers(float* buffers) const {
  impl_->use_device();
  impl_->buffers.download(buffers);
}

void CudaNetwork::upload_buffers(const float* buffers) {
  impl_->use_device();
  impl_->buffers.upload(buffers);
  impl_->folded_stale = true;  // Note [device folded copy]
}

}  // namespace safl::model
