#include "moe/kernels/dtype.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <string>

namespace moe::kernels {
namespace {

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  size_t size;
};

constexpr std::array<DTypeEntry, 15> kDTypes = {{
    {DType::kBool, "BOOL", 1},
    {DType::kU8, "U8", 1},
    {DType::kI8, "I8", 1},
    {DType::kF8E5M2, "F8_E5M2", 1},
    {DType::kF8E4M3, "F8_E4M3", 1},
    {DType::kI16, "I16", 2},
    {DType::kU16, "U16", 2},
    {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},
    {DType::kI32, "I32", 4},
    {DType::kU32, "U32", 4},
    {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},
    {DType::kI64, "I64", 8},
    {DType::kU64, "U64", 8},
}};

const DTypeEntry& Entry(DType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry;
  }
  return kDTypes[0];  // unreachable: every enumerator is in the table
}

}  // namespace

size_t DTypeSize(DType dtype) { return Entry(dtype).size; }

std::string_view DTypeName(DType dtype) { return Entry(dtype).name; }

std::optional<DType> DTypeFromName(std::string_view name) {
  for (const auto& entry : kDTypes) {
    if (entry.name == name) return entry.dtype;
  }
  return std::nullopt;
}

std::optional<DType> ComputeDTypeFromString(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "f32" || lower == "float32" || lower == "fp32") return DType::kF32;
  if (lower == "f16" || lower == "float16" || lower == "fp16" || lower == "half") {
    return DType::kF16;
  }
  if (lower == "bf16" || lower == "bfloat16") return DType::kBF16;
  return std::nullopt;
}

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t out;
  if (exponent == 0x1f) {  // inf or NaN
    out = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    out = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // signed zero
    out = sign;
  } else {  // subnormal: renormalise
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    mantissa &= 0x3ffu;
    out = sign | (exponent << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &out, sizeof(value));
  return value;
}

uint16_t FloatToHalf(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits >= 0x7f800000u) {  // inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (abs_bits > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs_bits >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs_bits < 0x38800000u) {               // subnormal or zero in half
    if (abs_bits < 0x33000000u) return sign;  // rounds to zero
    const uint32_t exponent = abs_bits >> 23;
    const uint32_t mantissa = (abs_bits & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exponent;  // 14..24
    uint32_t half_mantissa = mantissa >> shift;
    const uint32_t remainder = mantissa & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (remainder > halfway || (remainder == halfway && (half_mantissa & 1u))) ++half_mantissa;
    return static_cast<uint16_t>(sign | half_mantissa);
  }
  // normal: rebias exponent, round mantissa to 10 bits (ties to even)
  uint32_t rounded = abs_bits + 0xfffu + ((abs_bits >> 13) & 1u);
  rounded -= (112u << 23);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

bool WidenToFloat(DType dtype, const void* src, float* dst, size_t count) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, count * sizeof(float));
      return true;
    // Checkpoint data carries no alignment guarantee: load each element with memcpy.
    case DType::kBF16: {
      // Blocks through aligned locals so the shift loop vectorises.
      const auto* in = static_cast<const std::byte*>(src);
      constexpr size_t kBlock = 512;
      uint16_t bits[kBlock];
      uint32_t wide[kBlock];
      for (size_t base = 0; base < count; base += kBlock) {
        const size_t n = std::min(kBlock, count - base);
        std::memcpy(bits, in + 2 * base, 2 * n);
        for (size_t i = 0; i < n; ++i) wide[i] = static_cast<uint32_t>(bits[i]) << 16;
        std::memcpy(dst + base, wide, 4 * n);
      }
      return true;
    }
    case DType::kF16: {
      const auto* in = static_cast<const std::byte*>(src);
      for (size_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, in + 2 * i, sizeof(bits));
        dst[i] = HalfToFloat(bits);
      }
      return true;
    }
    default:
      return false;
  }
}

}  // namespace moe::kernels
