// CUDA token embedding and sinusoidal positions (see ops/embedding.h).
//   first_bad_id_kernel         one block finds the first id outside [0, rows); the host reads it
//                               back before anything is written (Note [CUDA embedding checks ids]).
//   embedding_forward_kernel    one thread per output element, a gather.
//   embedding_backward_kernel   one block per table row (Note [embedding backward by table row]).
//   sinusoid_table_kernel       one thread per element, the angle and sin/cos in double as on the CPU.
//   add_positions_kernel        one thread per element; out may be x.
// Backward rule: dtable accumulates (+=).
//
// Note [CUDA embedding checks ids]: the ids live on the device, so the op runs a one-block search
// for the first bad position and copies two numbers back: one synchronisation per call, the price
// of the RangeError the CPU op gives (the same message: the first bad id and its position).
//
// Note [embedding backward by table row]: block r owns table row r. It walks the ids in order,
// a chunk at a time through shared memory, and for every position n holding r its threads add
// dout[n] to their own columns of the row. Each element of dtable is updated by one thread, in
// the order of the positions — the order of the CPU loop, so the sums are the CPU's to the bit,
// with no atomics. Every block reads all N ids (N·rows shared-memory reads): cheap for the
// model's ~100-row character table.
#include <cmath>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "ops/embedding.h"

namespace safl::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kCheckBlock = 256;  // threads of first_bad_id_kernel
constexpr int kRowBlock = 256;    // threads per table row in the backward
constexpr int kIdChunk = 1024;    // ids staged in shared memory at a time

void check_sizes(const char* op, int64_t N, int64_t rows, int64_t D) {
  SAFL_CHECK_RANGE(N >= 0, op, ": expected N >= 0 but received ", N);
  SAFL_CHECK_RANGE(rows >= 0, op, ": expected rows >= 0 but received ", rows);
  SAFL_CHECK_RANGE(D >= 0, op, ": expected D >= 0 but received ", D);
}

// *first_bad = the smallest n with ids[n] outside [0, rows), or N when there is none.
__global__ void first_bad_id_kernel(int64_t* first_bad, const int32_t* __restrict__ ids, int64_t N, int64_t rows) {
  __shared__ int64_t warp_first[kCheckBlock / kWarp];
  int64_t first = N;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    if ((ids[n] < 0 || ids[n] >= rows) && n < first) first = n;
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const int64_t other = __shfl_xor_sync(0xffffffffu, first, offset);
    first = other < first ? other : first;
  }
  if (threadIdx.x % kWarp == 0) warp_first[threadIdx.x / kWarp] = first;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kCheckBlock / kWarp; ++w) first = warp_first[w] < first ? warp_first[w] : first;
    *first_bad = first;
  }
}

// Note [CUDA embedding checks ids].
void check_ids(const char* op, const int32_t* ids, int64_t N, int64_t rows) {
  if (N == 0) return;
  DeviceBuffer<int64_t> first_bad(1);
  first_bad_id_kernel<<<1, kCheckBlock>>>(first_bad.data(), ids, N, rows);
  SAFL_CUDA_CHECK_LAUNCH();
  int64_t position = N;
  first_bad.download(&position);
  if (position == N) return;
  int32_t bad_id = 0;
  SAFL_CUDA_CHECK(cudaMemcpy(&bad_id, ids + position, sizeof bad_id, cudaMemcpyDeviceToHost));
  SAFL_CHECK_RANGE(false, op, ": expected ids in [0, ", rows, ") but received ", bad_id, " at position ", position);
}

__global__ void embedding_forward_kernel(float* __restrict__ out, const int32_t* __restrict__ ids,
                                         const float* __restrict__ table, int64_t total, int64_t D) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) out[i] = table[int64_t(ids[i / D]) * D + i % D];
}

// Note [embedding backward by table row].
__global__ void embedding_backward_kernel(float* __restrict__ dtable, const float* __restrict__ dout,
                                          const int32_t* __restrict__ ids, int64_t N, int64_t D) {
  __shared__ int32_t chunk_ids[kIdChunk];
  const int64_t row = blockIdx.x;
  float* table_row = dtable + row * D;
  for (int64_t base = 0; base < N; base += kIdChunk) {
    const int count = int(N - base < kIdChunk ? N - base : kIdChunk);
    __syncthreads();  // every thread is done with the previous chunk
    for (int i = int(threadIdx.x); i < count; i += blockDim.x) chunk_ids[i] = ids[base + i];
    __syncthreads();
    for (int i = 0; i < count; ++i) {
      if (chunk_ids[i] != row) continue;  // the same branch for the whole block
      const float* g = dout + (base + i) * D;
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) table_row[d] += g[d];
    }
  }
}

__global__ void sinusoid_table_kernel(float* __restrict__ table, int64_t total, int64_t D, double log_base) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t t = i / D, d = i % D;
  const int64_t even = d - d % 2;  // 2i for both members of the pair
  const double angle = double(t) * exp(-double(even) / double(D) * log_base);
  table[i] = float(d % 2 == 0 ? sin(angle) : cos(angle));
}

// out and x may be the same array: each thread reads its element before writing it.
__global__ void add_positions_kernel(float* out, const float* x, const float* __restrict__ positions, int64_t total,
                                     int64_t T, int64_t D, float embedding_scale) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t t = i / D % T, d = i % D;
  out[i] = x[i] * embedding_scale + positions[t * D + d];
}

}  // namespace

void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t N, int64_t rows, int64_t D) {
  check_sizes("embedding_forward", N, rows, D);
  check_ids("embedding_forward", ids, N, rows);
  const int64_t total = N * D;
  if (total == 0) return;
  embedding_forward_kernel<<<grid_1d(size_t(total)), kBlock1D>>>(out, ids, table, total, D);
  SAFL_CUDA_CHECK_LAUNCH();
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t rows, int64_t D) {
  check_sizes("embedding_backward", N, rows, D);
  check_ids("embedding_backward", ids, N, rows);
  if (N == 0 || rows == 0 || D == 0) return;
  SAFL_CHECK_RANGE(rows <= INT32_MAX, "embedding_backward: expected rows <= ", INT32_MAX,
                   " on CUDA but received ", rows);
  embedding_backward_kernel<<<unsigned(rows), kRowBlock>>>(dtable, dout, ids, N, D);
  SAFL_CUDA_CHECK_LAUNCH();
}

void sinusoid_table(float* table, int64_t T, int64_t D) {
  SAFL_CHECK_RANGE(T >= 0, "sinusoid_table: expected T >= 0 but received ", T);
  SAFL_CHECK_RANGE(D >= 0, "sinusoid_table: expected D >= 0 but received ", D);
  const int64_t total = T * D;
  if (total == 0) return;
  sinusoid_table_kernel<<<grid_1d(size_t(total)), kBlock1D>>>(table, total, D, std::log(10000.0));
  SAFL_CUDA_CHECK_LAUNCH();
}

void add_positions(float* out, const float* x, const float* positions, int64_t B, int64_t T, int64_t D,
                   float embedding_scale) {
  SAFL_CHECK_RANGE(B >= 0, "add_positions: expected B >= 0 but received ", B);
  SAFL_CHECK_RANGE(T >= 0, "add_positions: expected T >= 0 but received ", T);
  SAFL_CHECK_RANGE(D >= 0, "add_positions: expected D >= 0 but received ", D);
  SAFL_CHECK_RANGE(std::isfinite(embedding_scale),
                   "add_positions: expected a finite embedding_scale but received ", embedding_scale);
  const int64_t total = B * T * D;
  if (total == 0) return;
  add_positions_kernel<<<grid_1d(size_t(total)), kBlock1D>>>(out, x, positions, total, T, D, embedding_scale);
  SAFL_CUDA_CHECK_LAUNCH();
}

}  // namespace safl::cuda
