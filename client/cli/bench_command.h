// `moe-client bench MODEL`: connects, optionally waits for the server to be ready, reads the
// model's input from its description, runs the load (bench_runner.h) and prints the report.
// `moe-client bench MODEL --generate`: the same for generation load (generate_bench_runner.h),
// the vocabulary size read from the model's description unless given.
#pragma once

#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/cli/bench_runner.h"
#include "client/cli/generate_bench_runner.h"
#include "moe/client/client.h"

namespace moe::client::cli {

struct BenchCommand {
  BenchOptions options;  // input_name and width are read from the model's description
  int connections = 0;   // 0: one per worker (closed loop), 1 (open loop)
  absl::Duration wait_ready = absl::ZeroDuration();  // > 0: first wait for ServerReady
  std::string format = "text";                       // "text", "json" or "csv"
  bool csv_header = true;
  bool progress = false;  // a live progress line on stderr
};

// Prints the report to `out`. Returns whether any counted call succeeded; an error when the
// options are wrong (a usage error), the server is not ready in time, or the model cannot be
// described.
absl::StatusOr<bool> RunBenchCommand(const ConnectOptions& connect, BenchCommand command,
                                     std::ostream& out);

struct GenerateBenchCommand {
  GenerateBenchOptions options;  // vocab_size 0: read from the model's description
  int connections = 0;           // 0: one per stream
  absl::Duration wait_ready = absl::ZeroDuration();
  std::string format = "text";  // "text" or "json"
};

// Prints the report to `out`. Returns whether any counted request completed; an error when
// the options are wrong (a usage error), the server is not ready in time, or the model cannot
// be described or does not generate (FAILED_PRECONDITION).
absl::StatusOr<bool> RunGenerateBenchCommand(const ConnectOptions& connect,
                                             GenerateBenchCommand command, std::ostream& out);

}  // namespace moe::client::cli
