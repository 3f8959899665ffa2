// Run-time SIMD detection (see cpu_features.h).
#include "common/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

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

}  // namespace

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
