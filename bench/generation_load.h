// Closed-loop generation load on a GenerationScheduler in this process, measured the way
// `moe-client bench --generate` measures a server: `streams` threads each submit a request (a
// prompt of random token ids, its length drawn from `prompt_len`, `output_len` tokens exactly:
// no stop id, greedy), wait for its last token, and submit the next; for `duration` after
// `warmup`. Requests started in the warm-up are neither counted nor timed; throughput is the
// counted requests' tokens over the time from the first counted start to the last counted end.
// Token times are taken when the scheduler hands tokens to the sink, so the figures are the
// scheduler's and the model's alone: no gRPC, no network, no client.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/cli/generate_args.h"
#include "client/cli/latency_stats.h"
#include "server/scheduler/generation_scheduler.h"

namespace moe::bench {

struct GenerationLoadOptions {
  int streams = 1;
  absl::Duration duration = absl::Seconds(10);
  absl::Duration warmup = absl::Seconds(1);
  client::cli::IntRange prompt_len{16, 64};
  client::cli::IntRange output_len{8, 400, client::cli::Spread::kLogUniform};
  uint64_t seed = 1;  // stream i draws from its own generator, seeded from seed and i
};

struct GenerationLoadReport {
  int streams = 0;
  double seconds = 0;  // first counted start to last counted end
  int64_t requests_completed = 0;
  int64_t requests_failed = 0;
  std::map<std::string, int64_t> errors;  // failed requests by status code
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  double output_tokens_per_second = 0;
  double requests_per_second = 0;
  client::cli::LatencySummary ttft_ms, itl_ms, tpot_ms, e2e_ms;
  // The scheduler's counters over the measured window (warm-up excluded).
  int64_t steps = 0;
  int64_t step_tokens = 0;     // tokens run through the model, padding rows included
  int64_t padding_tokens = 0;  // static batching's rows of finished sequences
  int64_t preemptions = 0;
};

// INVALID_ARGUMENT naming the option when `options` cannot describe a run, or when a request
// it may draw does not fit `scheduler` (prompt plus output beyond its max_model_len or its KV
// cache).
absl::Status ValidateGenerationLoad(const scheduler::GenerationScheduler& scheduler,
                                    const GenerationLoadOptions& options);

// Runs the load. Failed requests (a full queue, say) are counted by code, not retried; a run
// whose requests all fail is still a report.
absl::StatusOr<GenerationLoadReport> RunGenerationLoad(scheduler::GenerationScheduler& scheduler,
                                                       const GenerationLoadOptions& options);

}  // namespace moe::bench
