// A strict reader of NumPy .npy files (format versions 1.0, 2.0 and 3.0) holding what a
// [rows, width] model input can be: little-endian float32 ('<f4'), float64 ('<f8') or float16
// ('<f2'), C order, one dimension (one row) or two. Anything else is refused with a message that
// says what the file holds and what would be accepted; float64 and float16 are converted to
// float32.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/cli/input_rows.h"

namespace moe::client::cli {

// Parses the bytes of a .npy file; `name` (the file's path) starts every error message.
absl::StatusOr<InputRows> ParseNpy(absl::string_view bytes, absl::string_view name);

// Reads and parses the file at `path`.
absl::StatusOr<InputRows> ReadNpyFile(const std::string& path);

// IEEE 754 binary16 bits widened to float32, exactly (subnormals, infinities and NaN included).
// The client does not link moe's kernels (OpenBLAS, OpenMP) for this one conversion; a test
// compares it with moe::kernels::HalfToFloat for every bit pattern.
float HalfBitsToFloat(uint16_t bits);

}  // namespace moe::client::cli
