// Checks the command line against the registered absl flags before absl::ParseCommandLine sees
// it. absl exits with status 1 on an unknown flag, a value it cannot parse or an unreadable
// --flagfile; the benchmarks treat all of them as usage errors (exit status 2) with a message
// naming the flag or file. Expands --flagfile itself, lets flag names be spelled with dashes
// (--top-k) as well as underscores (--top_k), and prints its own --help.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::bench {

class CheckedCommandLine {
 public:
  // INVALID_ARGUMENT for an unknown flag, a missing or unparsable value, a positional argument
  // (the benchmarks take none), or a --flagfile that cannot be read or holds any of these. Each
  // --flagfile=a,b names files of one flag per line ("--name=value"; blank lines and lines
  // starting with '#' are skipped) whose flags take its place on the command line.
  static absl::StatusOr<CheckedCommandLine> Check(int argc, char** argv);

  // argv with --flagfile expanded and dashes in flag names replaced by underscores, for
  // absl::ParseCommandLine. The pointers stay valid while this object lives and is not modified.
  std::vector<char*> Argv();

 private:
  std::vector<std::string> args_;
};

// Whether the command line asks for help (-h, --help, --helpfull, --helpshort, ...) before any
// "--"; such a run prints Usage() and exits 0 whatever else it holds.
bool WantsHelp(int argc, char** argv);

// `summary`, then every flag defined in a source file whose path ends in `flags_file`, sorted by
// name, each with its meaning and (where it has one) its default, then the flags the
// checker handles itself (--flagfile, --help).
std::string Usage(absl::string_view summary, absl::string_view flags_file);

}  // namespace moe::bench
