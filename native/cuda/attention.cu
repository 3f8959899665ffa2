// Multi-head attention core, CUDA (the contract is native/ops/attention.h): fused FP32 kernels that
// never materialise a (T, S) matrix, deterministic, no atomics.
//
//   attention_forward_kernel        one CTA per (b, h, tile of queries): key tiles staged in
//                                   shared memory, online softmax (running max and sum per query,
//                                   the accumulator rescaled when the max grows), out and lse.
//   attention_backward_dkdv_kernel  one CTA per (b, h, tile of keys), owning those dk and dv rows;
//                                   loops over the queries that see them.
//   attention_backward_dq_kernel    one CTA per (b, h, tile of queries), owning those dq rows;
//                                   loops over the keys they see.
// Both backward kernels recompute P = exp(scale·q·k − lse) from the saved lse and take
// D_i = rowsum(dO_i ∘ O_i) from the saved output (Note [two backward passes]). The thread layout
// is Note [warp layout]; the choice of FP32 FMA over tensor cores is Note [FP32, no mma].
// Dh = 64, the model's head size, is a compile-time instantiation; every other Dh up to kMaxDh
// runs the generic one.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "ops/attention.h"

namespace safl::cuda {
namespace {

// Note [warp layout]: a CTA has 1 to kMaxWarps warps. Each warp owns up to kRowsPerWarp rows of
// the CTA's side (query rows in the forward and dq kernels, key rows in the dkdv kernel),
// interleaved: tile row warp + warps·r, so causal work spreads evenly. Its 32 lanes take the other
// side, a tile of kTile = 32 keys (or queries), one per lane: lane j computes the dot products of
// key j with the warp's rows. The products with the other side then accumulate with one column
// per lane (d = lane + 32·m, m < dims_per_lane), each weight passed from its lane by a shuffle.
// Shared-memory tiles read one row per lane have an odd row stride (Dh | 1), so the 32 lanes hit
// 32 different banks; tiles read by all lanes at once (broadcasts) or one column per lane keep
// stride Dh. Tiles are zero-filled past the rows in use, so every read is of initialised memory
// and the padding contributes zeros.
//
// Note [FP32, no mma]: the model's attention is small (T, S <= 26, Dh = 64; base config at batch
// 64: 512 (b, h) pairs, about 90 MFLOP forward), so the kernels are bound by launch latency and by
// loading q, k and v once, not by arithmetic. FP32 FMA keeps the results within float rounding of
// the CPU reference, which TF32 mma (10-bit mantissa) would not, and needs no padding of 26 rows
// to mma tile shapes.
//
// Note [two backward passes]: dk and dv sum over queries, dq over keys. One kernel per owner
// (dkdv: key tiles, dq: query tiles) lets every output element be summed by one thread in a fixed
// order: no atomics, bit-identical results run to run, and the shared memory of a CTA is bounded
// by its tiles whatever T and S. The price is computing the scores and dP twice, which is small
// next to the loads at these sizes.
constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kTile = kWarp;       // keys (forward, dq) or queries (dkdv) of the lanes' tile
constexpr int kRowsPerWarp = 8;    // rows a warp owns
constexpr int kMaxWarps = 4;       // warps of a CTA: up to 32 owned rows
constexpr int kMaxDh = 256;        // head sizes of the generic kernel: up to 8 columns per lane
constexpr int64_t kMaxRowTiles = 65535;  // gridDim.y
constexpr size_t kDefaultSharedBytes = 48 * 1024;  // above it a kernel must opt in

// Columns per lane: exact for a compile-time Dh, else enough for kMaxDh.
constexpr int dims_per_lane(int dh) { return dh > 0 ? (dh + kWarp - 1) / kWarp : kMaxDh / kWarp; }

// Sizes and strides as the kernels need them (see ops/attention.h for their meaning).
struct Params {
  int64_t T, S, H, ld_q, ld_kv, s_cap;
  int Dh;
  bool causal;
  float scale;

  __device__ int64_t width() const { return H * Dh; }  // row stride of out and dout
  // Query i sees keys [0, visible_keys(i)): at least key 0, Note [every query sees a key] in
  // native/cpu/attention.cpp.
  __device__ int64_t visible_keys(int64_t i) const { return causal ? i + S - T + 1 : S; }
  // Keys [j0, j0 + keys) that query i sees, as a count from j0 (0 when it sees none of them).
  __device__ int visible_in_tile(int64_t i, int64_t j0, int keys) const {
    return int(min(max(visible_keys(i) - j0, int64_t(0)), int64_t(keys)));
  }
  __device__ int64_t q_offset(int64_t b, int64_t h) const { return b * T * ld_q + h * Dh; }
  __device__ int64_t kv_offset(int64_t b, int64_t h) const { return b * s_cap * ld_kv + h * Dh; }
  __device__ int64_t out_offset(int64_t b, int64_t h) const { return b * T * width() + h * Dh; }
  __device__ int64_t lse_offset(int64_t b, int64_t h) const { return (b * H + h) * T; }
};

// Every lane gets the same result: the butterfly partners add (or compare) the same two values.
__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
  return x;
}

// Copies rows [0, rows) (columns [0, cols), rows src_ld apart) into dst (rows dst_ld apart) and
// zero-fills rows [rows, alloc_rows). Every thread of the CTA takes part.
__device__ __forceinline__ void stage_rows(float* dst, int dst_ld, const float* src, int64_t src_ld,
                                           int rows, int alloc_rows, int cols) {
  for (int e = threadIdx.x; e < alloc_rows * cols; e += blockDim.x) {
    const int r = e / cols, c = e % cols;
    dst[r * dst_ld + c] = r < rows ? src[r * src_ld + c] : 0.0f;
  }
}

// dot[r] = Σ_d owned[r·owned_ld + d] · lane_row[d] for the warp's kRowsPerWarp owned rows (read by
// all lanes alike) and this lane's row of the other side.
__device__ __forceinline__ void owned_row_dots(float (&dot)[kRowsPerWarp], const float* owned,
                                               int owned_ld, const float* lane_row, int Dh) {
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) dot[r] = 0.0f;
#pragma unroll 4
  for (int d = 0; d < Dh; ++d) {
    const float x = lane_row[d];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) dot[r] += owned[r * owned_ld + d] * x;
  }
}

// acc[r][m] += Σ_{j < count} weight[r] of lane j · rows[j·rows_ld + lane + 32·m], the columns below
// Dh. count is the same for the whole warp.
template <int kDims>
__device__ __forceinline__ void accumulate_rows(float (&acc)[kRowsPerWarp][kDims],
                                                const float (&weight)[kRowsPerWarp],
                                                const float* rows, int rows_ld, int count, int Dh) {
  const int lane = threadIdx.x % kWarp;
  for (int j = 0; j < count; ++j) {
    float x[kDims];
#pragma unroll
    for (int m = 0; m < kDims; ++m) {
      const int d = lane + kWarp * m;
      x[m] = d < Dh ? rows[j * rows_ld + d] : 0.0f;
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float w = __shfl_sync(kFullMask, weight[r], j);
#pragma unroll
      for (int m = 0; m < kDims; ++m) acc[r][m] += w * x[m];
    }
  }
}

// The CTA's place: (b, h) from blockIdx.x, its tile of owned rows from blockIdx.y.
struct CtaRows {
  int64_t b, h;
  int64_t first;  // first owned row (query or key index)
  int count;      // owned rows in use, >= 1
  int alloc;      // owned rows of the tile, warps · kRowsPerWarp
  int warps, warp, lane;
};

__device__ __forceinline__ CtaRows cta_rows(const Params& p, int64_t total_rows) {
  CtaRows c;
  // 32-bit division (B·H <= INT32_MAX): a 64-bit one is a call that costs spills.
  const unsigned heads = unsigned(p.H);
  c.b = blockIdx.x / heads;
  c.h = blockIdx.x % heads;
  c.warps = blockDim.x / kWarp;
  c.warp = threadIdx.x / kWarp;
  c.lane = threadIdx.x % kWarp;
  c.alloc = c.warps * kRowsPerWarp;
  c.first = int64_t(blockIdx.y) * c.alloc;
  c.count = int(min(int64_t(c.alloc), total_rows - c.first));
  return c;
}

template <int kDh>
__global__ void __launch_bounds__(kMaxWarps * kWarp, 1)
    attention_forward_kernel(float* __restrict__ out, float* __restrict__ lse,
                             const float* __restrict__ q, const float* __restrict__ k,
                             const float* __restrict__ v, Params p) {
  constexpr int kDims = dims_per_lane(kDh);
  const int Dh = kDh > 0 ? kDh : p.Dh;
  const int k_ld = Dh | 1;  // Note [warp layout]
  const CtaRows c = cta_rows(p, p.T);
  extern __shared__ float smem[];
  float* q_tile = smem;                     // (c.alloc, Dh) the CTA's queries
  float* k_tile = q_tile + c.alloc * Dh;    // (kTile, Dh | 1)
  float* v_tile = k_tile + kTile * k_ld;    // (kTile, Dh)
  const float* kh = k + p.kv_offset(c.b, c.h);
  const float* vh = v + p.kv_offset(c.b, c.h);
  stage_rows(q_tile, Dh, q + p.q_offset(c.b, c.h) + c.first * p.ld_q, p.ld_q, c.count, c.alloc,
             Dh);

  float acc[kRowsPerWarp][kDims];  // unnormalised output rows, one column per lane and m
  float run_max[kRowsPerWarp], run_sum[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    run_max[r] = -INFINITY;
    run_sum[r] = 0.0f;
#pragma unroll
    for (int m = 0; m < kDims; ++m) acc[r][m] = 0.0f;
  }
  // The tile's last query sees the most keys.
  const int64_t key_end = p.visible_keys(c.first + c.count - 1);
  for (int64_t j0 = 0; j0 < key_end; j0 += kTile) {
    const int keys = int(min(int64_t(kTile), key_end - j0));
    __syncthreads();  // the previous tile's readers are done
    stage_rows(k_tile, k_ld, kh + j0 * p.ld_kv, p.ld_kv, keys, kTile, Dh);
    stage_rows(v_tile, Dh, vh + j0 * p.ld_kv, p.ld_kv, keys, kTile, Dh);
    __syncthreads();
    float score[kRowsPerWarp];
    owned_row_dots(score, q_tile + c.warp * Dh, c.warps * Dh, k_tile + c.lane * k_ld, Dh);
    float prob[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = c.warp + c.warps * r;
      const int visible = row < c.count ? p.visible_in_tile(c.first + row, j0, keys) : 0;
      prob[r] = 0.0f;
      // The same for the whole warp. A query that sees no key of this tile keeps its state; one
      // that sees some has a finite new max (the first tile holds key 0, which every query sees),
      // so no -inf - -inf is ever formed.
      if (visible == 0) continue;
      const float scaled = c.lane < visible ? p.scale * score[r] : -INFINITY;
      const float new_max = fmaxf(run_max[r], warp_max(scaled));
      const float correction = expf(run_max[r] - new_max);  // 0 on the query's first tile
      prob[r] = c.lane < visible ? expf(scaled - new_max) : 0.0f;
      run_sum[r] = run_sum[r] * correction + warp_sum(prob[r]);
      run_max[r] = new_max;
#pragma unroll
      for (int m = 0; m < kDims; ++m) acc[r][m] *= correction;
    }
    accumulate_rows(acc, prob, v_tile, Dh, keys, Dh);
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = c.warp + c.warps * r;
    if (row >= c.count) continue;
    const int64_t i = c.first + row;
    float* out_row = out + p.out_offset(c.b, c.h) + i * p.width();
#pragma unroll
    for (int m = 0; m < kDims; ++m) {
      const int d = c.lane + kWarp * m;
      if (d < Dh) out_row[d] = acc[r][m] / run_sum[r];
    }
    if (c.lane == 0) lse[p.lse_offset(c.b, c.h) + i] = run_max[r] + logf(run_sum[r]);
  }
}

template <int kDh>
__global__ void __launch_bounds__(kMaxWarps * kWarp, 1)
    attention_backward_dkdv_kernel(float* __restrict__ dk, float* __restrict__ dv,
                                   const float* __restrict__ out, const float* __restrict__ lse,
                                   const float* __restrict__ dout, const float* __restrict__ q,
                                   const float* __restrict__ k, const float* __restrict__ v,
                                   Params p) {
  constexpr int kDims = dims_per_lane(kDh);
  const int Dh = kDh > 0 ? kDh : p.Dh;
  const int q_ld = Dh | 1;  // Note [warp layout]
  const CtaRows c = cta_rows(p, p.S);
  extern __shared__ float smem[];
  float* k_tile = smem;                         // (c.alloc, Dh) the CTA's keys
  float* v_tile = k_tile + c.alloc * Dh;        // (c.alloc, Dh) their values
  float* q_tile = v_tile + c.alloc * Dh;        // (kTile, Dh | 1)
  float* dout_tile = q_tile + kTile * q_ld;     // (kTile, Dh | 1)
  float* lse_tile = dout_tile + kTile * q_ld;   // (kTile)
  float* delta_tile = lse_tile + kTile;         // (kTile) D_i = rowsum(dO_i ∘ O_i)
  const int64_t kv_offset = p.kv_offset(c.b, c.h) + c.first * p.ld_kv;
  stage_rows(k_tile, Dh, k + kv_offset, p.ld_kv, c.count, c.alloc, Dh);
  stage_rows(v_tile, Dh, v + kv_offset, p.ld_kv, c.count, c.alloc, Dh);
  const float* qh = q + p.q_offset(c.b, c.h);
  const float* dout_h = dout + p.out_offset(c.b, c.h);
  const float* out_h = out + p.out_offset(c.b, c.h);
  const float* lse_h = lse + p.lse_offset(c.b, c.h);

  float dk_acc[kRowsPerWarp][kDims], dv_acc[kRowsPerWarp][kDims];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < kDims; ++m) dk_acc[r][m] = dv_acc[r][m] = 0.0f;
  // Queries before first_query see none of the CTA's keys (causal).
  const int64_t first_query = p.causal ? max(int64_t(0), c.first - (p.S - p.T)) : 0;
  for (int64_t i0 = first_query; i0 < p.T; i0 += kTile) {
    const int queries = int(min(int64_t(kTile), p.T - i0));
    __syncthreads();  // the previous tile's readers are done
    stage_rows(q_tile, q_ld, qh + i0 * p.ld_q, p.ld_q, queries, kTile, Dh);
    stage_rows(dout_tile, q_ld, dout_h + i0 * p.width(), p.width(), queries, kTile, Dh);
    for (int t = c.warp; t < kTile; t += c.warps) {  // the same t for the whole warp
      float partial = 0.0f;
      if (t < queries) {
        const float* dout_row = dout_h + (i0 + t) * p.width();
        const float* out_row = out_h + (i0 + t) * p.width();
        for (int d = c.lane; d < Dh; d += kWarp) partial += dout_row[d] * out_row[d];
      }
      const float delta = warp_sum(partial);
      if (c.lane == 0) {
        delta_tile[t] = delta;
        lse_tile[t] = t < queries ? lse_h[i0 + t] : 0.0f;
      }
    }
    __syncthreads();
    float score[kRowsPerWarp], dprob[kRowsPerWarp];
    owned_row_dots(score, k_tile + c.warp * Dh, c.warps * Dh, q_tile + c.lane * q_ld, Dh);
    owned_row_dots(dprob, v_tile + c.warp * Dh, c.warps * Dh, dout_tile + c.lane * q_ld, Dh);
    const int64_t i = i0 + c.lane;  // this lane's query
    float prob[kRowsPerWarp], dscore[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = c.warp + c.warps * r;
      const bool visible = row < c.count && c.lane < queries &&
                           (!p.causal || c.first + row < p.visible_keys(i));
      prob[r] = visible ? expf(p.scale * score[r] - lse_tile[c.lane]) : 0.0f;
      dscore[r] = prob[r] * (dprob[r] - delta_tile[c.lane]);
    }
    accumulate_rows(dv_acc, prob, dout_tile, q_ld, queries, Dh);   // dV = Pᵀ dO
    accumulate_rows(dk_acc, dscore, q_tile, q_ld, queries, Dh);    // dK = dSᵀ Q, scaled below
  }
  // Keys no query sees (T = 0) get zeros.
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = c.warp + c.warps * r;
    if (row >= c.count) continue;
    float* dk_row = dk + kv_offset + row * p.ld_kv;
    float* dv_row = dv + kv_offset + row * p.ld_kv;
#pragma unroll
    for (int m = 0; m < kDims; ++m) {
      const int d = c.lane + kWarp * m;
      if (d < Dh) {
        dk_row[d] = p.scale * dk_acc[r][m];
        dv_row[d] = dv_acc[r][m];
      }
    }
  }
}

template <int kDh>
__global__ void __launch_bounds__(kMaxWarps * kWarp, 1)
    attention_backward_dq_kernel(float* __restrict__ dq, const float* __restrict__ out,
                                 const float* __restrict__ lse, const float* __restrict__ dout,
                                 const float* __restrict__ q, const float* __restrict__ k,
                                 const float* __restrict__ v, Params p) {
  constexpr int kDims = dims_per_lane(kDh);
  const int Dh = kDh > 0 ? kDh : p.Dh;
  const int kv_ld = Dh | 1;  // Note [warp layout]
  const CtaRows c = cta_rows(p, p.T);
  extern __shared__ float smem[];
  float* q_tile = smem;                          // (c.alloc, Dh) the CTA's queries
  float* dout_tile = q_tile + c.alloc * Dh;      // (c.alloc, Dh) their output gradients
  float* k_tile = dout_tile + c.alloc * Dh;      // (kTile, Dh | 1)
  float* v_tile = k_tile + kTile * kv_ld;        // (kTile, Dh | 1)
  const float* kh = k + p.kv_offset(c.b, c.h);
  const float* vh = v + p.kv_offset(c.b, c.h);
  const float* dout_h = dout + p.out_offset(c.b, c.h) + c.first * p.width();
  const float* out_h = out + p.out_offset(c.b, c.h) + c.first * p.width();
  stage_rows(q_tile, Dh, q + p.q_offset(c.b, c.h) + c.first * p.ld_q, p.ld_q, c.count, c.alloc,
             Dh);
  stage_rows(dout_tile, Dh, dout_h, p.width(), c.count, c.alloc, Dh);

  float row_lse[kRowsPerWarp], delta[kRowsPerWarp];  // the same in every lane
  float acc[kRowsPerWarp][kDims];                     // Σ_j dS_ij k_j, scaled below
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = c.warp + c.warps * r;
    float partial = 0.0f;
    if (row < c.count)
      for (int d = c.lane; d < Dh; d += kWarp)
        partial += dout_h[row * p.width() + d] * out_h[row * p.width() + d];
    delta[r] = warp_sum(partial);
    row_lse[r] = row < c.count ? lse[p.lse_offset(c.b, c.h) + c.first + row] : 0.0f;
#pragma unroll
    for (int m = 0; m < kDims; ++m) acc[r][m] = 0.0f;
  }
  const int64_t key_end = p.visible_keys(c.first + c.count - 1);
  for (int64_t j0 = 0; j0 < key_end; j0 += kTile) {
    const int keys = int(min(int64_t(kTile), key_end - j0));
    __syncthreads();  // the previous tile's readers are done
    stage_rows(k_tile, kv_ld, kh + j0 * p.ld_kv, p.ld_kv, keys, kTile, Dh);
    stage_rows(v_tile, kv_ld, vh + j0 * p.ld_kv, p.ld_kv, keys, kTile, Dh);
    __syncthreads();
    float score[kRowsPerWarp], dprob[kRowsPerWarp];
    owned_row_dots(score, q_tile + c.warp * Dh, c.warps * Dh, k_tile + c.lane * kv_ld, Dh);
    owned_row_dots(dprob, dout_tile + c.warp * Dh, c.warps * Dh, v_tile + c.lane * kv_ld, Dh);
    float dscore[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = c.warp + c.warps * r;
      const int visible = row < c.count ? p.visible_in_tile(c.first + row, j0, keys) : 0;
      const float prob = c.lane < visible ? expf(p.scale * score[r] - row_lse[r]) : 0.0f;
      dscore[r] = prob * (dprob[r] - delta[r]);
    }
    accumulate_rows(acc, dscore, k_tile, kv_ld, keys, Dh);
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = c.warp + c.warps * r;
    if (row >= c.count) continue;
    float* dq_row = dq + p.q_offset(c.b, c.h) + (c.first + row) * p.ld_q;
#pragma unroll
    for (int m = 0; m < kDims; ++m) {
      const int d = c.lane + kWarp * m;
      if (d < Dh) dq_row[d] = p.scale * acc[r][m];
    }
  }
}

// The checks both backends share (ops/attention.h), then the CUDA kernels' own limits.
Params checked_params(const char* op, int64_t B, int64_t T, int64_t S, int64_t H, int64_t Dh,
                      int64_t ld_q, int64_t ld_kv, int64_t s_cap, bool causal) {
  detail::check_attention_sizes(op, B, T, S, H, Dh, ld_q, ld_kv, s_cap, causal);
  SAFL_CHECK_RANGE(Dh <= kMaxDh, op, ": expected Dh <= ", kMaxDh, " on CUDA but received ", Dh);
  SAFL_CHECK_RANGE(B * H <= INT32_MAX, op, ": expected B*H <= ", INT32_MAX,
                   " on CUDA but received ", B * H);
  const int64_t max_rows = kMaxRowTiles * kMaxWarps * kRowsPerWarp;
  SAFL_CHECK_RANGE(T <= max_rows, op, ": expected T <= ", max_rows, " on CUDA but received ", T);
  SAFL_CHECK_RANGE(S <= max_rows, op, ": expected S <= ", max_rows, " on CUDA but received ", S);
  // With Dh = 0 every score is an empty sum, 0, whatever the scale; 1 keeps it finite (as on CPU).
  const float scale = Dh > 0 ? 1.0f / std::sqrt(float(Dh)) : 1.0f;
  return Params{T, S, H, ld_q, ld_kv, s_cap, int(Dh), causal, scale};
}

// The CTAs that own `rows` rows of each (b, h): as few warps as the rows need, up to kMaxWarps.
struct RowLaunch {
  int warps;
  int64_t tiles;
  int alloc() const { return warps * kRowsPerWarp; }
};
RowLaunch row_launch(int64_t rows) {
  const int warps = int(std::clamp<int64_t>((rows + kRowsPerWarp - 1) / kRowsPerWarp, 1, kMaxWarps));
  return RowLaunch{warps, (rows + warps * kRowsPerWarp - 1) / (warps * kRowsPerWarp)};
}

// Launches kernel over (B·H, rows.tiles) CTAs, first opting in to more than 48 KiB of dynamic
// shared memory when the tiles need it (large generic Dh), within what this GPU allows.
template <class... KernelArgs, class... Args>
void launch(void (*kernel)(KernelArgs...), const char* op, int64_t Dh, int64_t BH,
            const RowLaunch& rows, size_t shared_floats, Args... args) {
  const size_t shared_bytes = shared_floats * sizeof(float);
  if (shared_bytes > kDefaultSharedBytes) {
    int device = 0, allowed = 0;
    SAFL_CUDA_CHECK(cudaGetDevice(&device));
    SAFL_CUDA_CHECK(
        cudaDeviceGetAttribute(&allowed, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    SAFL_CHECK_RANGE(shared_bytes <= size_t(allowed), op, ": expected Dh small enough for ",
                     allowed, " bytes of shared memory per block on this GPU but received Dh = ",
                     Dh, ", which needs ", shared_bytes);
    SAFL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(shared_bytes)));
  }
  const dim3 grid{unsigned(BH), unsigned(rows.tiles)};
  kernel<<<grid, unsigned(rows.warps * kWarp), shared_bytes>>>(args...);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int64_t B, int64_t T, int64_t S, int64_t H, int64_t Dh, int64_t ld_q,
                       int64_t ld_kv, int64_t s_cap, bool causal) {
  const Params p = checked_params("attention_forward", B, T, S, H, Dh, ld_q, ld_kv, s_cap, causal);
  if (B * H == 0 || T == 0) return;
  const RowLaunch rows = row_launch(T);
  const size_t shared = size_t(rows.alloc() * Dh + kTile * (Dh | 1) + kTile * Dh);
  auto kernel = Dh == 64 ? attention_forward_kernel<64> : attention_forward_kernel<0>;
  launch(kernel, "attention_forward", Dh, B * H, rows, shared, out, lse, q, k, v, p);
}

void attention_backward(float* dq, float* dk, float* dv, const float* out, const float* lse,
                        const float* dout, const float* q, const float* k, const float* v,
                        int64_t B, int64_t T, int64_t S, int64_t H, int64_t Dh, int64_t ld_q,
                        int64_t ld_kv, int64_t s_cap, bool causal) {
  const Params p =
      checked_params("attention_backward", B, T, S, H, Dh, ld_q, ld_kv, s_cap, causal);
  if (B * H == 0 || Dh == 0) return;  // Dh = 0: the gradients are empty
  const bool head64 = Dh == 64;
  if (S > 0) {
    const RowLaunch keys = row_launch(S);
    const size_t shared = size_t(2 * keys.alloc() * Dh + 2 * kTile * (Dh | 1) + 2 * kTile);
    auto kernel = head64 ? attention_backward_dkdv_kernel<64> : attention_backward_dkdv_kernel<0>;
    launch(kernel, "attention_backward", Dh, B * H, keys, shared, dk, dv, out, lse, dout, q, k, v,
           p);
  }
  if (T > 0) {
    const RowLaunch queries = row_launch(T);
    const size_t shared = size_t(2 * queries.alloc() * Dh + 2 * kTile * (Dh | 1));
    auto kernel = head64 ? attention_backward_dq_kernel<64> : attention_backward_dq_kernel<0>;
    launch(kernel, "attention_backward", Dh, B * H, queries, shared, dq, out, lse, dout, q, k, v,
           p);
  }
}

}  // namespace safl::cuda
