// Command-line spelling the server accepts beyond what absl flags parses: `--flag-name` as
// well as `--flag_name`, and flags that may be given more than once (`--model A=x --model B=y`).
// The flags themselves are defined and parsed in main.cc.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace moe::server {

// Rewrites `--max-batch-tokens=8` as `--max_batch_tokens=8` (and `-max-batch-tokens`, which
// absl accepts too; names only, never values; stops at a bare `--`).
void NormalizeFlagNames(std::vector<std::string>* args);

// Removes every `--name=value`, `--name value`, `-name=value` and `-name value` from `args`
// and returns the values in order.
// A trailing `--name` with no value yields an empty value (reported by the caller).
std::vector<std::string> ExtractRepeatedFlag(std::vector<std::string>* args, std::string_view name);

// True when `args` asks for help (`--help`, `-h`, `--help=...`).
bool WantsHelp(const std::vector<std::string>& args);

struct FlagUsage {
  std::string name;        // as absl knows it (underscores)
  std::string value_hint;  // e.g. "N", "HOST:PORT"
};

// Usage text: `summary`, then each flag spelled with dashes, its help text and its default
// (read from the registered absl flag).
std::string UsageText(std::string_view summary, const std::vector<FlagUsage>& flags);

}  // namespace moe::server
