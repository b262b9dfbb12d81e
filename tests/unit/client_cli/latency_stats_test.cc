// Nearest-rank percentiles and the latency summary, against values computed by hand.
#include "client/cli/latency_stats.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace moe::client::cli {
namespace {

TEST(ClientCliNearestRankPercentile, IsTheValueAtRankCeilPTimesN) {
  const std::vector<double> ten = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(NearestRankPercentile(ten, 0.50), 5);   // ceil(5) = 5
  EXPECT_EQ(NearestRankPercentile(ten, 0.90), 9);   // ceil(9) = 9, not 10
  EXPECT_EQ(NearestRankPercentile(ten, 0.91), 10);  // ceil(9.1) = 10
  EXPECT_EQ(NearestRankPercentile(ten, 0.99), 10);  // ceil(9.9) = 10
  EXPECT_EQ(NearestRankPercentile(ten, 0.05), 1);   // ceil(0.5) = 1
  EXPECT_EQ(NearestRankPercentile(ten, 0.0), 1);
  EXPECT_EQ(NearestRankPercentile(ten, 1.0), 10);
}

TEST(ClientCliNearestRankPercentile, NeverInterpolates) {
  EXPECT_EQ(NearestRankPercentile({1, 2}, 0.50), 1);  // interpolation would say 1.5
  EXPECT_EQ(NearestRankPercentile({10, 20, 30, 40}, 0.75), 30);
  EXPECT_EQ(NearestRankPercentile({10, 20, 30, 40}, 0.76), 40);
}

TEST(ClientCliNearestRankPercentile, P99OfAHundredIsTheNinetyNinthNotTheMax) {
  std::vector<double> hundred;
  for (int i = 1; i <= 100; ++i) hundred.push_back(i);
  EXPECT_EQ(NearestRankPercentile(hundred, 0.99), 99);
  EXPECT_EQ(NearestRankPercentile(hundred, 0.90), 90);
  EXPECT_EQ(NearestRankPercentile(hundred, 0.29), 29);  // 0.29 x 100 is 28.999999999999996
  EXPECT_EQ(NearestRankPercentile(hundred, 0.57), 57);  // and 0.57 x 100 is 56.99999999999999
}

TEST(ClientCliNearestRankPercentile, OfNothingIsZeroAndOfOneValueIsIt) {
  EXPECT_EQ(NearestRankPercentile({}, 0.5), 0);
  EXPECT_EQ(NearestRankPercentile({7.5}, 0.01), 7.5);
  EXPECT_EQ(NearestRankPercentile({7.5}, 0.99), 7.5);
}

TEST(ClientCliSummarize, ComputesEveryFieldOfUnsortedValues) {
  // Sorted: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20.
  std::vector<double> values;
  for (int i = 20; i >= 1; --i) values.push_back(i);
  const LatencySummary s = Summarize(values);
  EXPECT_EQ(s.count, 20);
  EXPECT_EQ(s.min, 1);
  EXPECT_EQ(s.max, 20);
  EXPECT_DOUBLE_EQ(s.mean, 10.5);
  EXPECT_DOUBLE_EQ(s.stddev, std::sqrt(399.0 / 12.0));  // (n^2 - 1) / 12 for 1..n
  EXPECT_EQ(s.p50, 10);                                 // rank 10
  EXPECT_EQ(s.p90, 18);                                 // rank 18
  EXPECT_EQ(s.p95, 19);                                 // rank 19
  EXPECT_EQ(s.p99, 20);                                 // rank ceil(19.8) = 20
}

TEST(ClientCliSummarize, OfNothingIsAllZero) {
  const LatencySummary s = Summarize({});
  EXPECT_EQ(s.count, 0);
  EXPECT_EQ(s.min, 0);
  EXPECT_EQ(s.mean, 0);
  EXPECT_EQ(s.p99, 0);
  EXPECT_EQ(s.max, 0);
}

TEST(ClientCliSummarize, SkewedValues) {
  // 98 calls of 1 ms and two of 100 ms: p99 is 100 (rank 99), p95 and p50 are 1.
  std::vector<double> values(98, 1.0);
  values.push_back(100.0);
  values.push_back(100.0);
  const LatencySummary s = Summarize(values);
  EXPECT_EQ(s.p50, 1);
  EXPECT_EQ(s.p95, 1);
  EXPECT_EQ(s.p99, 100);
  EXPECT_DOUBLE_EQ(s.mean, (98.0 + 200.0) / 100.0);
}

}  // namespace
}  // namespace moe::client::cli
