#include "server/command_line.h"

#include <algorithm>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace moe::server {
namespace {

// Appends `text` word-wrapped to `width` columns, each line indented by `indent` spaces.
void AppendWrapped(std::string* out, absl::string_view text, size_t indent, size_t width) {
  const std::string pad(indent, ' ');
  size_t column = 0;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (column == 0) {
      absl::StrAppend(out, pad, word);
      column = indent + word.size();
    } else if (column + 1 + word.size() > width) {
      absl::StrAppend(out, "\n", pad, word);
      column = indent + word.size();
    } else {
      absl::StrAppend(out, " ", word);
      column += 1 + word.size();
    }
  }
  absl::StrAppend(out, "\n");
}

}  // namespace

void NormalizeFlagNames(std::vector<std::string>* args) {
  for (size_t i = 1; i < args->size(); ++i) {
    std::string& arg = (*args)[i];
    if (arg == "--") break;
    if (arg.size() < 3 || arg[0] != '-' || arg[1] != '-') continue;
    const size_t name_end = std::min(arg.find('='), arg.size());
    std::replace(arg.begin() + 2, arg.begin() + static_cast<std::ptrdiff_t>(name_end), '-', '_');
  }
}

std::vector<std::string> ExtractRepeatedFlag(std::vector<std::string>* args,
                                             std::string_view name) {
  const std::string bare = absl::StrCat("--", std::string(name));
  const std::string with_value = absl::StrCat(bare, "=");
  std::vector<std::string> values;
  std::vector<std::string> rest;
  for (size_t i = 0; i < args->size(); ++i) {
    const std::string& arg = (*args)[i];
    if (i > 0 && arg == bare) {
      values.push_back(i + 1 < args->size() ? (*args)[++i] : std::string());
    } else if (i > 0 && absl::StartsWith(arg, with_value)) {
      values.push_back(arg.substr(with_value.size()));
    } else {
      rest.push_back(arg);
    }
  }
  *args = std::move(rest);
  return values;
}

bool WantsHelp(const std::vector<std::string>& args) {
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--") break;
    if (args[i] == "--help" || args[i] == "-h" || absl::StartsWith(args[i], "--help=")) {
      return true;
    }
  }
  return false;
}

std::string UsageText(std::string_view summary, const std::vector<FlagUsage>& flags) {
  std::string text = absl::StrCat(std::string(summary),
                                  "\n\nFlags (`--flag-name` and `--flag_name` are the same):\n");
  for (const FlagUsage& usage : flags) {
    const std::string dashed = absl::StrReplaceAll(usage.name, {{"_", "-"}});
    absl::StrAppend(&text, "  --", dashed);
    if (!usage.value_hint.empty()) absl::StrAppend(&text, " ", usage.value_hint);
    absl::StrAppend(&text, "\n");
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(usage.name);
    if (flag == nullptr) continue;
    AppendWrapped(&text, flag->Help(), 6, 92);
    const std::string default_value = flag->DefaultValue();
    if (!default_value.empty()) absl::StrAppend(&text, "      default: ", default_value, "\n");
  }
  return text;
}

}  // namespace moe::server
