// The clock of the load loops (moe-client bench, bench --generate, moe-generation-bench): how
// durations become time points, and the start line every worker waits at so that preparing and
// connecting show in neither the warm-up nor the measured window.
#pragma once

#include <algorithm>
#include <chrono>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace moe::client::cli {

using Clock = std::chrono::steady_clock;

inline double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Durations past ten years (--duration inf with --requests) are ten years: the clock's time
// points would overflow.
inline Clock::duration ToClock(absl::Duration d) {
  return std::chrono::duration_cast<Clock::duration>(
      absl::ToChronoNanoseconds(std::min(d, absl::Hours(24 * 365 * 10))));
}

struct StartLine {
  explicit StartLine(int workers) : prepared(workers) {}
  absl::BlockingCounter prepared;  // each worker counts down once ready
  absl::Notification go;
  Clock::time_point start, measure_start, stop;  // written before `go`, read after
};

}  // namespace moe::client::cli
