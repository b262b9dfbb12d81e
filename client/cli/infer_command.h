// `moe-client infer MODEL`: one ModelInfer call with rows from a file or made up, the answer
// shown as infer_output.h formats it.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/cli/infer_output.h"
#include "moe/client/client.h"

namespace moe::client::cli {

struct InferCommand {
  std::string model;
  std::string input_file;   // .npy or .json; or
  int64_t random_rows = 0;  // > 0: this many uniform [0, 1) rows of the model's width
  uint64_t seed = 0;        // of the random rows
  WireType wire = WireType::kFp32;
  bool raw = true;
  std::optional<int64_t> priority;
  std::optional<absl::Duration> queue_timeout;
  std::string request_id;
  InferDisplay display;  // output_name and labels are filled from the model's description
};

// Describes the model (its input's name and width, output name and labels), reads or makes the
// rows, sends them and prints the answer. Errors: a usage error (UsageError) for a bad input
// file or option, else the failed call's status.
absl::Status RunInfer(Client& client, InferCommand command, std::ostream& out);

}  // namespace moe::client::cli
