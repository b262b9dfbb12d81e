// Repeated timing of one operation: warm-up runs excluded, median and minimum of the rest.
#pragma once

#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moe::bench {

struct TimingStats {
  double median_ms = 0.0;
  double min_ms = 0.0;
  int repeats = 0;
};

// Median (mean of the two middle values for an even count) and minimum; `samples_ms` nonempty.
TimingStats Summarize(std::vector<double> samples_ms);

// One timed call: runs the operation and returns its duration in milliseconds, measured however
// the backend measures (host clock, device events).
using TimedCall = std::function<absl::StatusOr<double>()>;

// Calls `call` `warmup` times, discarding the durations, then `repeats` times.
absl::StatusOr<TimingStats> Measure(const TimedCall& call, int warmup, int repeats);

// Wraps a host operation into a TimedCall that reads the steady clock around it.
TimedCall HostTimed(std::function<absl::Status()> op);

}  // namespace moe::bench
