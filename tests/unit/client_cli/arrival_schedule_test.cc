// The open-loop schedule: constant arrivals exactly one period apart; Poisson arrivals with
// exponential gaps whose mean is 1/rate (and whose standard deviation equals the mean), checked
// over many samples with the seed printed.
#include "client/cli/arrival_schedule.h"

#include <cmath>
#include <cstdint>
#include <cstdio>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::client::cli {
namespace {

using ::moe::testing::StatusIs;

TEST(ClientCliArrivalSchedule, ConstantArrivalsAreExactlyOnePeriodApart) {
  for (double rate : {1.0, 3.0, 500.0, 1e6}) {
    ArrivalSchedule schedule(Arrival::kConstant, rate, /*seed=*/1);
    const absl::Duration period = absl::Nanoseconds(std::llround(1e9 / rate));
    absl::Duration previous = schedule.Next();
    EXPECT_EQ(previous, absl::ZeroDuration()) << "rate " << rate;
    for (int i = 1; i < 10000; ++i) {
      const absl::Duration next = schedule.Next();
      ASSERT_EQ(next - previous, period) << "rate " << rate << ", gap " << i;
      previous = next;
    }
    // The period is 1/rate rounded to a nanosecond: 9999 periods are within 9999 half
    // nanoseconds of 9999 / rate.
    EXPECT_NEAR(absl::ToDoubleSeconds(previous), 9999 / rate, 9999 * 0.5e-9) << "rate " << rate;
  }
}

TEST(ClientCliArrivalSchedule, PoissonGapsHaveMeanOneOverRate) {
  const uint64_t seed = testing::FreshSeed();
  std::printf("seed %llu (MOE_TEST_SEED=%llu repeats this run)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  constexpr int kSamples = 200000;
  for (double rate : {50.0, 2000.0}) {
    ArrivalSchedule schedule(Arrival::kPoisson, rate, seed);
    EXPECT_EQ(schedule.Next(), absl::ZeroDuration());
    double previous = 0, sum = 0, sum_squares = 0;
    for (int i = 0; i < kSamples; ++i) {
      const double next = absl::ToDoubleSeconds(schedule.Next());
      const double gap = next - previous;
      ASSERT_GE(gap, 0) << "seed " << seed;
      sum += gap;
      sum_squares += gap * gap;
      previous = next;
    }
    const double mean = sum / kSamples;
    const double stddev = std::sqrt(sum_squares / kSamples - mean * mean);
    // The sample mean's standard error is (1/rate) / sqrt(200000) = 0.22% of the mean: 2% is
    // nine standard errors.
    EXPECT_NEAR(mean * rate, 1.0, 0.02) << "rate " << rate << ", seed " << seed;
    // An exponential distribution's standard deviation equals its mean.
    EXPECT_NEAR(stddev * rate, 1.0, 0.03) << "rate " << rate << ", seed " << seed;
  }
}

TEST(ClientCliArrivalSchedule, PoissonScheduleRepeatsWithItsSeed) {
  ArrivalSchedule a(Arrival::kPoisson, 100, 42), b(Arrival::kPoisson, 100, 42);
  ArrivalSchedule c(Arrival::kPoisson, 100, 43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const absl::Duration next = a.Next();
    EXPECT_EQ(next, b.Next());
    differs = differs || next != c.Next();
  }
  EXPECT_TRUE(differs);
}

TEST(ClientCliArrivalSchedule, ParsesArrivalNames) {
  EXPECT_EQ(*ParseArrival("poisson"), Arrival::kPoisson);
  EXPECT_EQ(*ParseArrival("constant"), Arrival::kConstant);
  EXPECT_EQ(ArrivalName(Arrival::kPoisson), "poisson");
  EXPECT_THAT(ParseArrival("uniform"), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace moe::client::cli
