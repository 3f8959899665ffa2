// Per-thread matrix-product precision (see matmul_precision.h).
#include "common/matmul_precision.h"

#include "common/cpu_features.h"

namespace safl {
namespace {
thread_local MatmulPrecision tls_precision = MatmulPrecision::Float32;
}  // namespace

MatmulPrecision matmul_precision() { return tls_precision; }

MatmulPrecisionScope::MatmulPrecisionScope(MatmulPrecision precision) : previous_(tls_precision) {
  tls_precision = precision;
}

MatmulPrecisionScope::~MatmulPrecisionScope() { tls_precision = previous_; }

bool bfloat16_matmul_available() {
  return simd_level() == SimdLevel::Avx512 && (amx_bf16_supported() || avx512_bf16_supported());
}

const char* bfloat16_matmul_unit() {
  if (!bfloat16_matmul_available()) return "";
  return amx_bf16_supported() ? "amx" : "avx512-bf16";
}

bool bfloat16_products_this_call() {
  return matmul_precision() == MatmulPrecision::BFloat16 && bfloat16_matmul_available();
}

const char* matmul_precision_name(MatmulPrecision precision) {
  return precision == MatmulPrecision::BFloat16 ? "bfloat16" : "float32";
}

}  // namespace safl
