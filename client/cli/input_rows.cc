#include "client/cli/input_rows.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cli/json_rows.h"
#include "client/cli/npy_reader.h"

namespace moe::client::cli {

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
  }
  std::ostringstream contents;
  contents << file.rdbuf();
  if (file.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return std::move(contents).str();
}

absl::StatusOr<InputRows> ReadInputFile(const std::string& path) {
  const std::string lower = absl::AsciiStrToLower(path);
  if (absl::EndsWith(lower, ".npy")) return ReadNpyFile(path);
  if (absl::EndsWith(lower, ".json")) return ReadJsonRowsFile(path);
  return absl::InvalidArgumentError(absl::StrCat(
      path, ": unknown input format: name it .npy (NumPy) or .json (rows of numbers)"));
}

InputRows RandomRows(int64_t rows, int64_t width, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  InputRows out{.rows = rows, .width = width, .values = std::vector<float>(rows * width)};
  for (float& value : out.values) value = uniform(rng);
  return out;
}

}  // namespace moe::client::cli
