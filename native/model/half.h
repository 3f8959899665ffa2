// IEEE 754 half precision <-> float conversion for model files stored as float16 (round to
// nearest even; infinities, NaN and subnormals kept).
#pragma once
#include <cstdint>
#include <cstring>

namespace safl {

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0x1Fu) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf / NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;  // ±0
  } else {  // subnormal: normalise
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    bits = sign | (uint32_t(113 - shift) << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t float_to_half(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) return uint16_t(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0u));  // inf / NaN
  if (abs >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // rounds past 65504: inf
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (abs < 0x33000000u) return sign;  // rounds to zero
    const uint32_t exponent = abs >> 23;
    const uint32_t mantissa = (abs & 0x7FFFFFu) | 0x800000u;
    // The value is mantissa · 2^(exponent - 150); in units of 2^-24 (the half subnormal step)
    // that is mantissa >> (126 - exponent).
    const uint32_t shift = 126u - exponent;
    const uint32_t half_mantissa = mantissa >> shift;
    const uint32_t remainder = mantissa & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1);
    const uint32_t rounded = half_mantissa + (remainder > halfway || (remainder == halfway && (half_mantissa & 1u)));
    return uint16_t(sign | rounded);
  }
  // Normal: rebias the exponent, round the mantissa to 10 bits (nearest even); a carry moves
  // into the exponent correctly.
  const uint32_t rebiased = abs - 0x38000000u;
  const uint32_t remainder = rebiased & 0x1FFFu;
  uint32_t h = rebiased >> 13;
  if (remainder > 0x1000u || (remainder == 0x1000u && (h & 1u))) ++h;
  return uint16_t(sign | h);
}

}  // namespace safl
