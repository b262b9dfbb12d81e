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

// Where the flag name starts in `arg` (after `--` or `-`, both of which absl accepts); 0 when
// `arg` is not a flag.
size_t FlagNameStart(const std::string& arg) {
  if (arg.size() >= 3 && arg[0] == '-' && arg[1] == '-') return 2;
  if (arg.size() >= 2 && arg[0] == '-' && arg[1] != '-') return 1;
  return 0;
}

}  // namespace

void NormalizeFlagNames(std::vector<std::string>* args) {
  for (size_t i = 1; i < args->size(); ++i) {
    std::string& arg = (*args)[i];
    if (arg == "--") break;
    const size_t name_start = FlagNameStart(arg);
    if (name_start == 0) continue;
    const size_t name_end = std::min(arg.find('='), arg.size());
    std::replace(arg.begin() + static_cast<std::ptrdiff_t>(name_start),
                 arg.begin() + static_cast<std::ptrdiff_t>(name_end), '-', '_');
  }
}

std::vector<std::string> ExtractRepeatedFlag(std::vector<std::string>* args,
                                             std::string_view name) {
  std::vector<std::string> values;
  std::vector<std::string> rest;
  bool flags_ended = false;
  for (size_t i = 0; i < args->size(); ++i) {
    const std::string& arg = (*args)[i];
    const size_t name_start = i == 0 || flags_ended ? 0 : FlagNameStart(arg);
    flags_ended = flags_ended || (i > 0 && arg == "--");
    const std::string_view flag_name =
        name_start == 0 ? std::string_view()
                        : std::string_view(arg).substr(name_start, arg.find('=') - name_start);
    if (name_start == 0 || flag_name != name) {
      rest.push_back(arg);
    } else if (arg.find('=') != std::string::npos) {
      values.push_back(arg.substr(arg.find('=') + 1));
    } else {
      values.push_back(i + 1 < args->size() ? (*args)[++i] : std::string());
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
