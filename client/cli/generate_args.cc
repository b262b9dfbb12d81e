#include "client/cli/generate_args.h"

#include <limits>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace moe::client::cli {
namespace {

absl::StatusOr<int64_t> ParseCount(absl::string_view text, absl::string_view flag,
                                   absl::string_view whole) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &value)) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " '", whole, "': '", text,
                                                   "' is not a whole number (N or MIN:MAX)"));
  }
  return value;
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> ParseTokenIds(absl::string_view text, absl::string_view flag) {
  std::vector<int32_t> ids;
  if (absl::StripAsciiWhitespace(text).empty()) return ids;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    const absl::string_view trimmed = absl::StripAsciiWhitespace(item);
    int32_t id = 0;
    if (!absl::SimpleAtoi(trimmed, &id) || id < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, ": '", trimmed, "' is not a token id (comma-separated integers >= 0)"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<IntRange> ParseIntRange(absl::string_view text, absl::string_view flag,
                                       int64_t lowest) {
  const std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  if (parts.size() > 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " '", text, "': expected N or MIN:MAX"));
  }
  IntRange range;
  absl::StatusOr<int64_t> min = ParseCount(parts[0], flag, text);
  if (!min.ok()) return min.status();
  range.min = range.max = *min;
  if (parts.size() == 2) {
    absl::StatusOr<int64_t> max = ParseCount(parts[1], flag, text);
    if (!max.ok()) return max.status();
    range.max = *max;
  }
  if (range.min < lowest) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " '", text, "': must be at least ", lowest));
  }
  if (range.max < range.min) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " '", text, "': MIN is above MAX"));
  }
  return range;
}

std::vector<int32_t> RandomTokenIds(int64_t count, int64_t vocab_size, std::mt19937_64& rng) {
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab_size - 1));
  std::vector<int32_t> ids(static_cast<size_t>(count));
  for (int32_t& id : ids) id = token(rng);
  return ids;
}

absl::StatusOr<Spread> ParseSpread(absl::string_view text, absl::string_view flag) {
  if (text == "uniform") return Spread::kUniform;
  if (text == "log-uniform") return Spread::kLogUniform;
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, "=", text, ": expected uniform or log-uniform"));
}

absl::string_view SpreadName(Spread spread) {
  return spread == Spread::kLogUniform ? "log-uniform" : "uniform";
}

}  // namespace moe::client::cli
