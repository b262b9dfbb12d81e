// Rows written as JSON: an array of rows, each an array of numbers (`[[0.1, 0.2], [0.3, 0.4]]`),
// or one row (`[0.1, 0.2]`). Every row must have the same, non-zero, number of values.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/cli/input_rows.h"

namespace moe::client::cli {

// Parses `text`; `name` (the file's path) starts every error message, which says where the
// problem is (row and value index, or the parser's byte offset).
absl::StatusOr<InputRows> ParseJsonRows(absl::string_view text, absl::string_view name);

// Reads and parses the file at `path`.
absl::StatusOr<InputRows> ReadJsonRowsFile(const std::string& path);

}  // namespace moe::client::cli
