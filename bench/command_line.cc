#include "bench/command_line.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace moe::bench {
namespace {

// Flags absl::ParseCommandLine handles itself without registering them for lookup. The help
// flags never reach it (WantsHelp), nor does --flagfile (expanded here).
constexpr std::string_view kHelpSwitches[] = {"h",           "help",   "helpfull", "helpshort",
                                              "helppackage", "helpon", "helpmatch"};
constexpr std::string_view kBuiltinSwitches[] = {"version", "only_check_args"};
constexpr std::string_view kBuiltinWithValue[] = {"fromenv", "tryfromenv", "undefok"};

// Nesting limit for --flagfile inside a flag file (a file that names itself would loop).
constexpr int kMaxFlagfileDepth = 8;

template <size_t N>
bool Contains(const std::string_view (&names)[N], std::string_view name) {
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

// The flag name of `arg` ("--top-k=2" -> "top_k"), or nullopt when `arg` is not a flag.
std::optional<std::string> FlagName(const std::string& arg) {
  if (arg.size() < 2 || arg[0] != '-') return std::nullopt;
  const size_t dashes = arg[1] == '-' ? 2 : 1;
  const size_t equals = arg.find('=');
  std::string name =
      arg.substr(dashes, equals == std::string::npos ? std::string::npos : equals - dashes);
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

// The arguments of one flag file: one per non-blank line, '#' lines skipped, surrounding
// whitespace trimmed (absl's flag file format).
absl::StatusOr<std::vector<std::string>> ReadFlagfile(const std::string& path) {
  std::ifstream file(path);
  if (!file) {
    return absl::InvalidArgumentError(absl::StrCat("--flagfile: cannot read '", path, "'"));
  }
  std::vector<std::string> args;
  std::string line;
  int line_number = 0;
  while (std::getline(file, line)) {
    ++line_number;
    const std::string trimmed(absl::StripAsciiWhitespace(line));
    if (trimmed.empty() || trimmed[0] == '#') continue;
    if (trimmed[0] != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("--flagfile: ", path, ":", line_number, ": '", trimmed,
                       "' is not a flag (one --name=value per line)"));
    }
    args.push_back(trimmed);
  }
  if (file.bad()) {
    return absl::InvalidArgumentError(absl::StrCat("--flagfile: error reading '", path, "'"));
  }
  return args;
}

// Checks `in` (arguments without the program name) and appends the normalised arguments to
// `out`, expanding flag files `depth` levels deep so far. `program` names the tool in messages.
absl::Status CheckArgs(absl::string_view program, const std::vector<std::string>& in, int depth,
                       std::vector<std::string>& out) {
  for (size_t i = 0; i < in.size(); ++i) {
    const std::string& arg = in[i];
    if (arg == "--") {
      if (i + 1 < in.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected argument '", in[i + 1], "': ", program, " takes only flags"));
      }
      out.push_back(arg);
      continue;
    }
    const std::optional<std::string> flag_name = FlagName(arg);
    if (!flag_name.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "': ", program, " takes only flags (--help)"));
    }
    const std::string& name = *flag_name;
    const size_t equals = arg.find('=');
    const bool has_value = equals != std::string::npos;
    std::string value = has_value ? arg.substr(equals + 1) : "";

    if (name == "flagfile") {
      if (!has_value) {
        if (i + 1 >= in.size()) {
          return absl::InvalidArgumentError("flag '--flagfile' is missing its value");
        }
        value = in[++i];
      }
      if (depth >= kMaxFlagfileDepth) {
        return absl::InvalidArgumentError(absl::StrCat("--flagfile: nested more than ",
                                                       kMaxFlagfileDepth, " deep at '", value,
                                                       "' (does a file name itself?)"));
      }
      for (absl::string_view path : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        absl::StatusOr<std::vector<std::string>> file_args = ReadFlagfile(std::string(path));
        if (!file_args.ok()) return file_args.status();
        if (absl::Status status = CheckArgs(program, *file_args, depth + 1, out); !status.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat(status.message(), " (in --flagfile ", path, ")"));
        }
      }
      continue;
    }
    if (Contains(kBuiltinSwitches, name) || Contains(kBuiltinWithValue, name)) {
      // absl's own flags, handled by absl::ParseCommandLine.
      out.push_back(absl::StrCat("--", name, has_value ? "=" : "", value));
      if (!has_value && Contains(kBuiltinWithValue, name) && i + 1 < in.size()) {
        out.push_back(in[++i]);
      }
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    bool negated = false;
    if (flag == nullptr && name.rfind("no", 0) == 0) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      negated = flag != nullptr && flag->IsOfType<bool>();
      if (!negated) flag = nullptr;
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag '", arg, "' (", program, " --help lists the flags)"));
    }
    out.push_back(absl::StrCat("--", name, has_value ? "=" : "", value));
    if (negated) {
      if (has_value) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag '", arg, "' negates a boolean and takes no value"));
      }
      continue;
    }
    if (flag->IsOfType<bool>()) {
      if (!has_value) continue;
    } else if (!has_value) {
      if (i + 1 >= in.size()) {
        return absl::InvalidArgumentError(absl::StrCat("flag '", arg, "' is missing its value"));
      }
      value = in[++i];
      out.push_back(value);
    }
    // Parse once here to report a bad value ourselves; ParseCommandLine sets it again.
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value '", value, "' for flag --", name, ": ", error));
    }
  }
  return absl::OkStatus();
}

// `text` wrapped at `width` columns, every line indented by `indent` spaces.
std::string Wrap(absl::string_view text, size_t indent, size_t width) {
  std::string out;
  size_t column = 0;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (column > 0 && column + 1 + word.size() > width) {
      out += '\n';
      column = 0;
    }
    if (column == 0) {
      out.append(indent, ' ');
      column = indent;
    } else {
      out += ' ';
      ++column;
    }
    absl::StrAppend(&out, word);
    column += word.size();
  }
  return out;
}

// "--name=N", "--[no]name", ...: how a flag is written, with a placeholder for its value.
std::string Synopsis(const absl::CommandLineFlag& flag) {
  const std::string name(flag.Name());
  if (flag.IsOfType<bool>()) return absl::StrCat("--[no]", name);
  if (flag.IsOfType<std::string>()) return absl::StrCat("--", name, "=TEXT");
  if (flag.IsOfType<int32_t>() || flag.IsOfType<int64_t>() || flag.IsOfType<uint64_t>() ||
      flag.IsOfType<std::optional<int64_t>>()) {
    return absl::StrCat("--", name, "=N");
  }
  return absl::StrCat("--", name, "=VALUE");
}

}  // namespace

absl::StatusOr<CheckedCommandLine> CheckedCommandLine::Check(int argc, char** argv) {
  CheckedCommandLine line;
  absl::string_view program = "this program";
  if (argc > 0) {
    line.args_.emplace_back(argv[0]);
    program = argv[0];
    program.remove_prefix(program.rfind('/') + 1);  // npos + 1 == 0: no directory
  }
  const std::vector<std::string> in(argv + std::min(argc, 1), argv + argc);
  if (absl::Status status = CheckArgs(program, in, 0, line.args_); !status.ok()) return status;
  return line;
}

std::vector<char*> CheckedCommandLine::Argv() {
  std::vector<char*> pointers;
  pointers.reserve(args_.size());
  for (std::string& arg : args_) pointers.push_back(arg.data());
  return pointers;
}

bool WantsHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") return false;
    const std::optional<std::string> name = FlagName(arg);
    if (name.has_value() && Contains(kHelpSwitches, *name)) return true;
  }
  return false;
}

std::string Usage(absl::string_view summary, absl::string_view flags_file) {
  constexpr size_t kWidth = 100;
  constexpr size_t kIndent = 6;
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::EndsWith(flag->Filename(), flags_file)) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const absl::CommandLineFlag* a, const absl::CommandLineFlag* b) {
              return a->Name() < b->Name();
            });
  std::string out =
      absl::StrCat(summary, "\n\nFlags (names take '-' or '_': --top-k = --top_k):\n");
  for (const absl::CommandLineFlag* flag : flags) {
    const std::string default_value = flag->DefaultValue();
    absl::StrAppend(&out, "  ", Synopsis(*flag));
    // Optional flags and empty strings have no default to show: their help says what unset means.
    if (!default_value.empty()) absl::StrAppend(&out, "  (default: ", default_value, ")");
    absl::StrAppend(&out, "\n", Wrap(flag->Help(), kIndent, kWidth), "\n");
  }
  absl::StrAppend(&out, "  --flagfile=FILE[,FILE...]\n",
                  Wrap("Reads more flags from each FILE, one --name=value per line; blank lines "
                       "and lines starting with '#' are skipped.",
                       kIndent, kWidth),
                  "\n  -h, --help\n", Wrap("Prints this text and exits 0.", kIndent, kWidth), "\n");
  return out;
}

}  // namespace moe::bench
