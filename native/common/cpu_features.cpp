// Run-time SIMD detection (see cpu_features.h).
#include "common/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "common/error.h"

namespace safl {
namespace {

SimdLevel detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0).
  if (__builtin_cpu_supports("avx512f")) return SimdLevel::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SimdLevel::Avx2;
#endif
  return SimdLevel::Generic;
}

SimdLevel from_environment(SimdLevel supported) {
  const char* env = std::getenv("SAFL_SIMD");
  if (env == nullptr) return supported;
  SimdLevel wanted = supported;
  if (std::strcmp(env, "generic") == 0) wanted = SimdLevel::Generic;
  if (std::strcmp(env, "avx2") == 0) wanted = SimdLevel::Avx2;
  if (std::strcmp(env, "avx512") == 0) wanted = SimdLevel::Avx512;
  return wanted < supported ? wanted : supported;
}

std::atomic<int>& current_level() {
  static std::atomic<int> level(static_cast<int>(from_environment(simd_level_supported())));
  return level;
}

// Note [asking Linux for the tile registers]: the AMX tile data (8 KiB of state per thread) is
// off by default in a Linux process; arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) turns it
// on for every thread of the process, now and later (Linux 5.16+). Without it the first tile
// instruction would kill the process with SIGILL, so nothing uses AMX unless this succeeded.
bool detect_amx_bf16() {
#if defined(__linux__) && SAFL_BF16_KERNELS
  __builtin_cpu_init();
  unsigned eax, ebx, ecx, edx;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const bool amx_bf16 = (edx >> 22) & 1, amx_tile = (edx >> 24) & 1;
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  const bool avx512_bf16 = (eax >> 5) & 1;
  if (!amx_bf16 || !amx_tile || !avx512_bf16 || !__builtin_cpu_supports("avx512f")) return false;
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

bool detect_avx512_bf16() {
#if SAFL_BF16_KERNELS
  __builtin_cpu_init();
  // __builtin_cpu_supports checks that the OS saves the AVX-512 registers (XCR0) too.
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")) return false;
  unsigned eax, ebx, ecx, edx;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  if (eax < 1) return false;  // no subleaf 1
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  return (eax >> 5) & 1;
#else
  return false;
#endif
}

}  // namespace

bool avx512_bf16_supported() {
  static const bool supported = detect_avx512_bf16();
  return supported;
}

bool amx_bf16_supported() {
  static const bool supported = detect_amx_bf16();
  return supported;
}

SimdLevel simd_level_supported() {
  static const SimdLevel supported = detect();
  return supported;
}

SimdLevel simd_level() { return static_cast<SimdLevel>(current_level().load()); }

void set_simd_level(SimdLevel level) {
  SAFL_CHECK_RANGE(level <= simd_level_supported(), "set_simd_level: expected a level up to ",
                   simd_level_name(simd_level_supported()), " but received ", simd_level_name(level));
  current_level().store(static_cast<int>(level));
}

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::Avx512: return "avx512";
    case SimdLevel::Avx2: return "avx2";
    default: return "generic";
  }
}

}  // namespace safl
