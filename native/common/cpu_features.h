// Which SIMD code path the CPU kernels take, chosen at run time from cpuid (never -march=native):
// a prebuilt binary must run on any x86-64-v2 CPU. SAFL_SIMD=generic|avx2|avx512 in the
// environment lowers the choice (never raises it past what the CPU supports).
#pragma once

namespace safl {

enum class SimdLevel { Generic = 0, Avx2 = 1, Avx512 = 2 };

// The level the kernels use now.
SimdLevel simd_level();
// The best level this CPU (and OS) supports.
SimdLevel simd_level_supported();
// Force a level for tests and benchmarks; throws a RangeError if the CPU does not support it.
void set_simd_level(SimdLevel level);
// "generic", "avx2" (AVX2 + FMA) or "avx512" (AVX-512 F).
const char* simd_level_name(SimdLevel level);

// Whether this build has the bfloat16 kernels (native/cpu/gemm_kernel_amx.cpp and
// gemm_kernel_avx512_bf16.cpp): x86-64 with a compiler that knows the AMX and AVX512-BF16
// intrinsics (GCC 11+, Clang 12+). Older compilers build without them, and bfloat16 products then
// stay float32.
#if defined(__x86_64__) && ((defined(__clang__) && __clang_major__ >= 12) || \
                            (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define SAFL_BF16_KERNELS 1
#else
#define SAFL_BF16_KERNELS 0
#endif

// Whether this CPU multiplies bfloat16 matrices in its AMX tile unit (AMX-TILE, AMX-BF16 and
// AVX512-BF16) and the OS lets this process use the tile registers (on Linux the first call asks
// for them with arch_prctl; elsewhere false), and this build has the bfloat16 kernels.
// Independent of simd_level().
bool amx_bf16_supported();

// Whether this CPU has the AVX512-BF16 instructions (VDPBF16PS, VCVTNE2PS2BF16) with AVX-512 F and
// BW, the OS saves the AVX-512 registers, and this build has the bfloat16 kernels. Independent
// of simd_level().
bool avx512_bf16_supported();

}  // namespace safl
