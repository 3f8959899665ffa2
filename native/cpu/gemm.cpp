// CPU GEMM (see ops/gemm.h): the plain reference, and the fast path sgemm runs.
//
// The fast path is the classic packed, cache-blocked scheme. The product is cut into blocks
// (loop order below), op(A) and op(B) blocks are copied into contiguous panels (gemm_kernels.h
// has the layouts), and a register-tile micro-kernel computes MR × NR tiles of C from them:
//
//   for each row block of C (mc <= kMC rows)
//     for each depth block (kc <= kKC)                 pack A[mc × kc]   (stays in L2/L3)
//       for each column block (nc <= kNC columns)      pack B[kc × nc]   (stays in L2)
//         for each MR-row panel of the A block         (its kc × MR panel stays in L1)
//           for each NR-column panel of the B block    micro-kernel: one MR × NR tile of C
//
// The first depth block applies beta; later ones accumulate (beta = 1). The micro-kernel and
// the packing exist per SIMD level (gemm_kernel_{generic,avx2,avx512}.cpp), picked at each call
// from simd_level(). Threads split C into a grid of rectangles (Note [how sgemm uses threads]).
// Under MatmulPrecision::BFloat16 on a CPU with AMX or AVX512-BF16, the same blocking runs the
// bfloat16 kernels of gemm_kernel_amx.cpp or gemm_kernel_avx512_bf16.cpp instead (their panels
// hold bfloat16 values, gemm_kernels.h).
#include "ops/gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>

#include "common/cpu_features.h"
#include "common/error.h"
#include "common/matmul_precision.h"
#include "common/threadpool.h"
#include "cpu/gemm_kernels.h"

namespace safl::cpu {

void sgemm_reference(float* C, int64_t ldc, const float* A, int64_t lda, bool trans_a,
                     const float* B, int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K,
                     float alpha, float beta) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const float a = trans_a ? A[k * lda + i] : A[i * lda + k];
        const float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
        acc += a * b;
      }
      float& c = C[i * ldc + j];
      c = beta == 0.0f ? alpha * acc : alpha * acc + beta * c;
    }
  }
}

namespace {

using gemm_detail::GemmKernels;

// Block sizes (floats), tuned on the model's shapes (native/bench/bench_gemm.cpp) with the
// AVX-512 8 × 48 tile: a kKC × kNC block of packed B (1 MiB) stays in a core's L2 while a
// kKC × MR panel of A (12 KiB) stays in L1 and sweeps it; a kMC × kKC block of A (2.3 MiB) is
// packed once per depth block and B once per row block.
constexpr int64_t kKC = 384;
constexpr int64_t kNC = 672;  // a multiple of 48 and 16
constexpr int64_t kMC = 1536;

// Note [how sgemm uses threads]: C is split into a tm × tn grid of rectangles ("jobs"), each
// computed with its own packing, so jobs never wait for each other. The pool's threads claim
// jobs one at a time from a shared counter: with up to kJobsPerThread jobs per thread, a thread
// that the OS (or a busy neighbour on a shared machine) slows down simply takes fewer of them,
// where one fixed rectangle per thread would keep everyone waiting for it. The grid minimises
// the estimated finish time, (rounds of jobs) × (largest job's cost), counting multiply-adds
// with the padding of partial MR × NR tiles plus the packing each job repeats (kPackCost
// multiply-adds per packed float); among grids within 3% of the best it takes the finest.
// A job that reads a packed B (Note [packed B] in ops/gemm.h) pays kReadCost per float of its
// columns' panels: split by rows, every job would stream all of B from memory.
// A job gets at least kMinFlopsPerTask (2 MFLOP, some 13 µs of one core): waking the pool costs
// several µs on an idle machine and tens of µs on a busy one, so smaller products run on the
// calling thread alone. 8 MFLOP left the tiny config's decoding steps (products of 3 to 8
// MFLOP) on one thread: 2 MFLOP decodes 4% (batch 64) to 8% (batch 1) more images per second
// (bench_model, 2 threads).
constexpr double kPackCost = 8.0;
constexpr double kReadCost = 4.0;  // per float of packed B a job reads (Note [streaming packed B])
constexpr double kMinFlopsPerTask = 1 << 21;
constexpr int64_t kJobsPerThread = 4;

// The kernels this thread's product runs: bfloat16 kernels when asked for and available (AMX
// tiles where the CPU has them), else the float32 kernels of the SIMD level.
const GemmKernels& kernels_for_this_call() {
  if (bfloat16_products_this_call()) {
    return amx_bf16_supported() ? gemm_detail::gemm_kernels_amx() : gemm_detail::gemm_kernels_avx512_bf16();
  }
  switch (simd_level()) {
    case SimdLevel::Avx512: return gemm_detail::gemm_kernels_avx512();
    case SimdLevel::Avx2: return gemm_detail::gemm_kernels_avx2();
    default: return gemm_detail::gemm_kernels_generic();
  }
}

// Note [thread-local packing buffers]: packing buffers belong to the thread that runs a task,
// not to the task index: sgemm may be called concurrently from several threads (two
// AsyncWorkers, or the bodies of a parallel_for, where each nested sgemm runs as task 0), and
// they must not share scratch. Each thread keeps its largest buffers (at most about 3.4 MiB)
// for the next call.
class PackBuffer {
 public:
  float* get(size_t floats) {
    if (floats > capacity_) {
      const size_t bytes = (floats * sizeof(float) + kAlign - 1) / kAlign * kAlign;
      storage_.reset(static_cast<float*>(std::aligned_alloc(kAlign, bytes)));
      SAFL_CHECK(storage_ != nullptr, "sgemm: could not allocate ", bytes, " bytes of packing buffer");
      capacity_ = floats;
    }
    return storage_.get();
  }

 private:
  static constexpr size_t kAlign = 64;
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> storage_;
  size_t capacity_ = 0;
};

struct Product {
  float* C;
  int64_t ldc;
  const float* A;
  int64_t lda;
  bool trans_a;
  const float* B;
  int64_t ldb;
  bool trans_b;
  int64_t K;
  float alpha;
  float beta;
};

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// Floats a panel gives each of its rows (A) or columns (B) for depth kc (gemm_kernels.h).
int64_t panel_floats(const GemmKernels& kernels, int64_t kc) {
  return round_up(kc, kernels.k_align) / kernels.values_per_float;
}

// Note [streaming packed B]: a packed B (a decoder weight at inference) is read from memory, not
// from a block just packed into L2. With few rows (a decoding step's 64: up to kStreamRows) the
// panels are the outer loop: each NR-column panel serves every MR-row panel of A in turn while the
// next one is prefetched into L2, so its load overlaps those products; rows outer would wait for
// the block's first pass from memory. The tiles and their sums are the same either way. A single
// row panel (batch-1 decoding) takes the panels in order anyway, and there the prefetches only
// cost: base batch-1 bfloat16 decoding ran at 18.9 images/s with them, 23.4 without.
constexpr int64_t kStreamRows = 64;

// C[m0:m1, n0:n1] of the product, blocked and packed as in the file header; op(B)'s panels come
// from b_prepacked when it is given (Note [packed B] in ops/gemm.h).
void multiply_block(const GemmKernels& kernels, const Product& p, const PackedB* b_prepacked, int64_t m0,
                    int64_t m1, int64_t n0, int64_t n1) {
  thread_local PackBuffer a_buffer, b_buffer;
  const int64_t mr = kernels.mr, nr = kernels.nr;
  const int64_t kc_max = std::min(kKC, p.K);
  float* a_packed = a_buffer.get(size_t(round_up(std::min(kMC, m1 - m0), mr) * panel_floats(kernels, kc_max)));
  float* b_packed =
      b_prepacked ? nullptr : b_buffer.get(size_t(round_up(std::min(kNC, n1 - n0), nr) * panel_floats(kernels, kc_max)));
  if (kernels.enter != nullptr) kernels.enter();
  for (int64_t ic = m0; ic < m1; ic += kMC) {
    const int64_t mc = std::min(kMC, m1 - ic);
    for (int64_t pc = 0; pc < p.K; pc += kKC) {
      const int64_t kc = std::min(kKC, p.K - pc);
      const int64_t kc_floats = panel_floats(kernels, kc);
      const float beta = pc == 0 ? p.beta : 1.0f;
      kernels.pack_a(a_packed, p.A, p.lda, p.trans_a, ic, mc, pc, kc);
      for (int64_t jc = n0; jc < n1; jc += kNC) {
        const int64_t nc = std::min(kNC, n1 - jc);
        const float* b_block = b_packed;
        if (b_prepacked) {
          b_block = b_prepacked->panels(pc / kKC, jc);
        } else {
          kernels.pack_b(b_packed, p.B, p.ldb, p.trans_b, pc, kc, jc, nc);
        }
        auto tile = [&](int64_t ir, int64_t jr) {
          kernels.micro_kernel(kc, a_packed + ir * kc_floats, b_block + jr * kc_floats,
                               p.C + (ic + ir) * p.ldc + jc + jr, p.ldc, std::min(mr, mc - ir),
                               std::min(nr, nc - jr), p.alpha, beta);
        };
        if (b_prepacked && mc > mr && mc <= kStreamRows) {  // Note [streaming packed B]
          for (int64_t jr = 0; jr < nc; jr += nr) {
            if (jr + nr < nc) {
              const float* next = b_block + (jr + nr) * kc_floats;
              for (int64_t f = 0; f < nr * kc_floats; f += 16) __builtin_prefetch(next + f, 0, 2);
            }
            for (int64_t ir = 0; ir < mc; ir += mr) tile(ir, jr);
          }
        } else {
          for (int64_t ir = 0; ir < mc; ir += mr)
            for (int64_t jr = 0; jr < nc; jr += nr) tile(ir, jr);
        }
      }
    }
  }
  if (kernels.leave != nullptr) kernels.leave();
}

struct Grid {
  int64_t rows = 1, cols = 1;
};

// See Note [how sgemm uses threads]. With b_prepacked, jobs do not pack B.
Grid choose_grid(int64_t M, int64_t N, int64_t K, int64_t mr, int64_t nr, int threads, bool b_prepacked) {
  const int64_t row_panels = (M + mr - 1) / mr, col_panels = (N + nr - 1) / nr;
  const double flops = 2.0 * double(M) * double(N) * double(K);
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, int64_t(flops / kMinFlopsPerTask)));
  if (workers == 1) return Grid{};
  const int64_t max_jobs = std::min<int64_t>(workers * kJobsPerThread, int64_t(flops / kMinFlopsPerTask));
  Grid best;
  double best_cost = std::numeric_limits<double>::infinity();
  for (int64_t tm = 1; tm <= std::min(max_jobs, row_panels); ++tm) {
    for (int64_t tn = 1; tm * tn <= max_jobs && tn <= col_panels; ++tn) {
      const double m = double((row_panels + tm - 1) / tm * mr);
      const double n = double((col_panels + tn - 1) / tn * nr);
      const double repacks_of_b = b_prepacked ? 0.0 : std::ceil(m / double(kMC));
      const double rounds = double((tm * tn + workers - 1) / workers);
      const double reads_of_b = b_prepacked ? kReadCost * double(K) * n : 0.0;
      const double cost = rounds * (m * n * double(K) + kPackCost * double(K) * (m + n * repacks_of_b) + reads_of_b);
      if (cost < best_cost * 0.97 || (cost < best_cost * 1.03 && tm * tn > best.rows * best.cols)) {
        best_cost = std::min(best_cost, cost);
        best = {tm, tn};
      }
    }
  }
  return best;
}

// C = beta · C over an M × N block; beta == 0 writes zeros without reading C.
void scale_c(float* C, int64_t ldc, int64_t M, int64_t N, float beta) {
  for (int64_t i = 0; i < M; ++i) {
    float* row = C + i * ldc;
    if (beta == 0.0f) {
      std::fill(row, row + N, 0.0f);
    } else if (beta != 1.0f) {
      for (int64_t j = 0; j < N; ++j) row[j] *= beta;
    }
  }
}

// Checks the arguments (ldb only when B is not packed) and handles the products that multiply
// nothing; returns whether there is a product left to compute.
bool check_product(float* C, int64_t ldc, int64_t lda, bool trans_a, const int64_t* ldb, bool trans_b, int64_t M,
                   int64_t N, int64_t K, float alpha, float beta) {
  SAFL_CHECK_RANGE(M >= 0 && N >= 0 && K >= 0, "sgemm: expected M, N, K >= 0 but received ", M, ", ", N, ", ", K);
  SAFL_CHECK_RANGE(lda >= (trans_a ? M : K), "sgemm: expected lda >= ", trans_a ? "M" : "K",
                   " (", trans_a ? M : K, ") but received ", lda);
  if (ldb != nullptr)
    SAFL_CHECK_RANGE(*ldb >= (trans_b ? K : N), "sgemm: expected ldb >= ", trans_b ? "K" : "N",
                     " (", trans_b ? K : N, ") but received ", *ldb);
  SAFL_CHECK_RANGE(ldc >= N, "sgemm: expected ldc >= N (", N, ") but received ", ldc);
  if (M == 0 || N == 0) return false;
  if (K == 0 || alpha == 0.0f) {
    scale_c(C, ldc, M, N, beta);
    return false;
  }
  return true;
}

// Runs the product over the thread pool (Note [how sgemm uses threads]).
void run_product(const GemmKernels& kernels, const Product& product, const PackedB* b_prepacked, int64_t M,
                 int64_t N) {
  const Grid grid = choose_grid(M, N, product.K, kernels.mr, kernels.nr, num_threads(), b_prepacked != nullptr);
  const int64_t row_panels = (M + kernels.mr - 1) / kernels.mr;
  const int64_t col_panels = (N + kernels.nr - 1) / kernels.nr;
  const int64_t jobs = grid.rows * grid.cols;
  std::atomic<int64_t> next_job{0};
  parallel_run(int(jobs), [&](int, int) {
    for (int64_t job = next_job++; job < jobs; job = next_job++) {
      const int64_t gi = job / grid.cols, gj = job % grid.cols;
      const int64_t m0 = row_panels * gi / grid.rows * kernels.mr;
      const int64_t m1 = std::min(M, row_panels * (gi + 1) / grid.rows * kernels.mr);
      const int64_t n0 = col_panels * gj / grid.cols * kernels.nr;
      const int64_t n1 = std::min(N, col_panels * (gj + 1) / grid.cols * kernels.nr);
      if (m0 < m1 && n0 < n1) multiply_block(kernels, product, b_prepacked, m0, m1, n0, n1);
    }
  });
}

}  // namespace

void sgemm(float* C, int64_t ldc, const float* A, int64_t lda, bool trans_a, const float* B,
           int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  if (!check_product(C, ldc, lda, trans_a, &ldb, trans_b, M, N, K, alpha, beta)) return;
  run_product(kernels_for_this_call(), Product{C, ldc, A, lda, trans_a, B, ldb, trans_b, K, alpha, beta}, nullptr,
              M, N);
}

void PackedB::pack(const float* B, int64_t ldb, bool trans_b, int64_t K, int64_t N) {
  SAFL_CHECK_RANGE(K >= 0 && N >= 0, "PackedB::pack: expected K, N >= 0 but received ", K, ", ", N);
  SAFL_CHECK_RANGE(ldb >= (trans_b ? K : N), "PackedB::pack: expected ldb >= ", trans_b ? "K" : "N",
                   " (", trans_b ? K : N, ") but received ", ldb);
  const GemmKernels& kernels = kernels_for_this_call();
  const int64_t nr = kernels.nr, columns = round_up(N, nr);
  const int64_t blocks = (K + kKC - 1) / kKC;
  K_ = K;
  N_ = N;
  full_k_ = panel_floats(kernels, std::min(kKC, K));
  last_k_ = panel_floats(kernels, K - std::max<int64_t>(0, blocks - 1) * kKC);
  block_floats_ = columns * full_k_;
  constexpr size_t kAlignFloats = 16;  // 64 bytes
  const size_t floats = size_t(std::max<int64_t>(0, blocks - 1) * block_floats_ + columns * last_k_);
  storage_.assign(floats + kAlignFloats, 0.0f);
  offset_ = (kAlignFloats - (reinterpret_cast<uintptr_t>(storage_.data()) / sizeof(float)) % kAlignFloats) %
            kAlignFloats;
  kernels_ = &kernels;
  // Each depth block packed as sgemm packs its column blocks, at the place panels() finds them.
  parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t pb = lo; pb < hi; ++pb) {
      const int64_t pc = pb * kKC, kc = std::min(kKC, K - pc);
      for (int64_t jc = 0; jc < N; jc += kNC)
        kernels.pack_b(storage_.data() + panel_offset(pb, jc), B, ldb, trans_b, pc, kc, jc, std::min(kNC, N - jc));
    }
  });
}

bool PackedB::fits_this_call() const { return kernels_ == &kernels_for_this_call(); }

size_t PackedB::panel_offset(int64_t pb, int64_t j) const {
  const bool last = (pb + 1) * kKC >= K_;
  return offset_ + size_t(pb * block_floats_ + j * (last ? last_k_ : full_k_));
}

const float* PackedB::panels(int64_t pb, int64_t j) const { return storage_.data() + panel_offset(pb, j); }

void sgemm_packed_b(float* C, int64_t ldc, const float* A, int64_t lda, bool trans_a, const PackedB& B, int64_t M,
                    float alpha, float beta) {
  SAFL_CHECK(B.fits_this_call(), "sgemm_packed_b: B was packed for other kernels than this call runs ",
             "(another SIMD level or matrix-product precision)");
  const int64_t N = B.N(), K = B.K();
  if (!check_product(C, ldc, lda, trans_a, nullptr, false, M, N, K, alpha, beta)) return;
  run_product(kernels_for_this_call(), Product{C, ldc, A, lda, trans_a, nullptr, 0, false, K, alpha, beta}, &B, M,
              N);
}

}  // namespace safl::cpu
