#include "bench/command_line.h"

#include <algorithm>
#include <string_view>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"

namespace moe::bench {
namespace {

// Flags absl::ParseCommandLine handles itself without registering them for lookup.
constexpr std::string_view kBuiltinSwitches[] = {"help",        "helpfull", "helpshort",
                                                 "helppackage", "version",  "only_check_args"};
constexpr std::string_view kBuiltinWithValue[] = {"helpon",  "helpmatch",  "flagfile",
                                                  "fromenv", "tryfromenv", "undefok"};

bool TakesValue(std::string_view name) {
  return std::find(std::begin(kBuiltinWithValue), std::end(kBuiltinWithValue), name) !=
         std::end(kBuiltinWithValue);
}

bool IsBuiltinFlag(std::string_view name) {
  return TakesValue(name) || std::find(std::begin(kBuiltinSwitches), std::end(kBuiltinSwitches),
                                       name) != std::end(kBuiltinSwitches);
}

}  // namespace

absl::StatusOr<CheckedCommandLine> CheckedCommandLine::Check(int argc, char** argv) {
  CheckedCommandLine line;
  line.args_.reserve(static_cast<size_t>(argc));
  if (argc > 0) line.args_.emplace_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      if (i + 1 < argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected argument '", argv[i + 1], "': moe-bench takes only flags"));
      }
      line.args_.push_back(arg);
      continue;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "': moe-bench takes only flags (--help)"));
    }
    const size_t dashes = arg[1] == '-' ? 2 : 1;
    const size_t equals = arg.find('=');
    std::string name =
        arg.substr(dashes, equals == std::string::npos ? std::string::npos : equals - dashes);
    std::replace(name.begin(), name.end(), '-', '_');
    const bool has_value = equals != std::string::npos;
    std::string value = has_value ? arg.substr(equals + 1) : "";

    if (IsBuiltinFlag(name)) {
      // absl's own flags (--help, --flagfile, ...), handled by absl::ParseCommandLine.
      line.args_.push_back(absl::StrCat("--", name, has_value ? "=" : "", value));
      if (!has_value && TakesValue(name) && i + 1 < argc) line.args_.emplace_back(argv[++i]);
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
          absl::StrCat("unknown flag '", arg, "' (moe-bench --help lists the flags)"));
    }
    line.args_.push_back(absl::StrCat("--", name, has_value ? "=" : "", value));
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
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("flag '", arg, "' is missing its value"));
      }
      value = argv[++i];
      line.args_.push_back(value);
    }
    // Parse once here to report a bad value ourselves; ParseCommandLine sets it again.
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value '", value, "' for flag --", name, ": ", error));
    }
  }
  return line;
}

std::vector<char*> CheckedCommandLine::Argv() {
  std::vector<char*> pointers;
  pointers.reserve(args_.size());
  for (std::string& arg : args_) pointers.push_back(arg.data());
  return pointers;
}

}  // namespace moe::bench
