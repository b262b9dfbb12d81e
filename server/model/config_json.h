// Reading a small JSON config file safely: its size capped before it is read, its nesting capped
// while it is parsed, and JSON values described in error messages without printing them whole.
// Shared by the Hugging Face config.json reader (model_config) and the MoEMLP one (moe_mlp_config).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moe::model {

// config.json files are a few KiB; anything past this is not a config.
inline constexpr uintmax_t kMaxConfigBytes = 16u << 20;
// Deepest nesting of arrays and objects accepted in a config.json. Real configs nest three or
// four levels (rope_scaling, quantization_config, task_specific_params).
inline constexpr int kMaxConfigDepth = 32;

// A short description of a JSON value for error messages: its type, and for a scalar the value
// ("the string 'x'", "the number 3", "true", "null"). Arrays and objects are described by their
// size only ("an array of size 2"): printing their contents would recurse as deep as the file
// nests and could run for megabytes.
std::string DescribeJsonValue(const nlohmann::json& value);

// Parses `text`, refusing nesting deeper than `max_depth` levels (the top-level container is
// one). The cap is applied while parsing (a parser callback that drops everything once it is
// exceeded), so a hostile file is never built into a deep tree that later code would walk
// recursively. Errors are INVALID_ARGUMENT naming `source`: "<source>: not valid JSON: ..." or
// "<source>: JSON is nested more than <max_depth> levels deep; <what_nests>", where `what_nests`
// says how deep a real file goes.
absl::StatusOr<nlohmann::json> ParseBoundedJson(const std::string& text, const std::string& source,
                                                int max_depth, std::string_view what_nests);

// The whole content of the regular file at `path`, refused before reading when larger than
// `max_bytes`. NOT_FOUND "no <what> at '<path>'" when there is no regular file there;
// INVALID_ARGUMENT "<path>: N bytes is too large for a <what> (limit M bytes)"; UNAVAILABLE,
// PERMISSION_DENIED or DATA_LOSS when it cannot be statted, opened or read in full.
absl::StatusOr<std::string> ReadBoundedTextFile(const std::filesystem::path& path,
                                                uintmax_t max_bytes, std::string_view what);

}  // namespace moe::model
