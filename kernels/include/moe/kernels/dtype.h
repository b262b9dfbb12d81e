// Element types shared by checkpoints, kernels and the engine, with the scalar conversions
// between the 16-bit float formats and float32.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace moe::kernels {

// Every dtype the safetensors format defines. Kernels compute in kF32, kF16 and kBF16; the
// others appear in checkpoints and reference files (token ids, expert ids).
enum class DType : uint8_t {
  kBool,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

// Size of one element in bytes.
size_t DTypeSize(DType dtype);

// The safetensors spelling ("F32", "BF16", ...).
std::string_view DTypeName(DType dtype);

// Parses the safetensors spelling; nullopt for anything else.
std::optional<DType> DTypeFromName(std::string_view name);

// Parses a user-facing spelling ("f32", "bf16", "f16", case-insensitive; also "float32",
// "bfloat16", "float16"); nullopt for anything else.
std::optional<DType> ComputeDTypeFromString(std::string_view name);

inline float BF16ToFloat(uint16_t bits) {
  const uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof(value));
  return value;
}

// Round to nearest, ties to even; NaN stays NaN (quiet).
inline uint16_t FloatToBF16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  const uint32_t rounding_bias = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding_bias) >> 16);
}

// IEEE 754 binary16 <-> binary32, round to nearest even, subnormals and infinities handled.
float HalfToFloat(uint16_t bits);
uint16_t FloatToHalf(float value);

// Widens `count` elements of `dtype` (kF32, kF16 or kBF16) at `src` to float32 at `dst`.
// Returns false for any other dtype.
bool WidenToFloat(DType dtype, const void* src, float* dst, size_t count);

}  // namespace moe::kernels
