#include "bench/timing.h"

#include <algorithm>
#include <chrono>
#include <utility>

namespace moe::bench {

TimingStats Summarize(std::vector<double> samples_ms) {
  TimingStats stats;
  stats.repeats = static_cast<int>(samples_ms.size());
  if (samples_ms.empty()) return stats;
  std::sort(samples_ms.begin(), samples_ms.end());
  const size_t n = samples_ms.size();
  stats.median_ms =
      n % 2 == 1 ? samples_ms[n / 2] : 0.5 * (samples_ms[n / 2 - 1] + samples_ms[n / 2]);
  stats.min_ms = samples_ms.front();
  return stats;
}

absl::StatusOr<TimingStats> Measure(const TimedCall& call, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) {
    absl::StatusOr<double> ms = call();
    if (!ms.ok()) return ms.status();
  }
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(repeats));
  for (int i = 0; i < repeats; ++i) {
    absl::StatusOr<double> ms = call();
    if (!ms.ok()) return ms.status();
    samples.push_back(*ms);
  }
  return Summarize(std::move(samples));
}

TimedCall HostTimed(std::function<absl::Status()> op) {
  return [op = std::move(op)]() -> absl::StatusOr<double> {
    const auto start = std::chrono::steady_clock::now();
    absl::Status status = op();
    const auto stop = std::chrono::steady_clock::now();
    if (!status.ok()) return status;
    return std::chrono::duration<double, std::milli>(stop - start).count();
  };
}

}  // namespace moe::bench
