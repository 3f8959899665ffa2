// Greedy decoding of the SAFL network on CUDA, with the key/value caches on the device: the
// computation of native/model/network_decode.cpp at beam width 1 (one row per image).
//
// Each step runs the decoder on every row's last token (BOS first), appends each row's self-
// attention key and value at position t of the per-layer cache (B, tgt_len, 2d), and picks the
// argmax of the logits (ties to the lower class index) in one kernel that also records the token,
// its probability exp(log-softmax) and whether the row is done. The number of rows still live comes
// back to the host once per step (one small copy and one synchronisation) and decoding stops when
// it is zero; the tokens and probabilities are copied back once at the end.
//
// Note [finished rows keep running]: the CPU drops finished images from the batch; here a finished
// row stays in place and is computed along with the others until every row is done, its outputs
// ignored by the select kernel. Every op of a step is row-wise in the images (attention is per
// image), so the live rows' results do not depend on the finished ones, and nothing needs
// compacting. The per-row rules are the CPU's (Note [the last position holds only EOS] and
// Note [confidence] in network_decode.cpp): an EOS finishes the row with EOS's probability; at the
// last position (t = tgt_len − 1) any other token is not appended and the row ends unfinished.
#include <algorithm>
#include <cmath>

#include "cuda/network_cuda_internal.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/layernorm.h"
#include "ops/linear.h"
#include "ops/softmax.h"

namespace safl::model::cuda_net {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // one warp per row in the select kernel

__global__ void init_greedy_kernel(int32_t* ids, int32_t* lengths, float* eos_prob, int32_t* done, int B,
                                   int32_t bos) {
  const int row = blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= B) return;
  ids[row] = bos;
  lengths[row] = 0;
  eos_prob[row] = -1.0f;
  done[row] = 0;
}

// cache[row, t, :] = qkv[row, d:3d]: the row's new key and value.
__global__ void append_kv_kernel(float* cache /* (B, T, 2d) */, const float* qkv /* (B, 3d) */, int B, int T,
                                 int d, int t) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t per_row = 2 * int64_t(d);
  if (i >= int64_t(B) * per_row) return;
  const int64_t row = i / per_row, col = i % per_row;
  cache[(row * T + t) * per_row + col] = qkv[row * 3 * d + d + col];
}

// One warp per row not yet done: argmax of the logits (ties to the lower index, as the CPU's
// std::partial_sort with index tie-break), its probability exp(logprob), then the row's update.
__global__ void greedy_select_kernel(int32_t* ids /* (B) next input */, int32_t* tokens /* (B, max_len) */,
                                     float* probs /* (B, max_len) */, int32_t* lengths /* (B) */,
                                     float* eos_prob /* (B) */, int32_t* done /* (B) */, int32_t* live /* (1) */,
                                     const float* logits /* (B, C) */, const float* logprobs /* (B, C) */, int B,
                                     int C, int max_len, int32_t eos, bool last) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= B || done[row]) return;
  const float* z = logits + int64_t(row) * C;
  float best = -INFINITY;
  int best_index = C;  // above every real index, so any class replaces it
  for (int c = lane; c < C; c += kWarp) {  // ascending c: a tie keeps the lower index
    const float v = z[c];
    if (best_index == C || v > best) {
      best = v;
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
  if (lane != 0) return;
  const int32_t token = best_index;
  const float p = expf(logprobs[int64_t(row) * C + token]);
  if (token == eos) {
    eos_prob[row] = p;
    done[row] = 1;
  } else if (last) {  // Note [the last position holds only EOS] in network_decode.cpp
    done[row] = 1;
  } else {
    const int length = lengths[row];
    tokens[int64_t(row) * max_len + length] = token;
    probs[int64_t(row) * max_len + length] = p;
    lengths[row] = length + 1;
    ids[row] = token;
    atomicAdd(live, 1);
  }
}

// One decoder step at position t for B rows: b.ids (B) → b.logits, b.logprobs (B, C). Appends each
// row's key and value at position t of the caches.
void decoder_step(net::DecodeBuffers& b, const float* P, const Config& config, const Refs& refs,
                  const float* positions, int64_t t, int64_t B) {
  const int64_t d = config.d_model, H = config.heads, Dh = config.head_dim();
  const int64_t T = config.tgt_len(), S = config.seq_len(), C = config.num_classes;
  const Dims dims{d, H, config.ffn};
  const Dropout none;
  net::AddNormActs norm{nullptr, b.sum, b.mean, b.rstd, b.x};  // x = LN(x + proj)
  net::FfnActs ffn{b.hidden, nullptr, b.hidden, b.proj};        // proj = FFN(x)
  cuda::embedding_forward(b.x, b.ids, P + refs.embed, B, C + 1, d);
  cuda::add_positions(b.x, b.x, positions + t * d, B, 1, d);
  for (size_t l = 0; l < refs.decoder.size(); ++l) {
    const DecoderLayerRef& r = refs.decoder[l];
    float* cache = b.cache[l];
    cuda::linear_forward(b.qkv, b.x, P + r.self_in_proj.weight, P + r.self_in_proj.bias, B, d, 3 * d);
    const int64_t appended = B * 2 * d;
    append_kv_kernel<<<cuda::grid_1d(size_t(appended)), cuda::kBlock1D>>>(cache, b.qkv, int(B), int(T), int(d),
                                                                          int(t));
    SAFL_CUDA_CHECK_LAUNCH();
    cuda::attention_forward(b.attn, b.lse, b.qkv, cache, cache + d, B, 1, t + 1, H, Dh, 3 * d, 2 * d, T,
                            /*causal=*/false);
    cuda::linear_forward(b.proj, b.attn, P + r.self_out_proj.weight, P + r.self_out_proj.bias, B, d, d);
    cuda_net::add_norm_forward(norm, P, r.norm1, b.x, b.proj, B, d, none, 0);

    float* q = b.qkv;  // (B, 1, d)
    cuda::linear_forward(q, b.x, P + r.cross_q_proj.weight, P + r.cross_q_proj.bias, B, d, d);
    cuda::attention_forward(b.attn, b.lse, q, b.cross_kv[l], b.cross_kv[l] + d, B, 1, S, H, Dh, d, 2 * d, S,
                            /*causal=*/false);
    cuda::linear_forward(b.proj, b.attn, P + r.cross_out_proj.weight, P + r.cross_out_proj.bias, B, d, d);
    cuda_net::add_norm_forward(norm, P, r.norm2, b.x, b.proj, B, d, none, 0);

    cuda_net::ffn_forward(ffn, P, r.fc1, r.fc2, b.x, dims, B, none, 0);
    cuda_net::add_norm_forward(norm, P, r.norm3, b.x, b.proj, B, d, none, 0);
  }
  cuda::layernorm_forward(b.sum, b.mean, b.rstd, b.x, P + refs.decoder_norm.gamma, P + refs.decoder_norm.beta, B,
                          d, net::kLayerNormEps);
  cuda::linear_forward(b.logits, b.sum, P + refs.classifier.weight, P + refs.classifier.bias, B, d, C);
  cuda::log_softmax_forward(b.logprobs, b.logits, B, C);
}

}  // namespace

void carve_greedy(Carver& c, GreedyState& s, const Config& config, int64_t B) {
  s.tokens = c.ints(B * config.max_len);
  s.probs = c.floats(B * config.max_len);
  s.lengths = c.ints(B);
  s.eos_prob = c.floats(B);
  s.done = c.ints(B);
  s.live = c.ints(1);
}

std::vector<Decoded> greedy_decode(net::DecodeBuffers& b, GreedyState& s, const float* P, const Config& config,
                                   const Refs& refs, const float* memory, const float* positions, int64_t B,
                                   cudaStream_t copy_stream, int32_t* pinned_live) {
  const int64_t d = config.d_model, S = config.seq_len(), T = config.tgt_len(), C = config.num_classes;
  const int64_t max_len = config.max_len;
  for (size_t l = 0; l < refs.decoder.size(); ++l) {
    const LinearRef& kv = refs.decoder[l].cross_kv_proj;
    cuda::linear_forward(b.cross_kv[l], memory, P + kv.weight, P + kv.bias, B * S, d, 2 * d);
  }
  init_greedy_kernel<<<cuda::grid_1d(size_t(B)), cuda::kBlock1D>>>(b.ids, s.lengths, s.eos_prob, s.done, int(B),
                                                                    int32_t(config.bos()));
  SAFL_CUDA_CHECK_LAUNCH();
  const unsigned select_blocks = unsigned((B + kRowsPerBlock - 1) / kRowsPerBlock);
  for (int64_t t = 0; t < T; ++t) {
    decoder_step(b, P, config, refs, positions, t, B);
    SAFL_CUDA_CHECK(cudaMemsetAsync(s.live, 0, sizeof(int32_t)));
    greedy_select_kernel<<<select_blocks, kRowsPerBlock * kWarp>>>(b.ids, s.tokens, s.probs, s.lengths, s.eos_prob,
                                                                    s.done, s.live, b.logits, b.logprobs, int(B),
                                                                    int(C), int(max_len), int32_t(config.eos()),
                                                                    t == T - 1);
    SAFL_CUDA_CHECK_LAUNCH();
    SAFL_CUDA_CHECK(cudaMemcpyAsync(pinned_live, s.live, sizeof(int32_t), cudaMemcpyDeviceToHost, copy_stream));
    SAFL_CUDA_CHECK(cudaStreamSynchronize(copy_stream));
    if (*pinned_live == 0) break;
  }

  std::vector<int32_t> tokens(B * max_len), lengths(B);
  std::vector<float> probs(B * max_len), eos_prob(B);
  SAFL_CUDA_CHECK(cudaMemcpyAsync(tokens.data(), s.tokens, sizeof(int32_t) * tokens.size(), cudaMemcpyDeviceToHost,
                                  copy_stream));
  SAFL_CUDA_CHECK(cudaMemcpyAsync(probs.data(), s.probs, sizeof(float) * probs.size(), cudaMemcpyDeviceToHost,
                                  copy_stream));
  SAFL_CUDA_CHECK(cudaMemcpyAsync(lengths.data(), s.lengths, sizeof(int32_t) * B, cudaMemcpyDeviceToHost,
                                  copy_stream));
  SAFL_CUDA_CHECK(cudaMemcpyAsync(eos_prob.data(), s.eos_prob, sizeof(float) * B, cudaMemcpyDeviceToHost,
                                  copy_stream));
  SAFL_CUDA_CHECK(cudaStreamSynchronize(copy_stream));

  std::vector<Decoded> results(B);
  for (int64_t row = 0; row < B; ++row) {
    Decoded& r = results[row];
    r.tokens.assign(tokens.begin() + row * max_len, tokens.begin() + row * max_len + lengths[row]);
    r.probs.assign(probs.begin() + row * max_len, probs.begin() + row * max_len + lengths[row]);
    float confidence = 1.0f;  // Note [confidence] in network_decode.cpp
    for (const float p : r.probs) confidence *= p;
    if (eos_prob[row] >= 0.0f) confidence *= eos_prob[row];
    r.confidence = confidence;
  }
  return results;
}

}  // namespace safl::model::cuda_net
