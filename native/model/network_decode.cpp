// Decoding of the SAFL network (DESIGN.md §1 item 9): greedy and beam search over the decoder,
// one new token per hypothesis and step, with key/value caches.
//
// Rows. Each image still being decoded owns a group of beam_width consecutive rows (slots), one
// per live hypothesis; slots beyond its live count are inactive (they repeat slot 0's token and
// cache so that everything stays finite, and their outputs are ignored). The cross-attention keys
// and values of the memory are computed once per layer and image, (images, S, 2d), and a step's
// cross-attention is one attention call with the images as the batch and the beam_width slots as
// its queries. Self-attention keys and values of the tokens so far live in a per-layer cache
// (rows, tgt_len, 2d); a step appends one position and attends over t + 1 of them.
//
// Greedy is beam search with beam_width 1, so the two agree exactly by construction.
//
// Note [beam search]: hypotheses are scored by the sum, in double, of the log-probabilities of
// their tokens (EOS included; the log-softmax op's, exponentiated for the reported probabilities).
// Each step, every live hypothesis proposes its beam_width most likely tokens
// (ties to the lower class index, so beam_width 1 is argmax); an image's candidates are sorted by
// score (ties to the lower slot, then the more likely token). Walking them in that order, an EOS
// candidate among the first beam_width moves to the image's finished list; other candidates fill
// the next live slots up to beam_width. An image is done when no hypothesis is live or its best
// finished score is at least its best live score (scores only fall as tokens are added). The result
// is the best finished hypothesis, else the best live one.
//
// Note [alternatives]: with the result come the image's other finished hypotheses, by score (ties
// in the order they finished), at most beam_width − 1 of them: the readings a word prior can choose
// among (lib/dictionary.ts). They are the ones that finished before the search stopped, so a
// hypothesis still live then is not among them; words of the same length as the result, which
// finish at its step, usually are.
//
// Note [the last position holds only EOS]: labels have at most max_len characters, so position
// max_len (the tgt_len-th step) can only hold EOS. At that step an EOS candidate finishes a
// hypothesis as usual; any other token is not appended, and the hypothesis ends unfinished with
// its max_len characters. Every result therefore has at most max_len tokens.
//
// Note [confidence]: a result's confidence is the product of its characters' probabilities and,
// when it finished, EOS's: exp(score), computed as the float product in token order so that it is
// the same number for greedy and for beam search of width 1.
//
// Cache rows follow their hypotheses: after selection, new row r takes the cache of its parent
// row. When parents only move rows towards the front (images that finished are dropped; always
// the case for greedy) the caches are compacted in place; otherwise rows are gathered into the
// second cache and the two swap.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "common/threadpool.h"
#include "model/network_internal.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/layernorm.h"
#include "ops/linear.h"
#include "ops/softmax.h"

namespace safl::model::net {
namespace {

struct Hypothesis {
  std::vector<int32_t> tokens;  // characters (EOS not included)
  std::vector<float> probs;
  double score = 0.0;      // Σ log p, EOS included once finished
  float eos_prob = -1.0f;  // EOS's probability once finished, else negative
};

struct ImageState {
  int64_t image = 0;
  std::vector<Hypothesis> live;
  std::vector<Hypothesis> finished;
  bool done = false;
};

// A proposal: hypothesis `slot` extended by `token`.
struct Candidate {
  double score;
  int64_t slot, rank;
  int32_t token;
  float prob;
};

Decoded to_decoded(const Hypothesis& h) {
  Decoded d;
  d.tokens = h.tokens;
  d.probs = h.probs;
  float confidence = 1.0f;
  for (const float p : h.probs) confidence *= p;
  if (h.eos_prob >= 0.0f) confidence *= h.eos_prob;
  d.confidence = confidence;
  return d;
}

const Hypothesis* best_of(const std::vector<Hypothesis>& list) {
  const Hypothesis* best = nullptr;
  for (const Hypothesis& h : list)
    if (!best || h.score > best->score) best = &h;
  return best;
}

// An image's result once it is done: the best finished hypothesis with the other finished ones as
// its alternatives (Note [alternatives]), else the best live one.
Decoded result_of(ImageState& s, int64_t beam_width) {
  if (s.finished.empty()) return to_decoded(*best_of(s.live));
  std::stable_sort(s.finished.begin(), s.finished.end(),
                   [](const Hypothesis& a, const Hypothesis& b) { return a.score > b.score; });
  Decoded result = to_decoded(s.finished[0]);
  const size_t count = std::min(s.finished.size(), size_t(beam_width));
  for (size_t k = 1; k < count; ++k) result.alternatives.push_back(to_decoded(s.finished[k]));
  return result;
}

// One decoder step at position t for G groups of W rows: b.ids (G·W) → b.logprobs (G·W, C).
// Appends each row's key and value at position t of the caches. With packed weights (or nullptr)
// the weights' products read their panels (Note [packed decoder weights] in network.cpp).
void decoder_step(DecodeBuffers& b, const float* P, const PackedDecoder* packed, const Config& config,
                  const Refs& refs, const float* positions, int64_t t, int64_t G, int64_t W) {
  const int64_t n = G * W, d = config.d_model, H = config.heads, Dh = config.head_dim();
  const int64_t T = config.tgt_len(), S = config.seq_len(), C = config.num_classes;
  const Dims dims{d, H, config.ffn};
  const Dropout none;
  AddNormActs norm{nullptr, b.sum, b.mean, b.rstd, b.x};  // x = LN(x + proj)
  FfnActs ffn{b.hidden, nullptr, b.hidden, b.proj};        // proj = FFN(x)
  auto linear = [&](float* out, const float* x, const LinearRef& r, const cpu::PackedB* weight) {
    cpu::linear_forward_packed(out, x, P + r.weight, weight, P + r.bias, n, r.in, r.out);
  };
  cpu::embedding_forward(b.x, b.ids, P + refs.embed, n, C + 1, d);
  cpu::add_positions(b.x, b.x, positions + t * d, n, 1, d);
  for (size_t l = 0; l < refs.decoder.size(); ++l) {
    const DecoderLayerRef& r = refs.decoder[l];
    const PackedDecoderLayer* w = packed ? &packed->layers[l] : nullptr;
    float* cache = b.cache[l];
    linear(b.qkv, b.x, r.self_in_proj, w ? &w->self_in_proj : nullptr);
    parallel_for(0, n, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t row = lo; row < hi; ++row)
        std::memcpy(cache + (row * T + t) * 2 * d, b.qkv + row * 3 * d + d, sizeof(float) * 2 * d);
    });
    cpu::attention_forward(b.attn, b.lse, b.qkv, cache, cache + d, n, 1, t + 1, H, Dh, 3 * d, 2 * d, T,
                           /*causal=*/false);
    linear(b.proj, b.attn, r.self_out_proj, w ? &w->self_out_proj : nullptr);
    add_norm_forward(norm, P, r.norm1, b.x, b.proj, n, d, none, 0);

    float* q = b.qkv;  // (G, W, d)
    linear(q, b.x, r.cross_q_proj, w ? &w->cross_q_proj : nullptr);
    cpu::attention_forward(b.attn, b.lse, q, b.cross_kv[l], b.cross_kv[l] + d, G, W, S, H, Dh, d, 2 * d, S,
                           /*causal=*/false);
    linear(b.proj, b.attn, r.cross_out_proj, w ? &w->cross_out_proj : nullptr);
    add_norm_forward(norm, P, r.norm2, b.x, b.proj, n, d, none, 0);

    ffn_forward(ffn, P, r.fc1, r.fc2, b.x, dims, n, none, 0, w ? &w->fc1 : nullptr, w ? &w->fc2 : nullptr);
    add_norm_forward(norm, P, r.norm3, b.x, b.proj, n, d, none, 0);
  }
  cpu::layernorm_forward(b.sum, b.mean, b.rstd, b.x, P + refs.decoder_norm.gamma, P + refs.decoder_norm.beta, n,
                         d, kLayerNormEps);
  linear(b.logits, b.sum, refs.classifier, packed ? &packed->classifier : nullptr);
  cpu::log_softmax_forward(b.logprobs, b.logits, n, C);
}

// Proposals of one live hypothesis: its beam_width most likely tokens, ranked by logit (ties to
// the lower class index, as argmax), scored with their log-probabilities.
void propose(std::vector<Candidate>& out, const float* logits /* (C) */, const float* logprobs /* (C) */,
             int64_t C, int64_t slot, double parent_score, int64_t beam_width, std::vector<int32_t>& order) {
  order.resize(C);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + beam_width, order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (int64_t rank = 0; rank < beam_width; ++rank) {
    const int32_t token = order[rank];
    out.push_back({parent_score + double(logprobs[token]), slot, rank, token, std::exp(logprobs[token])});
  }
}

// Chooses an image's next live hypotheses (Note [beam search]); returns the parent slot of each.
std::vector<int64_t> select(ImageState& s, const float* logits /* (W, C) of its group */,
                            const float* logprobs /* (W, C) */, int64_t C, int64_t beam_width, int32_t eos, bool last,
                            std::vector<int32_t>& order) {
  std::vector<Candidate> candidates;
  for (size_t j = 0; j < s.live.size(); ++j)
    propose(candidates, logits + j * C, logprobs + j * C, C, int64_t(j), s.live[j].score, beam_width, order);
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.slot != b.slot) return a.slot < b.slot;
    return a.rank < b.rank;
  });
  std::vector<Hypothesis> next;
  std::vector<int64_t> parents;
  for (size_t k = 0; k < candidates.size(); ++k) {
    const Candidate& c = candidates[k];
    const Hypothesis& parent = s.live[c.slot];
    if (c.token == eos) {
      if (int64_t(k) >= beam_width) continue;
      Hypothesis h = parent;
      h.score = c.score;
      h.eos_prob = c.prob;
      s.finished.push_back(std::move(h));
    } else if (!last && int64_t(next.size()) < beam_width) {
      Hypothesis h = parent;
      h.tokens.push_back(c.token);
      h.probs.push_back(c.prob);
      h.score = c.score;
      next.push_back(std::move(h));
      parents.push_back(c.slot);
    }
  }
  if (last) {  // Note [the last position holds only EOS]
    s.done = true;
    return {};
  }
  s.live = std::move(next);
  const Hypothesis* best_finished = best_of(s.finished);
  const Hypothesis* best_live = best_of(s.live);
  s.done = !best_live || (best_finished && best_finished->score >= best_live->score);
  return parents;
}

// Block r (the first `block` floats of each `stride`) of dst becomes block from[r] of src.
void gather_blocks(float* dst, const float* src, const std::vector<int64_t>& from, int64_t block, int64_t stride) {
  parallel_for(0, int64_t(from.size()), 16, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) std::memcpy(dst + r * stride, src + from[r] * stride, sizeof(float) * block);
  });
}

// The same in place, for blocks that only move towards the front (moves_to_front): serial and in
// increasing r, so no block is overwritten before it is read.
void compact_blocks(float* x, const std::vector<int64_t>& from, int64_t block, int64_t stride) {
  for (size_t r = 0; r < from.size(); ++r)
    if (from[r] != int64_t(r)) std::memcpy(x + r * stride, x + from[r] * stride, sizeof(float) * block);
}

bool moves_to_front(const std::vector<int64_t>& from) {
  for (size_t r = 0; r < from.size(); ++r)
    if (from[r] < int64_t(r) || (r > 0 && from[r] <= from[r - 1])) return false;
  return true;
}

}  // namespace

void carve_decode(Carver& c, DecodeBuffers& b, const Config& config, int64_t B, int64_t beam_width) {
  const int64_t n = B * beam_width, d = config.d_model, L = config.dec_layers;
  b.cross_kv.resize(L);
  b.cache.resize(L);
  b.cache_next.assign(L, nullptr);
  for (int64_t l = 0; l < L; ++l) {
    b.cross_kv[l] = c.floats(B * config.seq_len() * 2 * d);
    b.cache[l] = c.floats(n * config.tgt_len() * 2 * d);
    if (beam_width > 1) b.cache_next[l] = c.floats(n * config.tgt_len() * 2 * d);
  }
  b.x = c.floats(n * d);
  b.qkv = c.floats(n * 3 * d);
  b.attn = c.floats(n * d);
  b.proj = c.floats(n * d);
  b.sum = c.floats(n * d);
  b.hidden = c.floats(n * config.ffn);
  b.logits = c.floats(n * config.num_classes);
  b.logprobs = c.floats(n * config.num_classes);
  b.lse = c.floats(n * config.heads);
  b.mean = c.floats(n);
  b.rstd = c.floats(n);
  b.ids = c.ints(n);
}

std::vector<Decoded> decode(DecodeBuffers& b, const float* P, const PackedDecoder* packed, const Config& config,
                            const Refs& refs, const float* memory, const float* positions, int64_t B, int64_t W) {
  const int64_t d = config.d_model, S = config.seq_len(), T = config.tgt_len(), C = config.num_classes;
  const int32_t eos = int32_t(config.eos()), bos = int32_t(config.bos());
  for (size_t l = 0; l < refs.decoder.size(); ++l) {
    const LinearRef& kv = refs.decoder[l].cross_kv_proj;
    cpu::linear_forward(b.cross_kv[l], memory, P + kv.weight, P + kv.bias, B * S, d, 2 * d);
  }
  std::vector<ImageState> active(B);
  for (int64_t i = 0; i < B; ++i) {
    active[i].image = i;
    active[i].live.emplace_back();
  }
  std::vector<Decoded> results(B);
  std::vector<int32_t> order;
  for (int64_t t = 0; t < T && !active.empty(); ++t) {
    const int64_t G = int64_t(active.size());
    for (int64_t g = 0; g < G; ++g) {
      const std::vector<Hypothesis>& live = active[g].live;
      for (int64_t j = 0; j < W; ++j) {
        const Hypothesis& h = live[j < int64_t(live.size()) ? j : 0];
        b.ids[g * W + j] = h.tokens.empty() ? bos : h.tokens.back();
      }
    }
    decoder_step(b, P, packed, config, refs, positions, t, G, W);

    // Select, then keep the groups of the images still going and their rows' parents.
    std::vector<ImageState> still;
    std::vector<int64_t> kept_groups, row_parents;
    for (int64_t g = 0; g < G; ++g) {
      ImageState& s = active[g];
      const std::vector<int64_t> parents =
          select(s, b.logits + g * W * C, b.logprobs + g * W * C, C, W, eos, t == T - 1, order);
      if (s.done) {
        results[s.image] = result_of(s, W);
        continue;
      }
      for (int64_t j = 0; j < W; ++j) row_parents.push_back(g * W + parents[j < int64_t(parents.size()) ? j : 0]);
      kept_groups.push_back(g);
      still.push_back(std::move(s));
    }
    active = std::move(still);
    if (active.empty()) break;

    const int64_t position_floats = (t + 1) * 2 * d, row_stride = T * 2 * d;
    const bool in_place = moves_to_front(row_parents);
    for (size_t l = 0; l < refs.decoder.size(); ++l) {
      if (in_place) {
        compact_blocks(b.cache[l], row_parents, position_floats, row_stride);
      } else {
        gather_blocks(b.cache_next[l], b.cache[l], row_parents, position_floats, row_stride);
        std::swap(b.cache[l], b.cache_next[l]);
      }
      compact_blocks(b.cross_kv[l], kept_groups, S * 2 * d, S * 2 * d);
    }
  }
  return results;
}

}  // namespace safl::model::net
