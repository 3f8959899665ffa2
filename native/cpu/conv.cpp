// CPU 2-D convolution (see ops/conv.h): the im2col + sgemm fast path and the direct-loop
// references it is tested against.
//
// Note [one GEMM per batch]: im2col lays the input out as col[K, N] with K = Ci·kernel_h·kernel_w
// rows ordered (ci, ki, kj) — the order of a weight row — and N = B·Ho·Wo columns ordered
// (b, oh, ow). Then one product covers the whole batch,
//     y[Co, N] = weight[Co, K] × col[K, N],
// and y, laid out (Co, B, Ho·Wo), is reordered to (B, Co, Ho, Wo) while the bias is added. Small
// late layers (Ho·Wo = 25) would make per-image GEMMs far too thin, hence the batching. With B = 1
// the GEMM writes the output directly; a 1×1, stride-1, unpadded conv with B = 1 also needs no
// im2col, since x itself is col. Backward runs the same layout the other way:
//     dout_r[Co, N] = dout reordered,   dweight[Co, K] += dout_r × colᵀ,
//     dcol[K, N] = weightᵀ × dout_r,    dx = col2im(dcol).
// The workspace holds col (reused for dcol) followed by y or dout_r.
//
// Note [kernel rows that only see padding]: on a short map (the last ResNet stages run on 2×25
// and 1×25) some kernel rows of a padded conv meet only the zero padding for a whole output row:
// at H = 1 a 3×3 kernel's top and bottom rows never touch the input, at H = 2 each output row
// misses one of them. im2col would lay out those taps as zeros and the GEMM would multiply them
// (two thirds of the work at H = 1). When at least a quarter of the taps are such zeros, the
// output rows are cut into bands of consecutive rows that see the same kernel rows [k_lo, k_hi),
// and each band is one GEMM of Note [one GEMM per batch] with K = Ci·(k_hi − k_lo)·kernel_w:
// im2col lays out only those kernel rows, for the band's output rows, and the weight columns of
// those kernel rows are gathered into the workspace. The bands' dx contributions overlap (two
// output rows read the same input rows), so col2im adds into a dx zeroed once; their weight
// gradients are added into dweight's columns. A small batch (fewer than kMinBandedColumns output
// columns, a single image at batch-1 inference) keeps the whole GEMM: gathering the weight costs
// more than the multiplies it saves.
//
// Note [images in chunks]: over a whole batch, col is large (64 images of a 16×50 map with 32
// channels make 59 MB for a 3×3 conv): im2col writes it to memory, the GEMM's packing reads it
// back, and y makes the same trip before the reorder. The forward therefore runs in chunks of
// images whose col and y fit in a core's L2 (kChunkFloats), each chunk one GEMM, the chunks spread
// over the threads (each with its own piece of the workspace, the GEMM on that thread). The
// layout of a chunk is Note [one GEMM per batch]'s with the chunk as the batch. It applies when
// the batch makes at least kMinChunks chunks whose GEMMs are not thinner than the weight (a chunk
// of at least Co columns, so that packing the weight per chunk costs less than its product).
// The backward runs the same chunks; each piece of workspace ("slot") owns the chunks
// slot, slot + slots, ... and its own weight gradient, and the slots' gradients are added to
// dweight in slot order at the end. The slot count depends only on the machine (its hardware
// threads), never on the pool size, so the gradient is the same bits for any thread count.
//
// Note [Winograd rows]: the forward of a 3×3 conv of stride 1 and padding 1 (every 3×3 conv of
// the model) computes each output row in tiles of 4 with F(4, 3), the minimal 1-D filtering
// algorithm of Winograd (as Lavin and Gray use it), along the row: per kernel row, 6 products
// for a tile of 4 outputs where the direct sum takes 12. In GEMM form, for each point ξ = 0..5:
//     U_ξ[co, (ci, r)]       = Σ_j G[ξ, j] · w[co, ci, r, j]                     (the weight)
//     V_ξ[(ci, r), (b, oh, t)] = Σ_k Bᵀ[ξ, k] · x[b, ci, oh + r − 1, 4t + k − 1]  (0 in the padding)
//     M_ξ = U_ξ × V_ξ                                                         (one sgemm per point)
//     out[b, co, oh, 4t + m] = bias[co] + Σ_ξ Aᵀ[m, ξ] · M_ξ[co, (b, oh, t)]   (4t + m < Wo)
// with r over the kernel rows of a band (Note [kernel rows that only see padding]; the whole
// kernel on taller maps). Half the multiply-adds of im2col's GEMM (less the last tile's unused
// columns), and V is half the size of col. Batches run in chunks of images as in Note [images
// in chunks] when those are wide enough products, else in a few large pieces, each product then
// spread over the threads. The transforms scale values by up to 25 and 8 before and after the
// products, so the rounding differs from im2col's in the sixth digit; the backward stays with
// im2col. Convs with fewer than 64 input channels keep im2col: measured layer by layer (base and
// tiny, batch 64), their transforms cost more than the products they save.
#include "ops/conv.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"
#include "ops/gemm.h"

namespace safl::cpu {
namespace {

// Below this many output columns (B·Ho·Wo), gathering a band's weight columns costs more than the
// multiplies the band saves (Note [kernel rows that only see padding]).
constexpr int64_t kMinBandedColumns = 128;

// Output rows [oh0, oh1) that see kernel rows [k_lo, k_hi) (Note [kernel rows that only see
// padding]); the whole output with every kernel row is the band of Note [one GEMM per batch].
struct Band {
  int64_t oh0, oh1, k_lo, k_hi;
  int64_t rows() const { return oh1 - oh0; }
  int64_t kernel_rows() const { return k_hi - k_lo; }
};

// Note [Winograd rows]: the least input channels, the least columns (tiles) of a product, and
// the floats of V and M of a thread's chunk (2 MiB, in its L2) and of a piece spread over the
// threads.
constexpr int64_t kMinWinogradChannels = 64;
constexpr int64_t kMinWinogradTiles = 96;
constexpr int64_t kWinogradChunkFloats = int64_t(1) << 19;
constexpr int64_t kWinogradPieceFloats = int64_t(1) << 22;
constexpr int64_t kPoints = 6;  // F(4, 3): 6 points per tile of 4 outputs

struct ConvGeometry {
  int64_t B, Ci, H, W, Co, kh, kw, sh, sw, ph, pw;
  int64_t Ho, Wo;
  int64_t K() const { return Ci * kh * kw; }
  int64_t spatial_out() const { return Ho * Wo; }
  int64_t N() const { return B * Ho * Wo; }
  bool pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
  // Output rows as wide as the input rows, one step apart (Note [im2col of a same-size
  // stride-1 conv]).
  bool same_rows() const { return sw == 1 && sh == 1 && Wo == W; }
  // The layout of Note [one GEMM per batch]: which scratch pieces are needed.
  bool needs_col() const { return !(pointwise() && B == 1); }
  bool needs_reorder() const { return B > 1; }
  int64_t col_floats() const { return needs_col() ? K() * N() : 0; }
  Band whole() const { return {0, Ho, 0, kh}; }
  // The kernel rows that output row oh meets: those whose input row is inside [0, H).
  Band band_of_row(int64_t oh) const {
    const int64_t top = oh * sh - ph;
    return {oh, oh + 1, std::clamp<int64_t>(-top, 0, kh), std::clamp<int64_t>(H - top, 0, kh)};
  }
  // Note [kernel rows that only see padding]: banded when a quarter of the taps see only padding
  // and the GEMMs have at least kMinBandedColumns columns.
  bool banded() const {
    if (N() < kMinBandedColumns) return false;
    int64_t padding_taps = 0;
    for (int64_t oh = 0; oh < Ho; ++oh) padding_taps += kh - band_of_row(oh).kernel_rows();
    return 4 * padding_taps >= Ho * kh;
  }
  std::vector<Band> bands() const {
    std::vector<Band> out;
    for (int64_t oh = 0; oh < Ho; ++oh) {
      const Band row = band_of_row(oh);
      if (!out.empty() && out.back().k_lo == row.k_lo && out.back().k_hi == row.k_hi) {
        out.back().oh1 = oh + 1;
      } else {
        out.push_back(row);
      }
    }
    return out;
  }
  // Banded workspace: the largest band's col and (Co, N) product, and two (Co, K) weight slices
  // (the gathered weight and the band's weight gradient).
  int64_t banded_workspace_floats() const {
    int64_t col = 0, product = 0, slice = 0;
    for (const Band& band : bands()) {
      const int64_t k = Ci * band.kernel_rows() * kw, n = B * band.rows() * Wo;
      col = std::max(col, k * n);
      product = std::max(product, Co * n);
      slice = std::max(slice, Co * k);
    }
    return col + product + 2 * slice;
  }
  // The bands the forward runs: the banded ones, else the whole output.
  std::vector<Band> forward_bands() const { return banded() ? bands() : std::vector<Band>{whole()}; }
  // Note [Winograd rows]: tiles of 4 outputs per row, and whether the forward takes that path.
  int64_t tiles() const { return (Wo + 3) / 4; }
  bool winograd() const {
    return kh == 3 && kw == 3 && sh == 1 && sw == 1 && ph == 1 && pw == 1 && Ci >= kMinWinogradChannels &&
           Co > 0 && B * Ho * tiles() >= kMinWinogradTiles;
  }
  struct WinogradPlan {
    int64_t images = 0;   // per chunk or piece
    int64_t slots = 0;    // > 0: chunks spread over the threads, each slot a piece of workspace
    int64_t u_floats = 0;      // U of the band: kPoints · Co · Ci · kernel_rows
    int64_t floats_per_image = 0;  // V and M of one image
    int64_t workspace() const { return u_floats + std::max<int64_t>(1, slots) * images * floats_per_image; }
  };
  WinogradPlan winograd_plan(const Band& band) const;
  int64_t winograd_workspace_floats() const {
    int64_t floats = 0;
    for (const Band& band : forward_bands()) floats = std::max(floats, winograd_plan(band).workspace());
    return floats;
  }
  // Note [images in chunks]: images per chunk (0: the batch in one piece), chunks, and the
  // pieces of workspace (one per thread that takes chunks).
  struct Chunks {
    int64_t images = 0, count = 0, slots = 0;
    int64_t floats_per_image = 0;  // col and y of one image
    int64_t slot_floats() const { return images * floats_per_image; }
  };
  Chunks chunks() const;
  // Nothing is multiplied when K or Co is 0 (the output is the bias, dx is zero).
  int64_t workspace_floats() const {
    if (K() == 0 || Co == 0) return 0;
    return std::max(im2col_workspace_floats(), winograd() ? winograd_workspace_floats() : 0);
  }
  int64_t im2col_workspace_floats() const {
    if (banded()) return banded_workspace_floats();
    const Chunks c = chunks();
    if (c.count > 0) return c.slots * (c.slot_floats() + Co * K());  // pieces, then the slots' dweight
    return col_floats() + (needs_reorder() ? Co * N() : 0);
  }
};

constexpr int64_t kChunkFloats = int64_t(1) << 18;  // col and y of a chunk: 1 MiB
constexpr int64_t kMinChunks = 4;
constexpr int64_t kSlotsPerThread = 2;  // more slots than threads balance uneven progress

ConvGeometry::Chunks ConvGeometry::chunks() const {
  Chunks c;
  if (B < 2 || banded()) return c;
  const int64_t per_image = (K() + Co) * spatial_out();
  const int64_t images = std::clamp<int64_t>(kChunkFloats / std::max<int64_t>(1, per_image), 1, B);
  const int64_t count = (B + images - 1) / images;
  if (count < kMinChunks || images * spatial_out() < Co) return c;
  c.images = images;
  c.count = count;
  c.slots = std::min<int64_t>(count, kSlotsPerThread * hardware_threads());
  c.floats_per_image = per_image;
  return c;
}

ConvGeometry::WinogradPlan ConvGeometry::winograd_plan(const Band& band) const {
  WinogradPlan p;
  const int64_t k = Ci * band.kernel_rows(), columns = band.rows() * tiles();
  p.u_floats = kPoints * Co * k;
  p.floats_per_image = kPoints * (k + Co) * columns;
  const int64_t images = std::clamp<int64_t>(kWinogradChunkFloats / p.floats_per_image, 1, B);
  const int64_t count = (B + images - 1) / images;
  if (count >= kMinChunks && images * columns >= std::max(Co, kMinWinogradTiles)) {
    p.images = images;
    p.slots = std::min<int64_t>(count, kSlotsPerThread * hardware_threads());
    return p;
  }
  const int64_t widest = (kMinWinogradTiles + columns - 1) / columns;
  p.images = std::clamp<int64_t>(std::max(kWinogradPieceFloats / p.floats_per_image, widest), 1, B);
  return p;
}

ConvGeometry check_geometry(const char* op, int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co,
                            int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  detail::check_conv2d_sizes(op, B, Ci, H, W, Co, kh, kw, sh, sw, ph, pw);
  return {B, Ci, H, W, Co, kh, kw, sh, sw, ph, pw,
          conv2d_output_size(H, kh, sh, ph), conv2d_output_size(W, kw, sw, pw)};
}

void check_workspace(const char* op, const float* workspace, const ConvGeometry& g) {
  SAFL_CHECK(workspace != nullptr || g.workspace_floats() == 0, op, ": expected a workspace of ",
             g.workspace_floats(), " floats (conv2d_workspace_floats) but received nullptr");
}

// Chunks of a parallel_for over items of `floats_per_item` each: large enough to be worth a task.
int64_t grain_for(int64_t floats_per_item) {
  constexpr int64_t kFloatsPerChunk = 16384;
  return std::max<int64_t>(1, kFloatsPerChunk / std::max<int64_t>(1, floats_per_item));
}

// Output positions o in [0, out) whose source o·stride + offset lies inside [0, in), as [lo, hi).
void valid_range(int64_t offset, int64_t stride, int64_t in, int64_t out, int64_t* lo, int64_t* hi) {
  const int64_t first = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t last_plus_one = in - 1 - offset < 0 ? 0 : (in - 1 - offset) / stride + 1;
  *hi = std::min(out, last_plus_one);
  *lo = std::min(first, *hi);
}

// Note [im2col of a same-size stride-1 conv]: with stride 1 and Wo = W, the valid output rows
// of one (ci, ki, kj) row of col are one contiguous run of the input plane, shifted by
// (ki − ph)·W + kj − pw: one copy, then the few columns whose source lies in the padding (and
// that the copy took from the neighbouring input row) are set to zero. The short rows of the
// late stages (25 floats) cost a copy call each otherwise.

// col[(ci, ki, kj), (b, oh, ow)] = x[b, ci, oh·sh − ph + ki, ow·sw − pw + kj], 0 in the padding,
// for the band's kernel rows ki and output rows oh.
void im2col(float* col /* (Ci·kernel_rows·kw, B·rows·Wo) */, const float* x /* (B, Ci, H, W) */,
            const ConvGeometry& g, const Band& band) {
  const int64_t kv = band.kernel_rows(), plane = band.rows() * g.Wo, N = g.B * plane;
  parallel_for(0, g.Ci * kv * g.kw * g.B, grain_for(plane), [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t row = task / g.B, b = task % g.B;
      const int64_t ci = row / (kv * g.kw), ki = band.k_lo + (row / g.kw) % kv, kj = row % g.kw;
      const float* x_plane = x + (b * g.Ci + ci) * g.H * g.W;
      float* dst = col + row * N + b * plane;  // output row oh at (oh − oh0)·Wo
      int64_t oh_lo, oh_hi, ow_lo, ow_hi;
      valid_range(ki - g.ph, g.sh, g.H, g.Ho, &oh_lo, &oh_hi);
      valid_range(kj - g.pw, g.sw, g.W, g.Wo, &ow_lo, &ow_hi);
      oh_lo = std::clamp(oh_lo, band.oh0, band.oh1);
      oh_hi = std::clamp(oh_hi, oh_lo, band.oh1);
      std::fill(dst, dst + (oh_lo - band.oh0) * g.Wo, 0.0f);
      if (g.same_rows()) {  // Note [im2col of a same-size stride-1 conv]
        const int64_t shift = kj - g.pw;
        const int64_t begin = (oh_lo - band.oh0) * g.W, end = (oh_hi - band.oh0) * g.W;
        const int64_t offset = (band.oh0 - g.ph + ki) * g.W + shift;  // source index − dst index
        const int64_t first = std::clamp(-offset, begin, end);  // the run inside the plane
        const int64_t last = std::clamp(g.H * g.W - offset, first, end);
        std::fill(dst + begin, dst + first, 0.0f);
        std::memcpy(dst + first, x_plane + first + offset, sizeof(float) * (last - first));
        std::fill(dst + last, dst + end, 0.0f);
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {  // columns whose source is padding
          float* out_row = dst + (oh - band.oh0) * g.W;
          std::fill(out_row, out_row + ow_lo, 0.0f);
          std::fill(out_row + ow_hi, out_row + g.W, 0.0f);
        }
        std::fill(dst + end, dst + plane, 0.0f);
        continue;
      }
      for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
        const float* src = x_plane + (oh * g.sh - g.ph + ki) * g.W + (kj - g.pw);
        float* out_row = dst + (oh - band.oh0) * g.Wo;
        std::fill(out_row, out_row + ow_lo, 0.0f);
        if (g.sw == 1) {
          std::memcpy(out_row + ow_lo, src + ow_lo, sizeof(float) * (ow_hi - ow_lo));
        } else {
          for (int64_t ow = ow_lo; ow < ow_hi; ++ow) out_row[ow] = src[ow * g.sw];
        }
        std::fill(out_row + ow_hi, out_row + g.Wo, 0.0f);
      }
      std::fill(dst + (oh_hi - band.oh0) * g.Wo, dst + plane, 0.0f);
    }
  });
}

// The adjoint of im2col: dx[b, ci] += Σ over the band's (ki, kj) rows of dcol scattered back
// (dx[b, ci] is zeroed first unless `accumulate`). Each task owns one (b, ci) plane of dx, so no
// two tasks write the same element.
void col2im(float* dx /* (B, Ci, H, W) */, const float* dcol /* (Ci·kernel_rows·kw, B·rows·Wo) */,
            const ConvGeometry& g, const Band& band, bool accumulate) {
  const int64_t kv = band.kernel_rows(), plane = band.rows() * g.Wo, N = g.B * plane;
  parallel_for(0, g.B * g.Ci, grain_for(kv * g.kw * plane), [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / g.Ci, ci = task % g.Ci;
      float* dx_plane = dx + task * g.H * g.W;
      if (!accumulate) std::fill(dx_plane, dx_plane + g.H * g.W, 0.0f);
      for (int64_t ki = band.k_lo; ki < band.k_hi; ++ki) {
        for (int64_t kj = 0; kj < g.kw; ++kj) {
          const float* src = dcol + ((ci * kv + ki - band.k_lo) * g.kw + kj) * N + b * plane;
          int64_t oh_lo, oh_hi, ow_lo, ow_hi;
          valid_range(ki - g.ph, g.sh, g.H, g.Ho, &oh_lo, &oh_hi);
          valid_range(kj - g.pw, g.sw, g.W, g.Wo, &ow_lo, &ow_hi);
          oh_lo = std::clamp(oh_lo, band.oh0, band.oh1);
          oh_hi = std::clamp(oh_hi, oh_lo, band.oh1);
          for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
            float* dst = dx_plane + (oh * g.sh - g.ph + ki) * g.W + (kj - g.pw);
            const float* src_row = src + (oh - band.oh0) * g.Wo;
            if (g.sw == 1) {
              for (int64_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow] += src_row[ow];
            } else {
              for (int64_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow * g.sw] += src_row[ow];
            }
          }
        }
      }
    }
  });
}

// (Co, B, rows·Wo) → the band's rows of (B, Co, Ho·Wo), adding the bias on the way.
void reorder_to_nchw(float* out, const float* y, const float* bias, const ConvGeometry& g, const Band& band) {
  const int64_t HWo = g.spatial_out(), plane = band.rows() * g.Wo;
  parallel_for(0, g.B * g.Co, grain_for(plane), [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / g.Co, co = task % g.Co;
      const float* src = y + (co * g.B + b) * plane;
      float* dst = out + task * HWo + band.oh0 * g.Wo;
      const float shift = bias ? bias[co] : 0.0f;
      for (int64_t i = 0; i < plane; ++i) dst[i] = src[i] + shift;
    }
  });
}

// The band's rows of (B, Co, Ho·Wo) → (Co, B, rows·Wo).
void reorder_from_nchw(float* y, const float* dout, const ConvGeometry& g, const Band& band) {
  const int64_t HWo = g.spatial_out(), plane = band.rows() * g.Wo;
  parallel_for(0, g.Co * g.B, grain_for(plane), [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t co = task / g.B, b = task % g.B;
      std::memcpy(y + task * plane, dout + (b * g.Co + co) * HWo + band.oh0 * g.Wo, sizeof(float) * plane);
    }
  });
}

// The weight columns of the band's kernel rows: slice (Co, Ci·kernel_rows·kw).
// (The runs are a few floats long: copied in a loop, not by a copy call each.)
void gather_weight(float* slice, const float* weight /* (Co, Ci, kh, kw) */, const ConvGeometry& g,
                   const Band& band) {
  const int64_t run = band.kernel_rows() * g.kw;
  parallel_for(0, g.Co * g.Ci, grain_for(run), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const float* src = weight + (r * g.kh + band.k_lo) * g.kw;
      for (int64_t i = 0; i < run; ++i) slice[r * run + i] = src[i];
    }
  });
}

// dweight's columns of the band's kernel rows += slice (Co, Ci·kernel_rows·kw).
void add_weight_slice(float* dweight /* (Co, Ci, kh, kw) */, const float* slice, const ConvGeometry& g,
                      const Band& band) {
  const int64_t run = band.kernel_rows() * g.kw;
  parallel_for(0, g.Co * g.Ci, grain_for(run), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      float* dst = dweight + (r * g.kh + band.k_lo) * g.kw;
      for (int64_t i = 0; i < run; ++i) dst[i] += slice[r * run + i];
    }
  });
}

// The band's rows of out (B, Co, Ho·Wo) = bias (or 0).
void fill_band(float* out, const float* bias, const ConvGeometry& g, const Band& band) {
  for (int64_t task = 0; task < g.B * g.Co; ++task) {
    float* dst = out + task * g.spatial_out() + band.oh0 * g.Wo;
    std::fill(dst, dst + band.rows() * g.Wo, bias ? bias[task % g.Co] : 0.0f);
  }
}

// Note [images in chunks]: the pool's threads, one per slot, claim chunks 0..count−1 in turn;
// body(slot, chunk) runs on the claiming thread.
template <class Body>
void claim_chunks(int64_t slots, int64_t count, Body&& body) {
  std::atomic<int64_t> next_chunk{0};
  parallel_run(int(slots), [&](int slot, int) {
    for (int64_t chunk = next_chunk++; chunk < count; chunk = next_chunk++) body(slot, chunk);
  });
}

// Note [Winograd rows]: F(4, 3)'s matrices. Bᵀ maps 6 inputs to the 6 points, G the 3 weights,
// Aᵀ the 6 products to 4 outputs.
constexpr float kG[kPoints][3] = {{1.0f / 4, 0, 0},
                                  {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                                  {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                                  {1.0f / 24, 1.0f / 12, 1.0f / 6},
                                  {1.0f / 24, -1.0f / 12, 1.0f / 6},
                                  {0, 0, 1}};

// U (kPoints, Co, Ci·kernel_rows) of the band's kernel rows, columns ordered (ci, r).
void winograd_weight(float* u, const float* weight /* (Co, Ci, 3, 3) */, const ConvGeometry& g, const Band& band) {
  const int64_t kr = band.kernel_rows(), k = g.Ci * kr;
  parallel_for(0, g.Co * kPoints, grain_for(k), [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t co = task / kPoints, xi = task % kPoints;
      float* dst = u + (xi * g.Co + co) * k;
      for (int64_t ci = 0; ci < g.Ci; ++ci) {
        const float* w = weight + ((co * g.Ci + ci) * 3 + band.k_lo) * 3;
        for (int64_t rr = 0; rr < kr; ++rr, w += 3) dst[ci * kr + rr] = kG[xi][0] * w[0] + kG[xi][1] * w[1] + kG[xi][2] * w[2];
      }
    }
  });
}

// Bᵀ d for one tile's six inputs d0..d5: the tile's value at each of the kPoints points, stored
// `point` floats apart.
inline void winograd_input_tile(float* dst, int64_t point, float d0, float d1, float d2, float d3, float d4,
                                float d5) {
  dst[0] = 4 * d0 - 5 * d2 + d4;
  dst[point] = -4 * d1 - 4 * d2 + d3 + d4;
  dst[2 * point] = 4 * d1 - 4 * d2 - d3 + d4;
  dst[3 * point] = -2 * d1 - d2 + 2 * d3 + d4;
  dst[4 * point] = 2 * d1 - d2 - 2 * d3 + d4;
  dst[5 * point] = 4 * d1 - 5 * d3 + d5;
}

// V (kPoints, Ci·kernel_rows, images·rows·tiles) of images [b0, b0 + images) for the band, one
// row (ci, r) of V per task: for each image and output row oh it transforms input row
// oh + k_lo + r − 1 (zeros where that row is padding) tile by tile, writing each point's row
// straight through. Tile t reads x[4t − 1 .. 4t + 4]; only the first and the last tiles reach
// into the padding, so the tiles between read the row without bounds checks.
void winograd_input(float* v, const float* x /* (B, Ci, H, W) */, const ConvGeometry& g, const Band& band,
                    int64_t b0, int64_t images) {
  const int64_t kr = band.kernel_rows(), T = g.tiles(), W = g.W;
  const int64_t columns = images * band.rows() * T, point = g.Ci * kr * columns;  // of V
  const int64_t inner_end = std::clamp<int64_t>((W - 5) / 4 + 1, 1, T);  // tiles [1, inner_end) are inside
  parallel_for(0, g.Ci * kr, grain_for(kPoints * columns), [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t ci = row / kr, rr = row % kr;
      float* dst = v + row * columns;
      for (int64_t i = 0; i < images; ++i) {
        for (int64_t oh = band.oh0; oh < band.oh1; ++oh, dst += T) {
          const int64_t ih = oh + band.k_lo + rr - 1;
          if (ih < 0 || ih >= g.H) {
            for (int64_t xi = 0; xi < kPoints; ++xi) std::fill(dst + xi * point, dst + xi * point + T, 0.0f);
            continue;
          }
          const float* in = x + (((b0 + i) * g.Ci + ci) * g.H + ih) * W;
          auto at = [&](int64_t w) { return w >= 0 && w < W ? in[w] : 0.0f; };
          auto edge_tile = [&](int64_t t) {
            const int64_t w = 4 * t - 1;
            winograd_input_tile(dst + t, point, at(w), at(w + 1), at(w + 2), at(w + 3), at(w + 4), at(w + 5));
          };
          edge_tile(0);
          for (int64_t t = 1; t < inner_end; ++t) {
            const float* d = in + 4 * t - 1;
            winograd_input_tile(dst + t, point, d[0], d[1], d[2], d[3], d[4], d[5]);
          }
          for (int64_t t = inner_end; t < T; ++t) edge_tile(t);
        }
      }
    }
  });
}

// The band's rows of out (B, Co, Ho, Wo) for images [b0, b0 + images) from M (kPoints, Co,
// images·rows·tiles), adding the bias: Aᵀ m per tile, the last tile cut at Wo.
void winograd_output(float* out, const float* m, const float* bias, const ConvGeometry& g, const Band& band,
                     int64_t b0, int64_t images) {
  const int64_t T = g.tiles(), rows = band.rows(), columns = images * rows * T, point = g.Co * columns;
  const int64_t full_tiles = g.Wo / 4;
  parallel_for(0, images * g.Co, grain_for(rows * g.Wo * kPoints), [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t i = task / g.Co, co = task % g.Co;
      const float shift = bias ? bias[co] : 0.0f;
      for (int64_t oh = band.oh0; oh < band.oh1; ++oh) {
        const float* src = m + co * columns + (i * rows + oh - band.oh0) * T;
        float* dst = out + (((b0 + i) * g.Co + co) * g.Ho + oh) * g.Wo;
        auto outputs = [&](int64_t t, float y[4]) {
          const float m0 = src[t], m1 = src[point + t], m2 = src[2 * point + t], m3 = src[3 * point + t],
                      m4 = src[4 * point + t], m5 = src[5 * point + t];
          y[0] = m0 + m1 + m2 + m3 + m4 + shift;
          y[1] = m1 - m2 + 2 * m3 - 2 * m4 + shift;
          y[2] = m1 + m2 + 4 * m3 + 4 * m4 + shift;
          y[3] = m1 - m2 + 8 * m3 - 8 * m4 + m5 + shift;
        };
        for (int64_t t = 0; t < full_tiles; ++t) outputs(t, dst + 4 * t);
        if (full_tiles < T) {
          float y[4];
          outputs(full_tiles, y);
          std::copy(y, y + (g.Wo - 4 * full_tiles), dst + 4 * full_tiles);
        }
      }
    }
  });
}

// Images [b0, b0 + images) of the band: V, the kPoints products, the output (Note [Winograd rows]).
void winograd_piece(float* out, float* piece, const float* u, const float* x, const float* bias,
                    const ConvGeometry& g, const Band& band, int64_t b0, int64_t images) {
  const int64_t k = g.Ci * band.kernel_rows(), columns = images * band.rows() * g.tiles();
  float* v = piece;                          // (kPoints, k, columns)
  float* m = piece + kPoints * k * columns;  // (kPoints, Co, columns)
  winograd_input(v, x, g, band, b0, images);
  for (int64_t xi = 0; xi < kPoints; ++xi)
    sgemm(m + xi * g.Co * columns, columns, u + xi * g.Co * k, k, false, v + xi * k * columns, columns, false, g.Co,
          columns, k, 1.0f, 0.0f);
  winograd_output(out, m, bias, g, band, b0, images);
}

void forward_winograd(float* out, float* workspace, const float* x, const float* weight, const float* bias,
                      const ConvGeometry& g) {
  for (const Band& band : g.forward_bands()) {
    const ConvGeometry::WinogradPlan p = g.winograd_plan(band);
    float* u = workspace;
    winograd_weight(u, weight, g, band);
    float* pieces = workspace + p.u_floats;
    const int64_t count = (g.B + p.images - 1) / p.images;
    if (p.slots == 0) {  // a few wide pieces, each product spread over the threads
      for (int64_t c = 0; c < count; ++c)
        winograd_piece(out, pieces, u, x, bias, g, band, c * p.images, std::min(p.images, g.B - c * p.images));
      continue;
    }
    claim_chunks(p.slots, count, [&](int slot, int64_t c) {
      winograd_piece(out, pieces + slot * p.images * p.floats_per_image, u, x, bias, g, band, c * p.images,
                     std::min(p.images, g.B - c * p.images));
    });
  }
}

// Note [images in chunks].
void forward_chunked(float* out, float* workspace, const float* x, const float* weight, const float* bias,
                     const ConvGeometry& g, const ConvGeometry::Chunks& c) {
  const int64_t K = g.K(), HWo = g.spatial_out();
  claim_chunks(c.slots, c.count, [&](int slot, int64_t chunk) {
    float* col = workspace + slot * c.slot_floats();
    float* y = col + K * c.images * HWo;
    const int64_t b0 = chunk * c.images;
    ConvGeometry piece = g;
    piece.B = std::min(c.images, g.B - b0);
    const int64_t N = piece.N();
    // Inside a pool task, im2col, sgemm and the reorder run on this thread.
    im2col(col, x + b0 * g.Ci * g.H * g.W, piece, piece.whole());
    sgemm(y, N, weight, K, false, col, N, false, g.Co, N, K, 1.0f, 0.0f);
    reorder_to_nchw(out + b0 * g.Co * HWo, y, bias, piece, piece.whole());
  });
}

// Note [images in chunks]: slot by slot, each slot's chunks in order into its own weight gradient.
void backward_chunked(float* dx, float* dweight, float* workspace, const float* dout, const float* x,
                      const float* weight, const ConvGeometry& g, const ConvGeometry::Chunks& c) {
  const int64_t K = g.K(), HWo = g.spatial_out(), weight_floats = g.Co * K;
  float* slot_dweights = workspace + c.slots * c.slot_floats();  // (slots, Co, K)
  std::atomic<int64_t> next_slot{0};
  parallel_run(int(c.slots), [&](int, int) {
    for (int64_t slot = next_slot++; slot < c.slots; slot = next_slot++) {
      float* col = workspace + slot * c.slot_floats();
      float* dout_r = col + K * c.images * HWo;
      float* slot_dweight = slot_dweights + slot * weight_floats;
      for (int64_t chunk = slot; chunk < c.count; chunk += c.slots) {  // slots <= count: at least one
        const int64_t b0 = chunk * c.images;
        ConvGeometry piece = g;
        piece.B = std::min(c.images, g.B - b0);
        const int64_t N = piece.N();
        reorder_from_nchw(dout_r, dout + b0 * g.Co * HWo, piece, piece.whole());
        im2col(col, x + b0 * g.Ci * g.H * g.W, piece, piece.whole());
        sgemm(slot_dweight, K, dout_r, N, false, col, N, true, g.Co, K, N, 1.0f, chunk == slot ? 0.0f : 1.0f);
        if (!dx) continue;
        sgemm(col, N, weight, K, true, dout_r, N, false, K, N, g.Co, 1.0f, 0.0f);  // dcol
        col2im(dx + b0 * g.Ci * g.H * g.W, col, piece, piece.whole(), /*accumulate=*/false);
      }
    }
  });
  parallel_for(0, weight_floats, 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float sum = 0.0f;
      for (int64_t slot = 0; slot < c.slots; ++slot) sum += slot_dweights[slot * weight_floats + i];
      dweight[i] += sum;
    }
  });
}

// Note [kernel rows that only see padding]: one GEMM per band.
void forward_banded(float* out, float* workspace, const float* x, const float* weight, const float* bias,
                    const ConvGeometry& g) {
  const std::vector<Band> bands = g.bands();
  int64_t col_floats = 0, product_floats = 0;
  for (const Band& band : bands) {
    const int64_t n = g.B * band.rows() * g.Wo;
    col_floats = std::max(col_floats, g.Ci * band.kernel_rows() * g.kw * n);
    product_floats = std::max(product_floats, g.Co * n);
  }
  float* col = workspace;
  float* y = col + col_floats;
  float* slice = y + product_floats;
  for (const Band& band : bands) {
    const int64_t K = g.Ci * band.kernel_rows() * g.kw, N = g.B * band.rows() * g.Wo;
    if (K == 0) {
      fill_band(out, bias, g, band);
      continue;
    }
    im2col(col, x, g, band);
    const float* w = weight;
    if (band.kernel_rows() < g.kh) {
      gather_weight(slice, weight, g, band);
      w = slice;
    }
    sgemm(y, N, w, K, false, col, N, false, g.Co, N, K, 1.0f, 0.0f);
    reorder_to_nchw(out, y, bias, g, band);
  }
}

void backward_banded(float* dx, float* dweight, float* workspace, const float* dout, const float* x,
                     const float* weight, const ConvGeometry& g) {
  const std::vector<Band> bands = g.bands();
  int64_t col_floats = 0, product_floats = 0, slice_floats = 0;
  for (const Band& band : bands) {
    const int64_t k = g.Ci * band.kernel_rows() * g.kw, n = g.B * band.rows() * g.Wo;
    col_floats = std::max(col_floats, k * n);
    product_floats = std::max(product_floats, g.Co * n);
    slice_floats = std::max(slice_floats, g.Co * k);
  }
  float* col = workspace;
  float* dout_r = col + col_floats;
  float* slice = dout_r + product_floats;
  float* dslice = slice + slice_floats;
  if (dx) std::fill(dx, dx + g.B * g.Ci * g.H * g.W, 0.0f);
  for (const Band& band : bands) {
    const int64_t K = g.Ci * band.kernel_rows() * g.kw, N = g.B * band.rows() * g.Wo;
    if (K == 0) continue;
    const bool whole = band.kernel_rows() == g.kh;
    reorder_from_nchw(dout_r, dout, g, band);
    im2col(col, x, g, band);
    if (whole) {
      sgemm(dweight, K, dout_r, N, false, col, N, true, g.Co, K, N, 1.0f, 1.0f);
    } else {
      sgemm(dslice, K, dout_r, N, false, col, N, true, g.Co, K, N, 1.0f, 0.0f);
      add_weight_slice(dweight, dslice, g, band);
    }
    if (!dx) continue;
    const float* w = weight;
    if (!whole) {
      gather_weight(slice, weight, g, band);
      w = slice;
    }
    sgemm(col, N, w, K, true, dout_r, N, false, K, N, g.Co, 1.0f, 0.0f);
    col2im(dx, col, g, band, /*accumulate=*/true);
  }
}

void add_bias(float* out /* (B, Co, Ho·Wo) */, const float* bias, const ConvGeometry& g) {
  const int64_t HWo = g.spatial_out();
  parallel_for(0, g.B * g.Co, grain_for(HWo), [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const float shift = bias[task % g.Co];
      float* dst = out + task * HWo;
      for (int64_t i = 0; i < HWo; ++i) dst[i] += shift;
    }
  });
}

void fill_bias(float* out /* (B, Co, Ho·Wo) */, const float* bias, const ConvGeometry& g) {
  const int64_t HWo = g.spatial_out();
  parallel_for(0, g.B * g.Co, grain_for(HWo), [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const float value = bias ? bias[task % g.Co] : 0.0f;
      std::fill(out + task * HWo, out + (task + 1) * HWo, value);
    }
  });
}

// dbias[co] += Σ over b, oh, ow of dout[b, co, oh, ow] (summed in double).
void accumulate_bias_grad(float* dbias, const float* dout, const ConvGeometry& g) {
  const int64_t HWo = g.spatial_out();
  parallel_for(0, g.Co, grain_for(g.B * HWo), [&](int64_t lo, int64_t hi) {
    for (int64_t co = lo; co < hi; ++co) {
      double sum = 0.0;
      for (int64_t b = 0; b < g.B; ++b) {
        const float* src = dout + (b * g.Co + co) * HWo;
        for (int64_t i = 0; i < HWo; ++i) sum += src[i];
      }
      dbias[co] += float(sum);
    }
  });
}

}  // namespace

int64_t conv2d_workspace_floats(int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co,
                                int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                                int64_t stride_w, int64_t pad_h, int64_t pad_w) {
  return check_geometry("conv2d_workspace_floats", B, Ci, H, W, Co, kernel_h, kernel_w, stride_h,
                        stride_w, pad_h, pad_w)
      .workspace_floats();
}

void conv2d_forward(float* out, float* workspace, const float* x, const float* weight,
                    const float* bias, int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co,
                    int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                    int64_t pad_h, int64_t pad_w) {
  const ConvGeometry g = check_geometry("conv2d_forward", B, Ci, H, W, Co, kernel_h, kernel_w,
                                        stride_h, stride_w, pad_h, pad_w);
  check_workspace("conv2d_forward", workspace, g);
  if (g.N() == 0 || Co == 0) return;
  if (g.K() == 0) {
    fill_bias(out, bias, g);
    return;
  }
  if (g.winograd()) {
    forward_winograd(out, workspace, x, weight, bias, g);
    return;
  }
  if (g.banded()) {
    forward_banded(out, workspace, x, weight, bias, g);
    return;
  }
  if (const ConvGeometry::Chunks c = g.chunks(); c.count > 0) {
    forward_chunked(out, workspace, x, weight, bias, g, c);
    return;
  }
  // Note [one GEMM per batch]
  const int64_t K = g.K(), N = g.N();
  const float* col = x;
  if (g.needs_col()) {
    im2col(workspace, x, g, g.whole());
    col = workspace;
  }
  float* y = g.needs_reorder() ? workspace + g.col_floats() : out;
  sgemm(y, N, weight, K, false, col, N, false, Co, N, K, 1.0f, 0.0f);
  if (g.needs_reorder()) {
    reorder_to_nchw(out, y, bias, g, g.whole());
  } else if (bias) {
    add_bias(out, bias, g);
  }
}

void conv2d_backward(float* dx, float* dweight, float* dbias, float* workspace, const float* dout,
                     const float* x, const float* weight, int64_t B, int64_t Ci, int64_t H,
                     int64_t W, int64_t Co, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                     int64_t stride_w, int64_t pad_h, int64_t pad_w) {
  const ConvGeometry g = check_geometry("conv2d_backward", B, Ci, H, W, Co, kernel_h, kernel_w,
                                        stride_h, stride_w, pad_h, pad_w);
  check_workspace("conv2d_backward", workspace, g);
  if (g.N() == 0) return;
  if (dbias) accumulate_bias_grad(dbias, dout, g);
  if (g.K() == 0) return;
  if (Co == 0) {
    if (dx) std::fill(dx, dx + B * Ci * H * W, 0.0f);
    return;
  }
  if (g.banded()) {
    backward_banded(dx, dweight, workspace, dout, x, weight, g);
    return;
  }
  if (const ConvGeometry::Chunks c = g.chunks(); c.count > 0) {
    backward_chunked(dx, dweight, workspace, dout, x, weight, g, c);
    return;
  }
  // Note [one GEMM per batch]
  const int64_t K = g.K(), N = g.N();
  const float* dout_r = dout;
  if (g.needs_reorder()) {
    float* reordered = workspace + g.col_floats();
    reorder_from_nchw(reordered, dout, g, g.whole());
    dout_r = reordered;
  }
  const float* col = x;
  if (g.needs_col()) {
    im2col(workspace, x, g, g.whole());
    col = workspace;
  }
  sgemm(dweight, K, dout_r, N, false, col, N, true, Co, K, N, 1.0f, 1.0f);
  if (!dx) return;
  if (!g.needs_col()) {
    sgemm(dx, N, weight, K, true, dout_r, N, false, K, N, Co, 1.0f, 0.0f);
    return;
  }
  float* dcol = workspace;
  sgemm(dcol, N, weight, K, true, dout_r, N, false, K, N, Co, 1.0f, 0.0f);
  col2im(dx, dcol, g, g.whole(), /*accumulate=*/false);
}

void conv2d_forward_reference(float* out, const float* x, const float* weight, const float* bias,
                              int64_t B, int64_t Ci, int64_t H, int64_t W, int64_t Co,
                              int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                              int64_t stride_w, int64_t pad_h, int64_t pad_w) {
  const ConvGeometry g = check_geometry("conv2d_forward_reference", B, Ci, H, W, Co, kernel_h,
                                        kernel_w, stride_h, stride_w, pad_h, pad_w);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t co = 0; co < Co; ++co) {
      for (int64_t oh = 0; oh < g.Ho; ++oh) {
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          float acc = bias ? bias[co] : 0.0f;
          for (int64_t ci = 0; ci < Ci; ++ci) {
            for (int64_t ki = 0; ki < kernel_h; ++ki) {
              const int64_t ih = oh * stride_h - pad_h + ki;
              if (ih < 0 || ih >= H) continue;
              for (int64_t kj = 0; kj < kernel_w; ++kj) {
                const int64_t iw = ow * stride_w - pad_w + kj;
                if (iw < 0 || iw >= W) continue;
                acc += weight[((co * Ci + ci) * kernel_h + ki) * kernel_w + kj] *
                       x[((b * Ci + ci) * H + ih) * W + iw];
              }
            }
          }
          out[((b * Co + co) * g.Ho + oh) * g.Wo + ow] = acc;
        }
      }
    }
  }
}

void conv2d_backward_reference(float* dx, float* dweight, float* dbias, const float* dout,
                               const float* x, const float* weight, int64_t B, int64_t Ci,
                               int64_t H, int64_t W, int64_t Co, int64_t kernel_h,
                               int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                               int64_t pad_h, int64_t pad_w) {
  const ConvGeometry g = check_geometry("conv2d_backward_reference", B, Ci, H, W, Co, kernel_h,
                                        kernel_w, stride_h, stride_w, pad_h, pad_w);
  if (dx) std::fill(dx, dx + B * Ci * H * W, 0.0f);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t co = 0; co < Co; ++co) {
      for (int64_t oh = 0; oh < g.Ho; ++oh) {
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          const float d = dout[((b * Co + co) * g.Ho + oh) * g.Wo + ow];
          if (dbias) dbias[co] += d;
          for (int64_t ci = 0; ci < Ci; ++ci) {
            for (int64_t ki = 0; ki < kernel_h; ++ki) {
              const int64_t ih = oh * stride_h - pad_h + ki;
              if (ih < 0 || ih >= H) continue;
              for (int64_t kj = 0; kj < kernel_w; ++kj) {
                const int64_t iw = ow * stride_w - pad_w + kj;
                if (iw < 0 || iw >= W) continue;
                const int64_t wi = ((co * Ci + ci) * kernel_h + ki) * kernel_w + kj;
                const int64_t xi = ((b * Ci + ci) * H + ih) * W + iw;
                dweight[wi] += d * x[xi];
                if (dx) dx[xi] += d * weight[wi];
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace safl::cpu
