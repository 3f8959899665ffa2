// The SAFL network on the CUDA backend: the same computation as model::Network (network.h), with
// every tensor on the device and every op a hand-written kernel of native/cuda/ (no cuBLAS or
// cuDNN). Built only with the CUDA backend (SAFL_WITH_CUDA); this header names no CUDA type, so
// plain C++ (the addon, the tests) can include it.
//
// Device memory (issue 6): the parameters, the gradients, Adam's two moments and the batch-norm
// buffers each live in one device allocation laid out by model/layout.h (the same offsets as on
// the CPU); activations live in one arena sized for the largest batch seen so far. Image batches
// are staged through pinned host memory and copied on the network's stream. Decoding keeps its
// key/value caches on the device.
//
// Thread safety: one call at a time per CudaNetwork (callers serialise, as for Network).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/network.h"
#include "ops/optimizer.h"

namespace safl::model {

// Whether a CUDA device answers; when not, *reason says why (the CUDA runtime's message).
bool cuda_device_available(std::string* reason);

class CudaNetwork {
 public:
  // Copies host's parameters and batch-norm buffers to device `device`. Throws safl::Error (never
  // aborts) when no device answers or memory runs out, with the CUDA runtime's message.
  explicit CudaNetwork(const Network& host, int device = 0);
  ~CudaNetwork();
  CudaNetwork(const CudaNetwork&) = delete;
  CudaNetwork& operator=(const CudaNetwork&) = delete;

  const Config& config() const;
  const Layout& layout() const;

  // ---- inference (Network::recognize) ---------------------------------------------------------
  // images: host (B, 3, in_h, in_w) in [-1, 1]. Greedy decoding with device key/value caches,
  // stopping when every sequence has emitted EOS. Beam search runs on the CPU backend only:
  // beam_width > 1 throws (the TypeScript layer picks the CPU for it).
  std::vector<Decoded> recognize(const float* images, int64_t B, int64_t beam_width = 1);

  // ---- teacher forcing (Network::forward / forward_backward) ---------------------------------
  // logits: host (B, T, num_classes). targets: host (B, T).
  void forward(float* logits, const float* images, const int32_t* targets, int64_t B, bool training,
               uint64_t dropout_seed);
  // Zeroes the device gradients, fills them with the gradient of the mean focal loss, returns the
  // loss (and the count of correct non-PAD tokens in *correct when given).
  float forward_backward(const float* images, const int32_t* targets, int64_t B, float gamma, float alpha,
                         uint64_t dropout_seed, int64_t* correct = nullptr);

  // ---- optimisation ----------------------------------------------------------------------------
  // The global gradient norm of the device gradients (Note [deterministic gradient norm]).
  double grad_norm();
  // One Adam/AdamW step t on the device over params with the device moments (zero at first).
  void adam_step(int64_t step, float grad_scale, const AdamOptions& options);

  // ---- host copies (saving, checkpoints, tests) -----------------------------------------------
  void download(Network& host) const;                    // parameters and batch-norm buffers
  void download_grads(float* grads) const;               // (layout().param_floats)
  void download_moments(float* m, float* v) const;       // each (layout().param_floats)
  void upload_moments(const float* m, const float* v);   // resuming a checkpoint
  // The batch-norm running statistics alone, (layout().buffer_floats): the trainer saves them
  // before each step and puts them back after a skipped one (Note [skipped steps leave the state
  // unchanged] in native/addon/train_binding.cpp), without copying the parameters.
  void download_buffers(float* buffers) const;
  void upload_buffers(const float* buffers);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace safl::model
