// Checks the command line against the registered absl flags before absl::ParseCommandLine sees
// it. absl exits with status 1 on an unknown flag or a value it cannot parse; moe-bench treats
// both as usage errors (exit status 2) with a message naming the flag. Also lets flag names be
// spelled with dashes (--top-k) as well as underscores (--top_k).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::bench {

class CheckedCommandLine {
 public:
  // INVALID_ARGUMENT for an unknown flag, a missing or unparsable value, or a positional
  // argument (moe-bench takes none).
  static absl::StatusOr<CheckedCommandLine> Check(int argc, char** argv);

  // argv with dashes in flag names replaced by underscores, for absl::ParseCommandLine. The
  // pointers stay valid while this object lives and is not modified.
  std::vector<char*> Argv();

 private:
  std::vector<std::string> args_;
};

}  // namespace moe::bench
