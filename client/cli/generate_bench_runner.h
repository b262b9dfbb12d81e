// The load `moe-client bench --generate` sends: closed-loop generation. `concurrency` streams
// each loop: send a Generate request (a prompt of random token ids, a length drawn from
// `prompt_len`, and max_new_tokens drawn from `max_new_tokens`, uniform in each range), read
// the whole stream, repeat; for `duration` or until `requests` were sent, after `warmup`.
// Every stream connects before the clock starts; requests started in the warm-up are neither
// counted nor timed; no request is retried. The workload is a function of `seed`: stream i
// draws from its own generator seeded from `seed` and i.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/cli/generate_args.h"
#include "client/cli/generate_bench_report.h"
#include "moe/client/client.h"

namespace moe::client::cli {

struct GenerateBenchOptions {
  std::string target;  // for the report
  std::string model;
  int concurrency = 1;
  absl::Duration duration = absl::Seconds(10);  // when requests == 0
  int64_t requests = 0;                         // > 0: this many counted requests
  absl::Duration warmup = absl::Seconds(1);
  int64_t vocab_size = 0;  // prompt ids are uniform in [0, vocab_size)
  IntRange prompt_len{32, 32};
  IntRange max_new_tokens{64, 64};
  // Sampling, stop ids, ignore_eos, logprobs and timeout of every request (max_new_tokens is
  // drawn per request).
  GenerateOptions generate;
  uint64_t seed = 1;
};

// INVALID_ARGUMENT naming the flag when `options` are out of range.
absl::Status ValidateGenerateBenchOptions(const GenerateBenchOptions& options);

// Runs the load over `clients` (stream i uses clients[i % size]) and returns what it measured.
// A run whose requests fail is still a report (errors by code).
absl::StatusOr<GenerateBenchReport> RunGenerateBench(const std::vector<Client*>& clients,
                                                     const GenerateBenchOptions& options);

}  // namespace moe::client::cli
