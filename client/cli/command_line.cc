#include "client/cli/command_line.h"

#include <algorithm>
#include <optional>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace moe::client::cli {
namespace {

bool Lists(const std::vector<FlagUsage>& flags, const std::string& name) {
  return std::any_of(flags.begin(), flags.end(),
                     [&](const FlagUsage& flag) { return flag.name == name; });
}

std::string Dashed(absl::string_view name) {
  return absl::StrReplaceAll(std::string(name), {{"_", "-"}});
}

// One parse; `help` set beforehand when -h/--help is anywhere on the line.
class Parser {
 public:
  Parser(const std::vector<FlagUsage>& global_flags, const std::vector<Subcommand>& subcommands)
      : global_flags_(global_flags), subcommands_(subcommands) {}

  absl::StatusOr<CommandLine> Parse(const std::vector<std::string>& args) {
    CommandLine line;
    line.help = WantsHelp(args);
    bool flags_ended = false;
    bool help_subcommand = false;  // `moe-client help [SUBCOMMAND]`
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& arg = args[i];
      if (!flags_ended && arg == "--") {
        flags_ended = true;
        continue;
      }
      const bool is_flag = !flags_ended && arg.size() > 1 && arg[0] == '-';
      if (is_flag) {
        absl::Status status = Flag(args, i, line);
        if (!status.ok() && !line.help) return status;
        continue;
      }
      if (line.subcommand == nullptr && !help_subcommand) {
        if (arg == "help") {
          help_subcommand = true;
          line.help = true;
          continue;
        }
        line.subcommand = Find(arg);
        if (line.subcommand == nullptr) {
          if (line.help && !help_subcommand) continue;
          return absl::InvalidArgumentError(absl::StrCat(
              "unknown subcommand '", arg, "' (moe-client --help lists them: ",
              absl::StrJoin(subcommands_, ", ",
                            [](std::string* out, const Subcommand& s) { out->append(s.name); }),
              ")"));
        }
        continue;
      }
      if (help_subcommand && line.subcommand == nullptr) {
        line.subcommand = Find(arg);
        if (line.subcommand == nullptr) {
          return absl::InvalidArgumentError(
              absl::StrCat("unknown subcommand '", arg, "' (moe-client --help lists them)"));
        }
        continue;
      }
      line.arguments.push_back(arg);
    }
    if (line.help || line.subcommand == nullptr) return line;
    const Subcommand& sub = *line.subcommand;
    if (line.arguments.size() < sub.min_arguments) {
      return absl::InvalidArgumentError(absl::StrCat("moe-client ", sub.name, ": missing ",
                                                     sub.arguments, " (moe-client ", sub.name,
                                                     " --help)"));
    }
    if (line.arguments.size() > sub.max_arguments) {
      return absl::InvalidArgumentError(
          absl::StrCat("moe-client ", sub.name, ": unexpected argument '",
                       line.arguments[sub.max_arguments], "' (moe-client ", sub.name, " takes ",
                       sub.arguments.empty() ? "none" : sub.arguments, ")"));
    }
    return line;
  }

 private:
  static bool WantsHelp(const std::vector<std::string>& args) {
    for (const std::string& arg : args) {
      if (arg == "--") return false;
      if (arg == "-h" || arg == "--help" || arg == "-help" || arg == "--helpfull") return true;
    }
    return false;
  }

  const Subcommand* Find(const std::string& name) const {
    for (const Subcommand& sub : subcommands_) {
      if (sub.name == name) return &sub;
    }
    return nullptr;
  }

  // The flag at args[i] (and its value at args[i + 1] when it takes one and has no '=').
  absl::Status Flag(const std::vector<std::string>& args, size_t& i, CommandLine& line) {
    const std::string& arg = args[i];
    const size_t name_start = arg[1] == '-' ? 2 : 1;
    const size_t equals = arg.find('=');
    std::string name = arg.substr(
        name_start, equals == std::string::npos ? std::string::npos : equals - name_start);
    std::replace(name.begin(), name.end(), '-', '_');
    if (name == "h" || name == "help" || name == "helpfull") return absl::OkStatus();
    const std::optional<std::string> value =
        equals == std::string::npos ? std::nullopt : std::optional(arg.substr(equals + 1));

    // --noNAME for a boolean NAME.
    bool negated = false;
    if (!Allowed(name, line) && name.rfind("no", 0) == 0 && Allowed(name.substr(2), line)) {
      absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name.substr(2));
      if (flag != nullptr && flag->IsOfType<bool>()) {
        name = name.substr(2);
        negated = true;
      }
    }
    if (!Allowed(name, line)) {
      if (line.subcommand == nullptr) {
        const bool someones =
            std::any_of(subcommands_.begin(), subcommands_.end(),
                        [&](const Subcommand& s) { return Lists(s.flags, name); });
        if (someones) {
          return absl::InvalidArgumentError(
              absl::StrCat("flag '", arg, "' belongs after its subcommand (moe-client SUBCOMMAND ",
                           arg, " ...)"));
        }
        return absl::InvalidArgumentError(
            absl::StrCat("unknown flag '", arg, "' (moe-client --help lists the flags)"));
      }
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag '", arg, "' for moe-client ", line.subcommand->name,
                       " (moe-client ", line.subcommand->name, " --help lists its flags)"));
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) {  // a FlagUsage without an ABSL_FLAG: a bug in main.cc
      return absl::InternalError(absl::StrCat("flag --", Dashed(name), " is not defined"));
    }
    std::string text;
    if (flag->IsOfType<bool>()) {
      if (negated && value.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag '", arg, "' negates a boolean and takes no value"));
      }
      text = negated ? "false" : value.value_or("true");
    } else if (value.has_value()) {
      text = *value;
    } else if (i + 1 < args.size()) {
      text = args[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("flag '", arg, "' is missing its value"));
    }
    std::string error;
    if (!flag->ParseFrom(text, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value '", text, "' for flag --", Dashed(name), ": ", error));
    }
    line.flags_given.insert(name);
    return absl::OkStatus();
  }

  bool Allowed(const std::string& name, const CommandLine& line) const {
    return Lists(global_flags_, name) ||
           (line.subcommand != nullptr && Lists(line.subcommand->flags, name));
  }

  const std::vector<FlagUsage>& global_flags_;
  const std::vector<Subcommand>& subcommands_;
};

constexpr char kUsagePayload[] = "moe-client/usage-error";

// `text` with each paragraph line wrapped at `width` columns; lines that start with a space
// (examples) are kept as they are.
std::string WrapParagraphs(absl::string_view text, size_t width = 100) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == ' ') {
      out.emplace_back(line);
      continue;
    }
    std::string current;
    for (absl::string_view word : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      if (!current.empty() && current.size() + 1 + word.size() > width) {
        out.push_back(std::move(current));
        current.clear();
      }
      absl::StrAppend(&current, current.empty() ? "" : " ", word);
    }
    out.push_back(std::move(current));
  }
  return absl::StrJoin(out, "\n");
}

}  // namespace

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

absl::StatusOr<CommandLine> ParseCommandLine(int argc, char** argv,
                                             const std::vector<FlagUsage>& global_flags,
                                             const std::vector<Subcommand>& subcommands) {
  const std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  return Parser(global_flags, subcommands).Parse(args);
}

std::string ProgramUsage(absl::string_view summary, const std::vector<FlagUsage>& global_flags,
                         const std::vector<Subcommand>& subcommands) {
  std::string text = absl::StrCat(summary, "\n\nSubcommands:\n");
  size_t width = 0;
  for (const Subcommand& sub : subcommands) {
    width = std::max(width, sub.name.size() + 1 + sub.arguments.size());
  }
  for (const Subcommand& sub : subcommands) {
    const std::string synopsis = absl::StrCat(sub.name, " ", sub.arguments);
    absl::StrAppend(&text, "  ", synopsis, std::string(width + 2 - synopsis.size(), ' '),
                    sub.summary, "\n");
  }
  absl::StrAppend(&text,
                  "\n`moe-client SUBCOMMAND --help` (or `moe-client help SUBCOMMAND`) lists a "
                  "subcommand's own flags;\nthe flags below are every subcommand's.");
  text = server::UsageText(text, global_flags);
  absl::StrAppend(&text,
                  "\nExit status: 0 success; 1 a call failed (the gRPC code and message are "
                  "printed) or the server\nis not serving; 2 a usage error or an unreadable "
                  "input file.\n");
  return text;
}

std::string SubcommandUsage(const Subcommand& sub, const std::vector<FlagUsage>& global_flags) {
  std::string summary =
      absl::StrCat("moe-client [global flags] ", sub.name, sub.arguments.empty() ? "" : " ",
                   sub.arguments, sub.flags.empty() ? "" : " [flags]", "\n\n", sub.summary);
  if (!sub.details.empty()) absl::StrAppend(&summary, "\n\n", WrapParagraphs(sub.details));
  std::string text =
      sub.flags.empty() ? absl::StrCat(summary, "\n") : server::UsageText(summary, sub.flags);
  absl::StrAppend(
      &text, "\n",
      WrapParagraphs(absl::StrCat("Global flags (moe-client --help): ",
                                  absl::StrJoin(global_flags, ", ",
                                                [](std::string* out, const FlagUsage& flag) {
                                                  absl::StrAppend(out, "--", Dashed(flag.name));
                                                }))),
      "\n");
  return text;
}

}  // namespace moe::client::cli
