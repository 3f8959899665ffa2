// CPU attention (see ops/attention.h): the argument checks both paths share, the readable
// reference that materialises the (T, S) score matrix of each (b, h), and the fused fast path the
// model uses.
//
// Fast path, forward: one task per (b, h, tile of kQueryTile queries). Keys are visited in tiles
// of W, the SIMD width (Note [lanes]), staged once per tile (keys transposed to (Dh, W); value
// rows padded to Dp columns when Dh is not a multiple of W), and kGroup queries at a time get
// their score rows over the tile; the softmax is online (running max and sum per query, the
// accumulated output rescaled when the max grows). A lone query (cached decoding) takes dot
// products with the key rows instead, a tile's W of them summed together (Note [transposed
// sums] in lane_sums.h). A task holds a (kQueryTile, Dp) accumulator and the
// staged tiles, never a T × S matrix.
//
// Fast path, backward: one task per (b, h), so no two tasks write the same dq, dk or dv element and
// the result does not depend on the thread count. Key tiles are outer (their dk, dv accumulate in
// (W, Dp) tiles), query groups inner; probabilities are recomputed from q, k and the saved lse,
// and D_i = rowsum(dO_i ∘ O_i) comes from the saved output.
#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/cpu_features.h"
#include "common/error.h"
#include "common/threadpool.h"
#include "cpu/lane_sums.h"

namespace safl::cpu {
namespace {

struct Shape {
  int64_t B, T, S, H, Dh, ld_q, ld_kv, s_cap;
  bool causal;

  int64_t width() const { return H * Dh; }  // row stride of out and dout
  // Query i sees keys [0, visible_keys(i)); at least key 0 (Note [every query sees a key]).
  int64_t visible_keys(int64_t i) const { return causal ? i + S - T + 1 : S; }
  // With Dh = 0 every score is an empty sum, 0, whatever the scale; 1 keeps it finite.
  float scale() const { return Dh > 0 ? 1.0f / std::sqrt(float(Dh)) : 1.0f; }

  // Where head h of batch b starts in each buffer.
  int64_t q_offset(int64_t b, int64_t h) const { return b * T * ld_q + h * Dh; }
  int64_t kv_offset(int64_t b, int64_t h) const { return b * s_cap * ld_kv + h * Dh; }
  int64_t out_offset(int64_t b, int64_t h) const { return b * T * width() + h * Dh; }
  int64_t lse_offset(int64_t b, int64_t h) const { return (b * H + h) * T; }
};

// The shared checks (Note [every query sees a key] in ops/attention.h), then the shape. The online
// softmax's first key tile (keys from 0) gives every query a finite running max.
Shape checked_shape(const char* op, int64_t B, int64_t T, int64_t S, int64_t H, int64_t Dh,
                    int64_t ld_q, int64_t ld_kv, int64_t s_cap, bool causal) {
  detail::check_attention_sizes(op, B, T, S, H, Dh, ld_q, ld_kv, s_cap, causal);
  return Shape{B, T, S, H, Dh, ld_q, ld_kv, s_cap, causal};
}

float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

}  // namespace

// ---- reference -------------------------------------------------------------------------------

void attention_forward_reference(float* out, float* lse, const float* q, const float* k,
                                 const float* v, int64_t B, int64_t T, int64_t S, int64_t H,
                                 int64_t Dh, int64_t ld_q, int64_t ld_kv, int64_t s_cap,
                                 bool causal) {
  const Shape s = checked_shape("attention_forward_reference", B, T, S, H, Dh, ld_q, ld_kv, s_cap,
                                causal);
  const float scale = s.scale();
  parallel_for(0, B * H, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> probs(size_t(T * S));  // (T, S) softmax of one (b, h), 0 where masked
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float* qh = q + s.q_offset(b, h);
      const float* kh = k + s.kv_offset(b, h);
      const float* vh = v + s.kv_offset(b, h);
      float* out_h = out + s.out_offset(b, h);
      float* lse_h = lse + s.lse_offset(b, h);
      for (int64_t i = 0; i < T; ++i) {
        float* p = probs.data() + i * S;
        const int64_t visible = s.visible_keys(i);
        float row_max = -INFINITY;
        for (int64_t j = 0; j < visible; ++j) {
          p[j] = scale * dot(qh + i * ld_q, kh + j * ld_kv, Dh);
          row_max = std::max(row_max, p[j]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < visible; ++j) {
          p[j] = std::exp(p[j] - row_max);
          sum += p[j];
        }
        for (int64_t j = 0; j < visible; ++j) p[j] /= sum;
        for (int64_t j = visible; j < S; ++j) p[j] = 0.0f;
        lse_h[i] = row_max + std::log(sum);
      }
      for (int64_t i = 0; i < T; ++i) {
        for (int64_t d = 0; d < Dh; ++d) {
          float acc = 0.0f;
          for (int64_t j = 0; j < S; ++j) acc += probs[i * S + j] * vh[j * ld_kv + d];
          out_h[i * s.width() + d] = acc;
        }
      }
    }
  });
}

void attention_backward_reference(float* dq, float* dk, float* dv, const float* /* out: unread */,
                                  const float* lse, const float* dout, const float* q,
                                  const float* k, const float* v, int64_t B, int64_t T, int64_t S,
                                  int64_t H, int64_t Dh, int64_t ld_q, int64_t ld_kv,
                                  int64_t s_cap, bool causal) {
  const Shape s = checked_shape("attention_backward_reference", B, T, S, H, Dh, ld_q, ld_kv, s_cap,
                                causal);
  const float scale = s.scale();
  parallel_for(0, B * H, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> probs(size_t(T * S));        // (T, S) P, recomputed from q, k and lse
    std::vector<float> score_grad(size_t(T * S));   // (T, S) dP, then dS
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float* qh = q + s.q_offset(b, h);
      const float* kh = k + s.kv_offset(b, h);
      const float* vh = v + s.kv_offset(b, h);
      const float* dout_h = dout + s.out_offset(b, h);
      const float* lse_h = lse + s.lse_offset(b, h);
      float* dq_h = dq + s.q_offset(b, h);
      float* dk_h = dk + s.kv_offset(b, h);
      float* dv_h = dv + s.kv_offset(b, h);
      for (int64_t i = 0; i < T; ++i) {
        float* p = probs.data() + i * S;
        float* ds = score_grad.data() + i * S;
        const int64_t visible = s.visible_keys(i);
        for (int64_t j = 0; j < S; ++j) {
          const float score = scale * dot(qh + i * ld_q, kh + j * ld_kv, Dh);
          p[j] = j < visible ? std::exp(score - lse_h[i]) : 0.0f;
          ds[j] = dot(dout_h + i * s.width(), vh + j * ld_kv, Dh);
        }
        float p_dot_dp = 0.0f;  // D_i
        for (int64_t j = 0; j < S; ++j) p_dot_dp += p[j] * ds[j];
        for (int64_t j = 0; j < S; ++j) ds[j] = p[j] * (ds[j] - p_dot_dp);
      }
      for (int64_t i = 0; i < T; ++i) {
        for (int64_t d = 0; d < Dh; ++d) {
          float acc = 0.0f;
          for (int64_t j = 0; j < S; ++j) acc += score_grad[i * S + j] * kh[j * ld_kv + d];
          dq_h[i * ld_q + d] = scale * acc;
        }
      }
      for (int64_t j = 0; j < S; ++j) {
        for (int64_t d = 0; d < Dh; ++d) {
          float dk_acc = 0.0f, dv_acc = 0.0f;
          for (int64_t i = 0; i < T; ++i) {
            dk_acc += score_grad[i * S + j] * qh[i * ld_q + d];
            dv_acc += probs[i * S + j] * dout_h[i * s.width() + d];
          }
          dk_h[j * ld_kv + d] = scale * dk_acc;
          dv_h[j * ld_kv + d] = dv_acc;
        }
      }
    }
  });
}

// ---- fast path -------------------------------------------------------------------------------

namespace {

constexpr int64_t kQueryTile = 32;  // queries of one forward task, sharing each staged key tile
constexpr int64_t kMultiplyAddsPerTask = 1 << 15;  // the least work of a forward chunk
constexpr int64_t kGroup = 4;       // query rows computed together, sharing each load of a tile
constexpr int64_t kWidestLanes = 16;
static_assert(kQueryTile % kGroup == 0, "a query tile is made of whole groups");

int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

// Keys [j0, j0 + keys) that query i sees, as a count from j0 (0 when it sees none of them).
int64_t visible_in_tile(const Shape& s, int64_t i, int64_t j0, int64_t keys) {
  return std::clamp<int64_t>(s.visible_keys(i) - j0, 0, keys);
}

struct Tensors {
  float* out;
  float* lse;
  float* dq;
  float* dk;
  float* dv;
  const float* out_saved;
  const float* lse_saved;
  const float* dout;
  const float* q;
  const float* k;
  const float* v;
};

// Scratch floats of one task, enough for every lane width up to kWidestLanes.
int64_t forward_scratch_size(int64_t Dh) {
  const int64_t Dp = round_up(Dh, kWidestLanes);  // covers forward_one_query's needs too
  return kQueryTile * Dh + Dh * kWidestLanes + kWidestLanes * Dp + kQueryTile * Dp;
}
int64_t backward_scratch_size(int64_t T, int64_t Dh) {
  const int64_t T4 = round_up(T, kGroup), Dp = round_up(Dh, kWidestLanes);
  return 3 * T4 * Dp + 2 * T4 + 2 * Dh * kWidestLanes + 3 * kWidestLanes * Dp;
}

// Lanes values only cross functions that are inlined into one entry point (Note [SIMD
// variants]), so the calling convention for wide vectors that -Wpsabi warns about never applies.
// (GCC reports it at the end of the file, hence no pop.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

// Note [lanes]: the fused kernels compute with `Lanes`, W floats in one SIMD register, written
// with the GCC/Clang vector extension so that the code generated does not depend on what the
// auto-vectoriser makes of a loop nest (left alone, it vectorised the score loops across the
// wrong index). W is the register width of the variant (Note [SIMD variants]): 4 (SSE, or NEON
// elsewhere), 8 (AVX2) or 16 (AVX-512). A key tile is W keys, so a
// score row over a tile is one register; a head row is handled W columns at a time, Dh padded to
// Dp (a multiple of W) with zeros where a row is staged.
template <int W>
struct Fused {
  typedef float Lanes __attribute__((vector_size(W * sizeof(float))));
  typedef int32_t Mask __attribute__((vector_size(W * sizeof(int32_t))));
  static_assert(W <= kWidestLanes, "scratch sizes assume at most kWidestLanes lanes");

  static Lanes load(const float* p) {
    Lanes v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(float* p, const Lanes& v) { std::memcpy(p, &v, sizeof v); }
  static Lanes splat(float x) { return Lanes{} + x; }
  // All bits set in lanes [0, n), clear in the others.
  static Mask first_lanes(int64_t n) {
    int32_t lane_index[W];
    for (int j = 0; j < W; ++j) lane_index[j] = j;
    Mask index;
    std::memcpy(&index, lane_index, sizeof index);
    return index < int32_t(n);
  }
  // mask ? a : b, lane by lane.
  static Lanes select(const Mask& mask, const Lanes& a, const Lanes& b) {
    return (Lanes)((mask & (Mask)a) | (~mask & (Mask)b));
  }
  // Largest and sum of the lanes, pairwise (a short dependency chain).
  static float max_of(const Lanes& x) {
    float lanes[W];
    store(lanes, x);
    for (int half = W / 2; half >= 1; half /= 2)
      for (int j = 0; j < half; ++j) lanes[j] = std::max(lanes[j], lanes[j + half]);
    return lanes[0];
  }
  static float sum_of(const Lanes& x) {
    float lanes[W];
    store(lanes, x);
    for (int half = W / 2; half >= 1; half /= 2)
      for (int j = 0; j < half; ++j) lanes[j] += lanes[j + half];
    return lanes[0];
  }

  // Note [vector exp]: exp of every lane, for x <= 88 (the callers pass x <= about 0).
  // x = n·ln2 + r with n = round(x / ln2) and |r| <= ln2/2; exp(r) by its Taylor polynomial to
  // degree 7 (truncation below 1e-8 relative) and 2^n built in the exponent bits. Lanes below -87
  // (where 2^n would leave the normal range), -inf included, give exactly 0. NaN stays NaN.
  static Lanes exp_lanes(const Lanes& exponent) {
    const Mask underflow = exponent < -87.0f;
    const Lanes x = select(underflow, splat(-87.0f), exponent);
    // Adding 1.5·2^23 rounds x / ln2 to an integer held in the low mantissa bits of `shifted`.
    const float shifter = 12582912.0f;
    const int32_t shifter_bits = 0x4B400000;
    const Lanes shifted = x * 1.44269504f + shifter;
    const Lanes n = shifted - shifter;
    const Lanes r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // ln2 as a short head + tail
    Lanes poly = splat(1.0f / 5040.0f);
    poly = poly * r + 1.0f / 720.0f;
    poly = poly * r + 1.0f / 120.0f;
    poly = poly * r + 1.0f / 24.0f;
    poly = poly * r + 1.0f / 6.0f;
    poly = poly * r + 0.5f;
    poly = poly * r + 1.0f;
    poly = poly * r + 1.0f;
    const Mask two_to_n = (((Mask)shifted - shifter_bits) + 127) << 23;
    return select(underflow, splat(0.0f), poly * (Lanes)two_to_n);
  }

  // dst[0, n) = src[0, n), W floats at a time.
  static void copy_row(float* dst, const float* src, int64_t n) {
    int64_t c = 0;
    for (; c + W <= n; c += W) store(dst + c, load(src + c));
    for (; c < n; ++c) dst[c] = src[c];
  }
  // Σ_c a[c] · b[c] over n floats.
  static float dot_lanes(const float* a, const float* b, int64_t n) {
    Lanes products = {};
    int64_t c = 0;
    for (; c + W <= n; c += W) products += load(a + c) * load(b + c);
    float total = sum_of(products);
    for (; c < n; ++c) total += a[c] * b[c];
    return total;
  }

  // dst (dst_rows, dst_ld) = rows × cols of src (row stride src_ld), zero everywhere else.
  static void stage_rows(float* dst, int64_t dst_rows, int64_t dst_ld, const float* src,
                         int64_t src_ld, int64_t rows, int64_t cols) {
    std::fill(dst, dst + dst_rows * dst_ld, 0.0f);
    for (int64_t r = 0; r < rows; ++r) copy_row(dst + r * dst_ld, src + r * src_ld, cols);
  }

  // tile_t (Dh, W) = the first `keys` rows (stride ld) of src transposed, zero past `keys`.
  static void stage_transposed(float* tile_t, const float* src, int64_t ld, int64_t keys,
                               int64_t Dh) {
    std::fill(tile_t, tile_t + Dh * W, 0.0f);
    for (int64_t j = 0; j < keys; ++j)
      for (int64_t d = 0; d < Dh; ++d) tile_t[d * W + j] = src[j * ld + d];
  }

  // scores[r][j] = Σ_d x[r][d] · tile_t[d][j] for the kGroup rows of x (row stride ld).
  static void group_scores(Lanes* scores, const float* x, int64_t ld, const float* tile_t,
                           int64_t Dh) {
    Lanes acc[kGroup] = {};
    for (int64_t d = 0; d < Dh; ++d) {
      const Lanes column = load(tile_t + d * W);
      for (int64_t r = 0; r < kGroup; ++r) acc[r] += x[r * ld + d] * column;
    }
    for (int64_t r = 0; r < kGroup; ++r) scores[r] = acc[r];
  }

  // acc[r] += Σ_{j < n} weight(r, j) · rows[j] for the R rows of acc (row stride Dp, a multiple
  // of W), with weight(r, j) = weights[r · w_row + j · w_col]; rows has row stride ld and Dp
  // readable columns.
  template <int R>
  static void accumulate(float* acc, int64_t Dp, const float* weights, int64_t w_row,
                         int64_t w_col, const float* rows, int64_t ld, int64_t n) {
    for (int64_t c = 0; c < Dp; c += W) {
      Lanes sum[R];
      for (int r = 0; r < R; ++r) sum[r] = load(acc + r * Dp + c);
      for (int64_t j = 0; j < n; ++j) {
        const Lanes row = load(rows + j * ld + c);
        for (int r = 0; r < R; ++r) sum[r] += weights[r * w_row + j * w_col] * row;
      }
      for (int r = 0; r < R; ++r) store(acc + r * Dp + c, sum[r]);
    }
  }

  // One online-softmax step of a query row over a key tile, `masked` its scaled scores with -inf
  // where it sees no key. The row's sum and output so far are weighted by exp(· - run_max); when
  // the max grows they are rebased. Returns the tile's weights exp(score - run_max). A row that
  // sees no key of the tile keeps its state and gets zero weights.
  static Lanes online_softmax_step(const Lanes& masked, float& run_max, float& run_sum,
                                   float* acc_row, int64_t Dp) {
    const float new_max = std::max(run_max, max_of(masked));
    const Lanes p = exp_lanes(masked - new_max);
    if (new_max != run_max) {
      const float correction = std::exp(run_max - new_max);  // 0 on the first tile
      for (int64_t c = 0; c < Dp; c += W) store(acc_row + c, correction * load(acc_row + c));
      run_sum *= correction;
      run_max = new_max;
    }
    run_sum += sum_of(p);
    return p;
  }

  // Scores of one query row against the `keys` key rows (stride ld) of a tile: lane j = Σ_d
  // q[d]·k_j[d], 0 past `keys`. Each key's products are summed W lanes at a time and the tile's
  // W partial vectors are reduced together (Note [transposed sums] in lane_sums.h).
  static Lanes tile_scores(const float* q_row, const float* key_rows, int64_t ld, int64_t keys,
                           int64_t Dh) {
    Lanes partial[W];
    for (int64_t j = keys; j < W; ++j) partial[j] = Lanes{};  // no key: a zero score
    const int64_t full = Dh - Dh % W;
    for (int64_t j = 0; j < keys; ++j) {
      const float* k_row = key_rows + j * ld;
      Lanes products = {};
      for (int64_t c = 0; c < full; c += W) products += load(q_row + c) * load(k_row + c);
      if (full < Dh) {  // the columns past the last whole vector go to lane 0
        float tail = 0.0f;
        for (int64_t c = full; c < Dh; ++c) tail += q_row[c] * k_row[c];
        products += select(first_lanes(1), splat(tail), splat(0.0f));
      }
      partial[j] = products;
    }
    float scores[W];
    lanes::transposed_sums<W>(scores, partial);
    return load(scores);
  }

  // Forward of the one query i of head h, batch b: a decoding step (T = 1) or a tile's single
  // row. The scores are dot products with the key rows where they are (a transposed key tile
  // would serve one row only).
  static void forward_one_query(const Shape& s, const Tensors& t, int64_t b, int64_t h, int64_t i,
                                float* scratch) {
    const int64_t Dh = s.Dh, Dp = round_up(Dh, W);
    float* acc = scratch;           // (Dp) unnormalised output row
    float* value_tile = acc + Dp;   // (W, Dp) when Dh is not a multiple of W
    const float* q_row = t.q + s.q_offset(b, h) + i * s.ld_q;
    const float* kh = t.k + s.kv_offset(b, h);
    const float* vh = t.v + s.kv_offset(b, h);
    const float scale = s.scale();
    std::fill(acc, acc + Dp, 0.0f);
    float run_max = -INFINITY, run_sum = 0.0f;
    const int64_t key_end = s.visible_keys(i);
    for (int64_t j0 = 0; j0 < key_end; j0 += W) {
      const int64_t keys = std::min<int64_t>(W, key_end - j0);
      const Lanes scores = tile_scores(q_row, kh + j0 * s.ld_kv, s.ld_kv, keys, Dh);
      // Value rows are read in place when Dh is a multiple of W, else staged with zero padding.
      const float* value_rows = vh + j0 * s.ld_kv;
      int64_t value_ld = s.ld_kv;
      if (Dp != Dh) {
        stage_rows(value_tile, W, Dp, value_rows, s.ld_kv, keys, Dh);
        value_rows = value_tile;
        value_ld = Dp;
      }
      const Lanes masked = select(first_lanes(keys), scale * scores, splat(-INFINITY));
      float probs[W];
      store(probs, online_softmax_step(masked, run_max, run_sum, acc, Dp));
      accumulate<1>(acc, Dp, probs, W, 1, value_rows, value_ld, keys);
    }
    float* out_row = t.out + s.out_offset(b, h) + i * s.width();
    for (int64_t d = 0; d < Dh; ++d) out_row[d] = acc[d] / run_sum;
    t.lse[s.lse_offset(b, h) + i] = run_max + std::log(run_sum);
  }

  // Forward of the queries [i0, i0 + kQueryTile) ∩ [0, T) of head h, batch b.
  static void forward_query_tile(const Shape& s, const Tensors& t, int64_t b, int64_t h,
                                 int64_t i0, float* scratch) {
    const int64_t rows = std::min(kQueryTile, s.T - i0);
    if (rows == 1) return forward_one_query(s, t, b, h, i0, scratch);
    const int64_t Dh = s.Dh, Dp = round_up(Dh, W), padded_rows = round_up(rows, kGroup);
    float* q_tile = scratch;                     // (padded_rows, Dh)
    float* key_t = q_tile + padded_rows * Dh;    // (Dh, W)
    float* value_tile = key_t + Dh * W;          // (W, Dp) when Dh is not a multiple of W
    float* acc = value_tile + W * Dp;            // (padded_rows, Dp) unnormalised output rows
    const float* kh = t.k + s.kv_offset(b, h);
    const float* vh = t.v + s.kv_offset(b, h);
    const float scale = s.scale();
    // Rows past `rows` are zero padding that completes the last group: they see every key of the
    // tiles their group visits (so their running max stays finite) and their output is dropped.
    stage_rows(q_tile, padded_rows, Dh, t.q + s.q_offset(b, h) + i0 * s.ld_q, s.ld_q, rows, Dh);
    std::fill(acc, acc + padded_rows * Dp, 0.0f);
    float run_max[kQueryTile], run_sum[kQueryTile];
    std::fill(run_max, run_max + kQueryTile, -INFINITY);
    std::fill(run_sum, run_sum + kQueryTile, 0.0f);
    const int64_t key_end = s.visible_keys(i0 + rows - 1);  // the tile's last query sees the most
    for (int64_t j0 = 0; j0 < key_end; j0 += W) {
      const int64_t keys = std::min<int64_t>(W, key_end - j0);
      stage_transposed(key_t, kh + j0 * s.ld_kv, s.ld_kv, keys, Dh);
      const float* value_rows = vh + j0 * s.ld_kv;  // in place or staged, as in forward_one_query
      int64_t value_ld = s.ld_kv;
      if (Dp != Dh) {
        stage_rows(value_tile, W, Dp, value_rows, s.ld_kv, keys, Dh);
        value_rows = value_tile;
        value_ld = Dp;
      }
      for (int64_t g = 0; g < rows; g += kGroup) {
        const int64_t last_row = std::min(g + kGroup, rows) - 1;
        if (s.visible_keys(i0 + last_row) <= j0) continue;  // causal: the group sees none of them
        Lanes scores[kGroup];
        group_scores(scores, q_tile + g * Dh, Dh, key_t, Dh);
        float probs[kGroup * W];
        for (int64_t r = 0; r < kGroup; ++r) {
          const int64_t row = g + r;
          const int64_t visible = row < rows ? visible_in_tile(s, i0 + row, j0, keys) : keys;
          const Lanes masked = select(first_lanes(visible), scale * scores[r], splat(-INFINITY));
          float* acc_row = acc + row * Dp;
          store(probs + r * W, online_softmax_step(masked, run_max[row], run_sum[row], acc_row, Dp));
        }
        accumulate<kGroup>(acc + g * Dp, Dp, probs, W, 1, value_rows, value_ld, keys);
      }
    }
    float* out_h = t.out + s.out_offset(b, h);
    float* lse_h = t.lse + s.lse_offset(b, h);
    for (int64_t r = 0; r < rows; ++r) {
      const float inv_sum = 1.0f / run_sum[r];
      float* out_row = out_h + (i0 + r) * s.width();
      for (int64_t d = 0; d < Dh; ++d) out_row[d] = acc[r * Dp + d] * inv_sum;
      lse_h[i0 + r] = run_max[r] + std::log(run_sum[r]);
    }
  }

  // Backward of head h, batch b.
  static void backward_head(const Shape& s, const Tensors& t, int64_t b, int64_t h,
                            float* scratch) {
    const int64_t Dh = s.Dh, Dp = round_up(Dh, W), T = s.T, S = s.S;
    const int64_t T4 = round_up(T, kGroup);  // rows past T: zero padding that sees no key
    float* q_rows = scratch;                 // (T4, Dp)
    float* dout_rows = q_rows + T4 * Dp;     // (T4, Dp)
    float* dq_acc = dout_rows + T4 * Dp;     // (T4, Dp)
    float* row_lse = dq_acc + T4 * Dp;       // (T4)
    float* delta = row_lse + T4;             // (T4) D_i = rowsum(dO_i ∘ O_i)
    float* key_t = delta + T4;               // (Dh, W)
    float* value_t = key_t + Dh * W;         // (Dh, W)
    float* key_tile = value_t + Dh * W;      // (W, Dp) when Dh is not a multiple of W
    float* dk_tile = key_tile + W * Dp;      // (W, Dp)
    float* dv_tile = dk_tile + W * Dp;       // (W, Dp)
    const float scale = s.scale();
    const float* kh = t.k + s.kv_offset(b, h);
    const float* vh = t.v + s.kv_offset(b, h);
    const float* out_h = t.out_saved + s.out_offset(b, h);
    const float* lse_h = t.lse_saved + s.lse_offset(b, h);
    stage_rows(q_rows, T4, Dp, t.q + s.q_offset(b, h), s.ld_q, T, Dh);
    stage_rows(dout_rows, T4, Dp, t.dout + s.out_offset(b, h), s.width(), T, Dh);
    std::fill(dq_acc, dq_acc + T4 * Dp, 0.0f);
    for (int64_t i = 0; i < T4; ++i) {
      row_lse[i] = i < T ? lse_h[i] : 0.0f;
      delta[i] = i < T ? dot_lanes(dout_rows + i * Dp, out_h + i * s.width(), Dh) : 0.0f;
    }
    for (int64_t j0 = 0; j0 < S; j0 += W) {
      const int64_t keys = std::min<int64_t>(W, S - j0);
      stage_transposed(key_t, kh + j0 * s.ld_kv, s.ld_kv, keys, Dh);
      stage_transposed(value_t, vh + j0 * s.ld_kv, s.ld_kv, keys, Dh);
      const float* key_rows = kh + j0 * s.ld_kv;  // in place or staged, as in forward_one_query
      int64_t key_ld = s.ld_kv;
      if (Dp != Dh) {
        stage_rows(key_tile, W, Dp, key_rows, s.ld_kv, keys, Dh);
        key_rows = key_tile;
        key_ld = Dp;
      }
      std::fill(dk_tile, dk_tile + W * Dp, 0.0f);
      std::fill(dv_tile, dv_tile + W * Dp, 0.0f);
      // Queries before first_query see none of these keys (causal).
      const int64_t first_query = s.causal ? std::max<int64_t>(0, j0 - (S - T)) : 0;
      for (int64_t g = first_query - first_query % kGroup; g < T; g += kGroup) {
        Lanes p[kGroup], ds[kGroup];
        group_scores(p, q_rows + g * Dp, Dp, key_t, Dh);       // scores
        group_scores(ds, dout_rows + g * Dp, Dp, value_t, Dh);  // dP
        float p_rows[kGroup * W], ds_rows[kGroup * W];
        for (int64_t r = 0; r < kGroup; ++r) {
          const int64_t row = g + r;
          const int64_t visible = row < T ? visible_in_tile(s, row, j0, keys) : 0;
          const Lanes exponent = scale * p[r] - row_lse[row];
          p[r] = exp_lanes(select(first_lanes(visible), exponent, splat(-INFINITY)));
          ds[r] = scale * p[r] * (ds[r] - delta[row]);  // dS, with the scale of dq and dk folded in
          store(p_rows + r * W, p[r]);
          store(ds_rows + r * W, ds[r]);
        }
        // dV += Pᵀ dO, dK += dSᵀ Q, dQ += dS K; key j's weight for query row r is p_rows[r·W + j]
        // (and likewise ds_rows).
        accumulate<W>(dv_tile, Dp, p_rows, 1, W, dout_rows + g * Dp, Dp, kGroup);
        accumulate<W>(dk_tile, Dp, ds_rows, 1, W, q_rows + g * Dp, Dp, kGroup);
        accumulate<kGroup>(dq_acc + g * Dp, Dp, ds_rows, W, 1, key_rows, key_ld, keys);
      }
      float* dk_rows = t.dk + s.kv_offset(b, h) + j0 * s.ld_kv;
      float* dv_rows = t.dv + s.kv_offset(b, h) + j0 * s.ld_kv;
      for (int64_t j = 0; j < keys; ++j) {
        copy_row(dk_rows + j * s.ld_kv, dk_tile + j * Dp, Dh);
        copy_row(dv_rows + j * s.ld_kv, dv_tile + j * Dp, Dh);
      }
    }
    float* dq_h = t.dq + s.q_offset(b, h);
    for (int64_t i = 0; i < T; ++i) copy_row(dq_h + i * s.ld_q, dq_acc + i * Dp, Dh);
  }
};

// Note [SIMD variants]: the kernels of Fused<W> are written once, without target attributes. Each
// entry point below inlines the whole call tree (`flatten`) and compiles it for one SIMD level
// (`target`) with the register width of that level, so the Lanes operations become single SSE,
// AVX2 + FMA or AVX-512 instructions. The level is chosen at run time (common/cpu_features.h),
// never by -march=native. Key tiles are W keys wide, so the variants round differently (all
// within float tolerance of the reference); each is deterministic for any thread count.
using ForwardTileFn = void (*)(const Shape&, const Tensors&, int64_t, int64_t, int64_t, float*);
using BackwardHeadFn = void (*)(const Shape&, const Tensors&, int64_t, int64_t, float*);

__attribute__((flatten)) void forward_query_tile_generic(const Shape& s, const Tensors& t,
                                                         int64_t b, int64_t h, int64_t i0,
                                                         float* scratch) {
  Fused<4>::forward_query_tile(s, t, b, h, i0, scratch);
}
__attribute__((flatten)) void backward_head_generic(const Shape& s, const Tensors& t, int64_t b,
                                                    int64_t h, float* scratch) {
  Fused<4>::backward_head(s, t, b, h, scratch);
}
#if defined(__x86_64__) || defined(__i386__)
#define SAFL_ATTENTION_X86_VARIANTS 1
__attribute__((target("avx2,fma"), flatten)) void forward_query_tile_avx2(
    const Shape& s, const Tensors& t, int64_t b, int64_t h, int64_t i0, float* scratch) {
  Fused<8>::forward_query_tile(s, t, b, h, i0, scratch);
}
__attribute__((target("avx2,fma"), flatten)) void backward_head_avx2(
    const Shape& s, const Tensors& t, int64_t b, int64_t h, float* scratch) {
  Fused<8>::backward_head(s, t, b, h, scratch);
}
__attribute__((target("avx512f,avx2,fma"), flatten)) void forward_query_tile_avx512(
    const Shape& s, const Tensors& t, int64_t b, int64_t h, int64_t i0, float* scratch) {
  Fused<16>::forward_query_tile(s, t, b, h, i0, scratch);
}
__attribute__((target("avx512f,avx2,fma"), flatten)) void backward_head_avx512(
    const Shape& s, const Tensors& t, int64_t b, int64_t h, float* scratch) {
  Fused<16>::backward_head(s, t, b, h, scratch);
}
#endif

ForwardTileFn forward_kernel() {
#ifdef SAFL_ATTENTION_X86_VARIANTS
  if (simd_level() == SimdLevel::Avx512) return forward_query_tile_avx512;
  if (simd_level() == SimdLevel::Avx2) return forward_query_tile_avx2;
#endif
  return forward_query_tile_generic;
}

BackwardHeadFn backward_kernel() {
#ifdef SAFL_ATTENTION_X86_VARIANTS
  if (simd_level() == SimdLevel::Avx512) return backward_head_avx512;
  if (simd_level() == SimdLevel::Avx2) return backward_head_avx2;
#endif
  return backward_head_generic;
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int64_t B, int64_t T, int64_t S, int64_t H, int64_t Dh, int64_t ld_q,
                       int64_t ld_kv, int64_t s_cap, bool causal) {
  const Shape s = checked_shape("attention_forward", B, T, S, H, Dh, ld_q, ld_kv, s_cap, causal);
  const Tensors t{out, lse, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, q, k, v};
  const ForwardTileFn kernel = forward_kernel();
  const int64_t query_tiles = (T + kQueryTile - 1) / kQueryTile;
  // A decoding step's tasks (one query against a few dozen keys) are too small to hand out
  // one by one: a chunk gathers about kMultiplyAddsPerTask multiply-adds.
  const int64_t task_work = std::max<int64_t>(1, std::min(T, kQueryTile) * S * Dh);
  const int64_t grain = std::max<int64_t>(1, kMultiplyAddsPerTask / task_work);
  parallel_for(0, B * H * query_tiles, grain, [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch(static_cast<size_t>(forward_scratch_size(Dh)));
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t bh = task / query_tiles, tile = task % query_tiles;
      kernel(s, t, bh / H, bh % H, tile * kQueryTile, scratch.data());
    }
  });
}

void attention_backward(float* dq, float* dk, float* dv, const float* out, const float* lse,
                        const float* dout, const float* q, const float* k, const float* v,
                        int64_t B, int64_t T, int64_t S, int64_t H, int64_t Dh, int64_t ld_q,
                        int64_t ld_kv, int64_t s_cap, bool causal) {
  const Shape s = checked_shape("attention_backward", B, T, S, H, Dh, ld_q, ld_kv, s_cap, causal);
  const Tensors t{nullptr, nullptr, dq, dk, dv, out, lse, dout, q, k, v};
  const BackwardHeadFn kernel = backward_kernel();
  parallel_for(0, B * H, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch(static_cast<size_t>(backward_scratch_size(T, Dh)));
    for (int64_t bh = lo; bh < hi; ++bh) kernel(s, t, bh / H, bh % H, scratch.data());
  });
}

}  // namespace safl::cpu
