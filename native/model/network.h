// The SAFL network on the CPU backend (DESIGN.md §1): localisation network → TPS grid → bilinear
// sampler → ResNet-45 → Transformer encoder → Transformer decoder → classifier, with focal loss.
// Parameters, gradients and Adam moments each live in one buffer laid out by model/layout.h.
//
// Two modes:
//   training  — batch norm uses batch statistics (and updates running stats), dropout is on;
//   inference — batch norm uses running statistics, no dropout.
// Decoding (greedy with a key/value cache, or beam search) always runs in inference mode.
//
// Thread safety: one call at a time per Network (callers serialise; the addon holds a mutex).
// Calls spread their work over the core's thread pool.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/layout.h"
#include "model/safetensors.h"

namespace safl::model {

// One decoded word: class indices of its characters (EOS not included), the probability of each,
// and the word confidence (the product of the character probabilities and of EOS's). Beam search
// also gives the other hypotheses that finished, most confident first, at most beam_width − 1
// (Note [alternatives] in network_decode.cpp); greedy decoding gives none.
struct Decoded {
  std::vector<int32_t> tokens;
  std::vector<float> probs;
  float confidence = 0.0f;
  std::vector<Decoded> alternatives;
};

class Network {
 public:
  explicit Network(const Config& config);  // parameters zero, batch-norm running var one
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  const Config& config() const;
  const Layout& layout() const;

  float* params();        // (layout().param_floats)
  float* grads();         // (layout().param_floats), allocated on first use
  float* buffers();       // (layout().buffer_floats): batch-norm running statistics
  const float* params() const;   // read-only views (copying to another backend, saving)
  const float* buffers() const;
  float* param(const std::string& name);   // throws when unknown
  float* grad(const std::string& name);
  float* buffer(const std::string& name);

  // Training from scratch: Kaiming-normal convolutions, Xavier-uniform Transformer matrices,
  // batch norm (1, 0), zero biases, and the localisation head at the identity transform
  // (fc2 weight zero, bias = the fiducial points with margin 0.01). Deterministic in `seed`.
  void init_random(uint64_t seed);

  // Copies every tensor of the layout from a parsed model file, checking shapes and finiteness
  // (errors name the tensor). Tensors in the file that the layout does not know are an error,
  // unless allow_extra: a training checkpoint also holds the optimizer's moments, which its
  // reader (native/addon/train_binding.cpp) takes and checks itself.
  void load(const SafeTensors& file, bool allow_extra = false);
  // The parameters and buffers as a safetensors file, float32 or float16.
  std::vector<uint8_t> save(DType dtype, const std::map<std::string, std::string>& metadata) const;

  // ---- inference -----------------------------------------------------------------------------
  // images (B, 3, in_h, in_w) in [-1, 1]. Greedy: stops when every sequence has emitted EOS or
  // after max_len + 1 steps. Beam search keeps beam_width hypotheses per image (1 = greedy).
  std::vector<Decoded> recognize(const float* images, int64_t B, int64_t beam_width = 1);

  // ---- teacher forcing -------------------------------------------------------------------------
  // targets (B, T) with T = tgt_len(): the characters, then EOS, then PAD. The decoder's input is
  // BOS followed by targets[:, :-1]. logits (B, T, num_classes).
  void forward(float* logits, const float* images, const int32_t* targets, int64_t B, bool training,
               uint64_t dropout_seed);

  // Training forward + focal-loss backward: zeroes grads(), fills them with the gradient of the
  // mean focal loss over non-PAD targets, returns that loss. gamma = 0, alpha = 1 is cross-entropy.
  // Optionally writes the number of correctly predicted non-PAD tokens (argmax) to *correct.
  float forward_backward(const float* images, const int32_t* targets, int64_t B, float gamma, float alpha,
                         uint64_t dropout_seed, int64_t* correct = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace safl::model
