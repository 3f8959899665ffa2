// The precision of the CPU's matrix products, chosen per thread by whoever runs a network: float32
// (the default, exact to float rounding) or bfloat16, where sgemm rounds both operands to bfloat16
// (8 bits of mantissa) and accumulates in float32 — on CPUs that multiply bfloat16 in hardware,
// faster: several times on AMX's tile unit, about twice with the AVX512-BF16 instructions.
// Elsewhere bfloat16 is a request that is not taken: the products stay float32
// (bfloat16_matmul_available() says which).
//
// The setting belongs to the calling thread and follows its work into the thread pool: a
// parallel_for or sgemm issued under a MatmulPrecisionScope runs its pool tasks with the same
// precision (native/common/threadpool.cpp), so two networks on two threads may use different ones.
#pragma once

namespace safl {

enum class MatmulPrecision { Float32, BFloat16 };

// This thread's precision (Float32 unless a MatmulPrecisionScope is active).
MatmulPrecision matmul_precision();

// Sets this thread's precision until the scope ends, then restores the previous one.
class MatmulPrecisionScope {
 public:
  explicit MatmulPrecisionScope(MatmulPrecision precision);
  ~MatmulPrecisionScope();
  MatmulPrecisionScope(const MatmulPrecisionScope&) = delete;
  MatmulPrecisionScope& operator=(const MatmulPrecisionScope&) = delete;

 private:
  MatmulPrecision previous_;
};

// True where MatmulPrecision::BFloat16 changes what sgemm does: simd_level() is AVX-512 and the CPU
// has AMX-BF16 (with the OS letting this process use the tile registers) or AVX512-BF16.
bool bfloat16_matmul_available();

// What multiplies the bfloat16 products here: "amx" (the tile unit, where the CPU has it),
// "avx512-bf16" (the VDPBF16PS instruction), or "" where bfloat16_matmul_available() is false.
const char* bfloat16_matmul_unit();

// True where this thread's products really are bfloat16: it asks for them and they are available.
bool bfloat16_products_this_call();

// "float32" or "bfloat16".
const char* matmul_precision_name(MatmulPrecision precision);

}  // namespace safl
