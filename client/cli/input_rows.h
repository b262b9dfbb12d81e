// The rows `moe-client infer` sends: read from a NumPy .npy file, a JSON file, or made up
// (uniform random). Each reader's errors name the file and what is wrong with it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::client::cli {

// `rows` x `width` float32 values, row-major.
struct InputRows {
  int64_t rows = 0;
  int64_t width = 0;
  std::vector<float> values;
};

// Reads `path` by its extension: ".npy" (npy_reader.h) or ".json" (json_rows.h). INVALID_ARGUMENT
// for another extension; NOT_FOUND when the file cannot be opened.
absl::StatusOr<InputRows> ReadInputFile(const std::string& path);

// The whole of `path`, or NOT_FOUND naming it.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// `rows` x `width` values uniform in [0, 1) from std::mt19937_64 seeded with `seed`.
InputRows RandomRows(int64_t rows, int64_t width, uint64_t seed);

}  // namespace moe::client::cli
