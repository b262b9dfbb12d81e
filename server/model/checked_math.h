// Overflow-checked unsigned arithmetic for sizes and offsets read from untrusted files, where a
// wrapped product or sum would turn a hostile header into an out-of-bounds read.
#pragma once

#include <cstdint>
#include <optional>

namespace moe::model {

// a * b, or nullopt when the product does not fit in 64 bits.
inline std::optional<uint64_t> CheckedMul(uint64_t a, uint64_t b) {
  uint64_t result;
  if (__builtin_mul_overflow(a, b, &result)) return std::nullopt;
  return result;
}

// a + b, or nullopt when the sum does not fit in 64 bits.
inline std::optional<uint64_t> CheckedAdd(uint64_t a, uint64_t b) {
  uint64_t result;
  if (__builtin_add_overflow(a, b, &result)) return std::nullopt;
  return result;
}

// a - b, or nullopt when b > a.
inline std::optional<uint64_t> CheckedSub(uint64_t a, uint64_t b) {
  uint64_t result;
  if (__builtin_sub_overflow(a, b, &result)) return std::nullopt;
  return result;
}

}  // namespace moe::model
