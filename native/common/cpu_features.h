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

// Whether this CPU multiplies bfloat16 matrices in its AMX tile unit (AMX-TILE, AMX-BF16 and
// AVX512-BF16) and the OS lets this process use the tile registers (on Linux the first call asks
// for them with arch_prctl; elsewhere false). Independent of simd_level().
bool amx_bf16_supported();

}  // namespace safl
