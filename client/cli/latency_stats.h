// Latency statistics of a benchmark run. Percentiles are nearest-rank: the p-th percentile of n
// sorted values is the value at rank ceil(p/100 x n) (1-based), always one of the measured
// values, never an interpolation (p50 of {1, 2} is 1; p99 of 100 values is the 99th, not the
// max).
#pragma once

#include <cstdint>
#include <vector>

namespace moe::client::cli {

// Nearest-rank percentile of `sorted` (ascending) at `fraction` in [0, 1] (0.99 for p99); the
// smallest value for fraction 0, 0 for no values.
double NearestRankPercentile(const std::vector<double>& sorted, double fraction);

struct LatencySummary {
  int64_t count = 0;
  double min = 0, mean = 0, stddev = 0;  // stddev: population standard deviation
  double p50 = 0, p90 = 0, p95 = 0, p99 = 0, max = 0;
};

// Summarises `values` (any order; all zero for no values).
LatencySummary Summarize(std::vector<double> values);

}  // namespace moe::client::cli
