// Values of `moe-client generate` and `bench --generate` flags: lists of token ids
// ("1,2,3") and counts given as one number or a range ("128" or "16:256").
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::client::cli {

// "1,2,3" (spaces around the commas allowed) as ids; "" is no id. INVALID_ARGUMENT naming
// `flag` and the item for anything but non-negative 32-bit integers.
absl::StatusOr<std::vector<int32_t>> ParseTokenIds(absl::string_view text, absl::string_view flag);

// How values are spread over a range: uniformly, or log-uniformly (as many values in [8, 16)
// as in [256, 512): most short, a long tail, like the output lengths of chat traffic).
enum class Spread { kUniform, kLogUniform };

// Inclusive bounds: a single number N is [N, N].
struct IntRange {
  int64_t min = 0;
  int64_t max = 0;
  Spread spread = Spread::kUniform;
  bool fixed() const { return min == max; }
  // A value in [min, max], spread as `spread` says.
  int64_t Draw(std::mt19937_64& rng) const {
    if (spread == Spread::kLogUniform && min >= 1 && max > min) {
      const double u = std::uniform_real_distribution<double>(
          std::log(static_cast<double>(min)), std::log(static_cast<double>(max) + 1.0))(rng);
      return std::clamp(static_cast<int64_t>(std::exp(u)), min, max);
    }
    return std::uniform_int_distribution<int64_t>(min, max)(rng);
  }
};

// "uniform" or "log-uniform"; INVALID_ARGUMENT naming `flag` otherwise.
absl::StatusOr<Spread> ParseSpread(absl::string_view text, absl::string_view flag);
absl::string_view SpreadName(Spread spread);

// "N" or "MIN:MAX" with `lowest` <= MIN <= MAX. INVALID_ARGUMENT naming `flag` otherwise.
absl::StatusOr<IntRange> ParseIntRange(absl::string_view text, absl::string_view flag,
                                       int64_t lowest = 1);

// `count` ids uniform in [0, vocab_size).
std::vector<int32_t> RandomTokenIds(int64_t count, int64_t vocab_size, std::mt19937_64& rng);

}  // namespace moe::client::cli
