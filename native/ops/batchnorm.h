// Batch normalisation over (B, C, H, W), NCHW float32, as PyTorch's BatchNorm2d; with H = W = 1
// the same ops are BatchNorm1d over (B, C). Statistics are per channel over the B·H·W values.
//
// Training forward normalises with the batch mean and the biased variance, saves the mean and
// 1/sqrt(var + eps) for backward, and updates the running statistics in place as PyTorch does:
//     running_mean = (1 − momentum)·running_mean + momentum·mean
//     running_var  = (1 − momentum)·running_var  + momentum·var·n/(n − 1)   (unbiased, n = B·H·W)
// The model uses eps = kBatchNormEps and momentum = kBatchNormMomentum (PyTorch's defaults).
// Training needs n > 1 (PyTorch's rule); n = 0 does nothing, leaving the running statistics as
// they were. Inference forward uses the running statistics.
//
// Backward (training mode, through the batch statistics): dgamma and dbeta ACCUMULATE (+=); dx is
// WRITTEN (=). dx may be the same buffer as dout.
//
// batchnorm_fold (CPU only: the model folds on the host when it loads a model for inference)
// merges an inference-mode batch norm into the convolution or linear layer before it.
#pragma once
#include "ops/backend.h"

namespace safl {
constexpr float kBatchNormEps = 1e-5f;
constexpr float kBatchNormMomentum = 0.1f;
}  // namespace safl

#define SAFL_BATCHNORM_DECLS                                                                      \
  void batchnorm_forward_train(                                                                   \
      float* out /* (B, C, H, W) */, float* saved_mean /* (C) */, float* saved_inv_std /* (C) */, \
      float* running_mean /* (C) updated in place */, float* running_var /* (C) updated in place */, \
      const float* x /* (B, C, H, W) */, const float* gamma /* (C) */, const float* beta /* (C) */, \
      int64_t B, int64_t C, int64_t H, int64_t W, float eps, float momentum);                     \
                                                                                                  \
  void batchnorm_forward_inference(                                                               \
      float* out /* (B, C, H, W) */, const float* x /* (B, C, H, W) */, const float* gamma /* (C) */, \
      const float* beta /* (C) */, const float* running_mean /* (C) */,                           \
      const float* running_var /* (C) */, int64_t B, int64_t C, int64_t H, int64_t W, float eps);  \
                                                                                                  \
  void batchnorm_backward(                                                                        \
      float* dx /* (B, C, H, W) written, may alias dout */, float* dgamma /* (C) accumulated */,   \
      float* dbeta /* (C) accumulated */, const float* saved_mean /* (C) */,                      \
      const float* saved_inv_std /* (C) */, const float* dout /* (B, C, H, W) */,                 \
      const float* x /* (B, C, H, W) */, const float* gamma /* (C) */, int64_t B, int64_t C,      \
      int64_t H, int64_t W);
SAFL_DECLARE_FOR_BACKENDS(SAFL_BATCHNORM_DECLS)
#undef SAFL_BATCHNORM_DECLS

namespace safl::cpu {
// Folds out = BN(conv(x)) (BN in inference mode) into one conv: with s = gamma / sqrt(var + eps),
//     folded_weight[co, :] = weight[co, :]·s[co],  folded_bias[co] = (bias[co] − mean[co])·s[co] + beta[co].
// weights_per_channel = Ci·kernel_h·kernel_w for a conv, in_features for a linear layer whose
// weight is (out_features, in_features). The folded buffers may be the original ones (in place).
void batchnorm_fold(float* folded_weight /* (Co, weights_per_channel) */,
                    float* folded_bias /* (Co) */,
                    const float* weight /* (Co, weights_per_channel) */,
                    const float* bias /* (Co) or nullptr */, const float* gamma /* (Co) */,
                    const float* beta /* (Co) */, const float* running_mean /* (Co) */,
                    const float* running_var /* (Co) */, int64_t Co, int64_t weights_per_channel,
                    float eps);
}  // namespace safl::cpu
