// moe-client's command line: `moe-client [global flags] SUBCOMMAND [flags] [arguments]`. The
// flags are absl flags defined in main.cc; this file knows which belong to the program and which
// to each subcommand, sets them through absl's flag registry, and writes the usage texts. Flag
// names take dashes or underscores (--tls-ca = --tls_ca), as moe-server's do.
#pragma once

#include <cstddef>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/command_line.h"

namespace moe::client::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // an RPC failed, or the server said no
inline constexpr int kExitUsage = 2;    // the command line or an input file is wrong

using FlagUsage = server::FlagUsage;

// An error that is the user's to fix before calling again (a flag combination, an input file):
// INVALID_ARGUMENT marked so that main exits with kExitUsage, not kExitFailure as for the same
// code from the server.
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

struct Subcommand {
  std::string name;
  std::string arguments;  // e.g. "MODEL", "[SERVICE]"
  std::string summary;    // one line, for the list of subcommands
  std::string details;    // paragraphs for `moe-client NAME --help`
  size_t min_arguments = 0;
  size_t max_arguments = 0;
  std::vector<FlagUsage> flags;  // besides the global ones
};

struct CommandLine {
  const Subcommand* subcommand = nullptr;  // null when none was named
  std::vector<std::string> arguments;      // the subcommand's positional arguments
  bool help = false;                       // -h or --help was given (before any "--")
  std::set<std::string> flags_given;       // absl names of the flags given
};

// Parses argv: global flags, the subcommand, then its flags and arguments in any order (global
// flags may come after the subcommand too; "--" ends the flags). Sets every flag given through
// absl's registry. INVALID_ARGUMENT, naming the culprit: an unknown subcommand, a flag that is
// neither global nor the subcommand's, a flag without its value or with a value it cannot
// parse, too few or too many arguments. With --help, errors in other flags and arguments are
// not reported (the help is what was asked for).
absl::StatusOr<CommandLine> ParseCommandLine(int argc, char** argv,
                                             const std::vector<FlagUsage>& global_flags,
                                             const std::vector<Subcommand>& subcommands);

// `moe-client --help`: `summary`, the subcommands, the global flags.
std::string ProgramUsage(absl::string_view summary, const std::vector<FlagUsage>& global_flags,
                         const std::vector<Subcommand>& subcommands);

// `moe-client SUBCOMMAND --help`: its synopsis, details and flags, and the global flags' names.
std::string SubcommandUsage(const Subcommand& subcommand,
                            const std::vector<FlagUsage>& global_flags);

}  // namespace moe::client::cli
