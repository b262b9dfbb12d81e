#include "client/cli/json_rows.h"

#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "moe/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace moe::client::cli {
namespace {

// The JSON text of `value`, shortened for an error message.
std::string Excerpt(const nlohmann::json& value) {
  std::string text = value.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

}  // namespace

absl::StatusOr<InputRows> ParseJsonRows(absl::string_view text, absl::string_view name) {
  auto invalid = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", what));
  };
  nlohmann::json document;
  try {
    document = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    return invalid(absl::StrCat("not valid JSON: ", e.what()));
  }
  constexpr char kExpected[] =
      "expected an array of rows ([[0.1, 0.2], [0.3, 0.4]]) or one row ([0.1, 0.2])";
  if (!document.is_array() || document.empty()) {
    return invalid(absl::StrCat("holds ", Excerpt(document), "; ", kExpected));
  }
  // One row when the first element is a number, rows when it is an array.
  const bool one_row = !document.front().is_array();
  const nlohmann::json rows = one_row ? nlohmann::json::array({document}) : document;
  InputRows out;
  out.rows = static_cast<int64_t>(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    const nlohmann::json& row = rows[r];
    if (!row.is_array()) {
      return invalid(absl::StrCat("row ", r, " is ", Excerpt(row), ", not an array; ", kExpected));
    }
    if (row.empty()) return invalid(absl::StrCat("row ", r, " is empty"));
    if (r == 0) {
      out.width = static_cast<int64_t>(row.size());
      out.values.reserve(rows.size() * row.size());
    } else if (static_cast<int64_t>(row.size()) != out.width) {
      return invalid(absl::StrCat("row ", r, " has ", row.size(), " values, row 0 has ", out.width,
                                  " (every row must be as wide)"));
    }
    for (size_t i = 0; i < row.size(); ++i) {
      if (!row[i].is_number()) {
        return invalid(one_row
                           ? absl::StrCat("value ", i, " is ", Excerpt(row[i]), ", not a number")
                           : absl::StrCat("row ", r, ", value ", i, " is ", Excerpt(row[i]),
                                          ", not a number"));
      }
      const float value = row[i].get<float>();
      if (!std::isfinite(value)) {
        return invalid(absl::StrCat("row ", r, ", value ", i, " (", Excerpt(row[i]),
                                    ") is outside the float32 range"));
      }
      out.values.push_back(value);
    }
  }
  return out;
}

absl::StatusOr<InputRows> ReadJsonRowsFile(const std::string& path) {
  MOE_ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path));
  return ParseJsonRows(text, path);
}

}  // namespace moe::client::cli
