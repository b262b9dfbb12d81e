#include "client/cli/latency_stats.h"

#include <algorithm>
#include <cmath>

namespace moe::client::cli {

double NearestRankPercentile(const std::vector<double>& sorted, double fraction) {
  if (sorted.empty()) return 0.0;
  // A fraction such as 0.29 x 100 is 28.999999999999996 in binary: round off the last bits
  // before taking the ceiling so that exact ranks stay exact.
  const double scaled = fraction * static_cast<double>(sorted.size());
  const double rank = std::ceil(scaled - 1e-9 * std::max(1.0, scaled));
  const size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

LatencySummary Summarize(std::vector<double> values) {
  LatencySummary summary;
  if (values.empty()) return summary;
  std::sort(values.begin(), values.end());
  summary.count = static_cast<int64_t>(values.size());
  double sum = 0;
  for (double v : values) sum += v;
  summary.mean = sum / static_cast<double>(values.size());
  double squares = 0;
  for (double v : values) squares += (v - summary.mean) * (v - summary.mean);
  summary.stddev = std::sqrt(squares / static_cast<double>(values.size()));
  summary.min = values.front();
  summary.max = values.back();
  summary.p50 = NearestRankPercentile(values, 0.50);
  summary.p90 = NearestRankPercentile(values, 0.90);
  summary.p95 = NearestRankPercentile(values, 0.95);
  summary.p99 = NearestRankPercentile(values, 0.99);
  return summary;
}

}  // namespace moe::client::cli
