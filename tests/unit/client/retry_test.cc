// The retry policy: which codes are retried, the back-off ceiling and its jitter, the attempt
// limit, and that no wait ends at or past the call's deadline.
#include "client/src/retry.h"

#include <random>

#include "absl/random/random.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::client {
namespace {

using ::moe::testing::StatusIs;
using ::testing::HasSubstr;

const RetryPolicy kPolicy{.max_attempts = 5,
                          .initial_backoff = absl::Milliseconds(50),
                          .max_backoff = absl::Seconds(2),
                          .multiplier = 2.0};

TEST(RetryTest, RetriesOnlyUnavailableAndResourceExhausted) {
  absl::BitGen random;
  const absl::Time now = absl::Now();
  for (int code = 1; code <= 16; ++code) {
    const auto status_code = static_cast<absl::StatusCode>(code);
    const bool expected = status_code == absl::StatusCode::kUnavailable ||
                          status_code == absl::StatusCode::kResourceExhausted;
    EXPECT_EQ(IsRetryable(status_code), expected) << absl::StatusCodeToString(status_code);
    EXPECT_EQ(NextRetryDelay(kPolicy, 1, absl::Status(status_code, "x"), now, now + absl::Hours(1),
                             random)
                  .has_value(),
              expected)
        << absl::StatusCodeToString(status_code);
  }
  EXPECT_FALSE(
      NextRetryDelay(kPolicy, 1, absl::OkStatus(), now, now + absl::Hours(1), random).has_value());
}

TEST(RetryTest, CeilingGrowsByTheMultiplierUpToTheMaximum) {
  EXPECT_EQ(BackoffCeiling(kPolicy, 1), absl::Milliseconds(50));
  EXPECT_EQ(BackoffCeiling(kPolicy, 2), absl::Milliseconds(100));
  EXPECT_EQ(BackoffCeiling(kPolicy, 3), absl::Milliseconds(200));
  EXPECT_EQ(BackoffCeiling(kPolicy, 6), absl::Milliseconds(1600));
  EXPECT_EQ(BackoffCeiling(kPolicy, 7), absl::Seconds(2));
  EXPECT_EQ(BackoffCeiling(kPolicy, 1'000'000), absl::Seconds(2)) << "no overflow";
  RetryPolicy flat = kPolicy;
  flat.multiplier = 1.0;
  EXPECT_EQ(BackoffCeiling(flat, 100), absl::Milliseconds(50));
}

TEST(RetryTest, WaitsAreFullyJitteredBelowTheCeiling) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 random(seed);
  const absl::Time now = absl::Now();
  for (int attempt = 1; attempt < kPolicy.max_attempts; ++attempt) {
    const absl::Duration ceiling = BackoffCeiling(kPolicy, attempt);
    int low = 0, high = 0;
    for (int i = 0; i < 2000; ++i) {
      const auto delay = NextRetryDelay(kPolicy, attempt, absl::UnavailableError("down"), now,
                                        now + absl::Hours(1), random);
      ASSERT_TRUE(delay.has_value());
      ASSERT_GE(*delay, absl::ZeroDuration()) << "seed " << seed;
      ASSERT_LE(*delay, ceiling) << "attempt " << attempt << " seed " << seed;
      low += *delay < ceiling / 4;
      high += *delay > ceiling * 3 / 4;
    }
    // Uniform over [0, ceiling]: about 500 of 2000 in each quarter.
    EXPECT_GT(low, 350) << "attempt " << attempt << " seed " << seed;
    EXPECT_GT(high, 350) << "attempt " << attempt << " seed " << seed;
  }
}

TEST(RetryTest, GivesUpAfterTheLastAttempt) {
  absl::BitGen random;
  const absl::Time now = absl::Now();
  const absl::Status unavailable = absl::UnavailableError("down");
  EXPECT_TRUE(NextRetryDelay(kPolicy, 4, unavailable, now, now + absl::Hours(1), random));
  EXPECT_FALSE(NextRetryDelay(kPolicy, 5, unavailable, now, now + absl::Hours(1), random));
  RetryPolicy once = kPolicy;
  once.max_attempts = 1;
  EXPECT_FALSE(NextRetryDelay(once, 1, unavailable, now, now + absl::Hours(1), random));
}

TEST(RetryTest, NoWaitEndsAtOrPastTheDeadline) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 random(seed);
  const absl::Time now = absl::Now();
  RetryPolicy policy = kPolicy;
  policy.max_attempts = 100;
  int retried = 0, gave_up = 0;
  for (int i = 0; i < 5000; ++i) {
    const int attempt = 1 + i % 10;
    const absl::Duration left = absl::Microseconds(std::uniform_int_distribution<int>(
        -1000, absl::ToInt64Microseconds(BackoffCeiling(policy, attempt)))(random));
    const auto delay = NextRetryDelay(policy, attempt, absl::ResourceExhaustedError("full"), now,
                                      now + left, random);
    if (delay.has_value()) {
      ASSERT_LT(now + *delay, now + left) << "seed " << seed;
      ++retried;
    } else {
      ++gave_up;
    }
  }
  EXPECT_GT(retried, 0) << "seed " << seed;
  EXPECT_GT(gave_up, 0) << "seed " << seed;
  EXPECT_FALSE(NextRetryDelay(policy, 1, absl::UnavailableError("down"), now, now, random));
}

TEST(RetryTest, RefusesBadPolicies) {
  auto with = [](auto change) {
    RetryPolicy policy = kPolicy;
    change(policy);
    return ValidateRetryPolicy(policy);
  };
  MOE_EXPECT_OK(ValidateRetryPolicy(kPolicy));
  EXPECT_THAT(with([](RetryPolicy& p) { p.max_attempts = 0; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("retry.max_attempts is 0")));
  EXPECT_THAT(with([](RetryPolicy& p) { p.initial_backoff = absl::Milliseconds(-1); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("retry.initial_backoff")));
  EXPECT_THAT(with([](RetryPolicy& p) { p.max_backoff = absl::Milliseconds(10); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("retry.max_backoff")));
  EXPECT_THAT(with([](RetryPolicy& p) { p.max_backoff = absl::InfiniteDuration(); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("retry.max_backoff")));
  EXPECT_THAT(with([](RetryPolicy& p) { p.multiplier = 0.5; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("retry.multiplier")));
}

TEST(RetryTest, FinalStatusCountsTheAttempts) {
  EXPECT_THAT(WithAttemptCount(absl::UnavailableError("ServerLive: down"), 3),
              StatusIs(absl::StatusCode::kUnavailable, "ServerLive: down (after 3 attempts)"));
  EXPECT_THAT(WithAttemptCount(absl::UnavailableError("ServerLive: down"), 1),
              StatusIs(absl::StatusCode::kUnavailable, "ServerLive: down"));
  MOE_EXPECT_OK(WithAttemptCount(absl::OkStatus(), 3));
}

}  // namespace
}  // namespace moe::client
