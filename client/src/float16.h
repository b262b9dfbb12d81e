// float32 -> IEEE 754 binary16 and bfloat16 bit patterns, for FP16 and BF16 inputs sent raw. The
// client does not link moe's kernels library (it brings OpenBLAS and OpenMP), so it has its own
// two conversions; tests compare them bit for bit with moe::kernels::FloatToHalf/FloatToBF16.
#pragma once

#include <cstdint>

namespace moe::client {

// Round to nearest, ties to even; overflow to infinity, subnormals kept, NaN stays a (quiet) NaN.
uint16_t FloatToHalfBits(float value);
uint16_t FloatToBFloat16Bits(float value);

}  // namespace moe::client
