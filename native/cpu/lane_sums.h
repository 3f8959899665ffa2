// Horizontal sums of SIMD vectors for the CPU kernels written with the GCC/Clang vector extension
// (Note [lanes] in attention.cpp, Note [few rows] in linear.cpp). Header-only and inline, so that
// it compiles for the SIMD level of the entry point that inlines it (Note [SIMD variants] in
// attention.cpp).
//
// Note [transposed sums]: a kernel that takes dot products W lanes at a time ends with one vector
// of W partial sums per dot product. Summing each vector on its own costs log2(W) dependent
// steps through memory; W vectors are instead reduced together, as a transposition: each level
// adds the two halves of every vector's remaining lanes for two vectors at once (a pair of
// shuffles and one add), halving the number of vectors, until one vector holds the W sums in
// order. Lane j of every vector is added to lane j + W/2 first, then j + W/4, ..., the order of
// lane_sum, so both give the same bits. Clang (whose shuffle builtin wants constant indices)
// takes lane_sum per vector.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // vectors only cross inlined calls (Note [SIMD variants])
#endif

namespace safl::cpu::lanes {

// The sum of the W lanes of x: lane j += lane j + W/2, then j + W/4, ...
template <int W, class Lanes>
inline float lane_sum(const Lanes& x) {
  float lanes[W];
  std::memcpy(lanes, &x, sizeof lanes);
  for (int half = W / 2; half >= 1; half /= 2)
    for (int j = 0; j < half; ++j) lanes[j] += lanes[j + half];
  return lanes[0];
}

#if defined(__GNUC__) && !defined(__clang__)
// The shuffles of Note [transposed sums], level by level (level L reduces vectors of W >> L lanes
// still to add): the result's first W/2 lanes come from a (indices 0..W-1), the others from b
// (W..2W-1); block k of `half` lanes takes the low (or high) half of a's (or b's) k-th block.
// Computed at compile time: built at run time, the index vectors went through the stack and each
// shuffle waited for its indices to be stored and loaded back (a fifth of a decoding step's
// attention time).
template <int W>
struct ShuffleIndices {
  int32_t low[8][W] = {}, high[8][W] = {};
  constexpr ShuffleIndices() {
    int level = 0;
    for (int per_vector = W; per_vector > 1; per_vector /= 2, ++level) {
      const int half = per_vector / 2;
      for (int lane = 0; lane < W; ++lane) {
        const int source = lane < W / 2 ? 0 : W, within = lane % (W / 2);
        const int block = within / half, j = within % half;
        low[level][lane] = source + block * per_vector + j;
        high[level][lane] = source + block * per_vector + half + j;
      }
    }
  }
};
template <int W>
inline constexpr ShuffleIndices<W> kShuffleIndices{};
#endif

// sums[i] = lane_sum(v[i]) for i < W, bit for bit (Note [transposed sums]). v is overwritten.
template <int W, class Lanes>
inline void transposed_sums(float* sums, Lanes* v) {
#if defined(__GNUC__) && !defined(__clang__)
  typedef int32_t Indices __attribute__((vector_size(sizeof(Lanes))));
  int vectors = W, level = 0;
  for (int per_vector = W; per_vector > 1; per_vector /= 2, ++level) {
    Indices low, high;
    std::memcpy(&low, kShuffleIndices<W>.low[level], sizeof low);
    std::memcpy(&high, kShuffleIndices<W>.high[level], sizeof high);
    for (int i = 0; i < vectors / 2; ++i)
      v[i] = __builtin_shuffle(v[2 * i], v[2 * i + 1], low) + __builtin_shuffle(v[2 * i], v[2 * i + 1], high);
    vectors /= 2;
  }
  std::memcpy(sums, &v[0], sizeof(float) * W);
#else
  for (int i = 0; i < W; ++i) sums[i] = lane_sum<W>(v[i]);
#endif
}

}  // namespace safl::cpu::lanes
