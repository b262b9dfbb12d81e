#include "client/src/float16.h"

#include <cstring>

namespace moe::client {

uint16_t FloatToHalfBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) {  // NaN: quiet, with the payload's top bits
    return sign | 0x7e00u | static_cast<uint16_t>((magnitude >> 13) & 0x03ffu);
  }
  // 65520 (0x477ff000) is half-way between the largest half, 65504, and 2^16: it and everything
  // above (infinity included) round to infinity.
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;
  if (magnitude >= 0x38800000u) {  // 2^-14 and above: a normal half
    // Rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits, ties to even; a
    // carry out of the mantissa correctly bumps the exponent.
    uint32_t rebiased = magnitude - 0x38000000u;
    rebiased += 0x0fffu + ((rebiased >> 13) & 1u);
    return sign | static_cast<uint16_t>(rebiased >> 13);
  }
  // At most 2^-25 (half the smallest subnormal, a tie that goes to the even 0): zero.
  if (magnitude <= 0x33000000u) return sign;
  // A subnormal half: the value in units of 2^-24, rounded to nearest even. 1024 units (a carry
  // into the exponent) is the pattern of the smallest normal, as it should be.
  const uint32_t exponent = magnitude >> 23;  // 102 .. 112
  const uint32_t significand = (magnitude & 0x007fffffu) | 0x00800000u;
  const uint32_t shift = 126 - exponent;  // 14 .. 24
  uint32_t units = significand >> shift;
  const uint32_t remainder = significand & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1);
  if (remainder > halfway || (remainder == halfway && (units & 1u) != 0)) ++units;
  return sign | static_cast<uint16_t>(units);
}

uint16_t FloatToBFloat16Bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) {  // NaN: quiet
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  // Ties to even; large finite values round up to infinity as they should.
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace moe::client
