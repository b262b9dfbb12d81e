#include "client/src/retry.h"

#include <algorithm>
#include <cmath>

#include "absl/random/distributions.h"
#include "absl/strings/str_cat.h"

namespace moe::client {

absl::Status ValidateRetryPolicy(const RetryPolicy& policy) {
  if (policy.max_attempts < 1) {
    return absl::InvalidArgumentError(absl::StrCat("retry.max_attempts is ", policy.max_attempts,
                                                   "; it must be >= 1 (1: no retry)"));
  }
  if (policy.initial_backoff < absl::ZeroDuration() ||
      policy.initial_backoff == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("retry.initial_backoff is ",
                                                   absl::FormatDuration(policy.initial_backoff),
                                                   "; it must be finite and >= 0"));
  }
  if (policy.max_backoff < policy.initial_backoff ||
      policy.max_backoff == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("retry.max_backoff is ", absl::FormatDuration(policy.max_backoff),
                     "; it must be finite and >= retry.initial_backoff (",
                     absl::FormatDuration(policy.initial_backoff), ")"));
  }
  if (!(policy.multiplier >= 1.0) || !std::isfinite(policy.multiplier)) {
    return absl::InvalidArgumentError(
        absl::StrCat("retry.multiplier is ", policy.multiplier, "; it must be finite and >= 1"));
  }
  return absl::OkStatus();
}

bool IsRetryable(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kResourceExhausted;
}

absl::Duration BackoffCeiling(const RetryPolicy& policy, int attempt) {
  const double factor = std::pow(policy.multiplier, std::max(attempt - 1, 0));
  if (!std::isfinite(factor)) return policy.max_backoff;
  // Duration * double saturates at InfiniteDuration rather than overflowing.
  return std::min(policy.initial_backoff * factor, policy.max_backoff);
}

std::optional<absl::Duration> NextRetryDelay(const RetryPolicy& policy, int attempt,
                                             const absl::Status& status, absl::Time now,
                                             absl::Time deadline, absl::BitGenRef random) {
  if (status.ok() || !IsRetryable(status.code()) || attempt >= policy.max_attempts) {
    return std::nullopt;
  }
  const absl::Duration ceiling = BackoffCeiling(policy, attempt);
  // Full jitter: uniform in [0, ceiling], drawn in nanoseconds.
  const int64_t ceiling_ns = absl::ToInt64Nanoseconds(ceiling);
  const absl::Duration delay = absl::Nanoseconds(
      ceiling_ns > 0 ? absl::Uniform<int64_t>(absl::IntervalClosed, random, 0, ceiling_ns) : 0);
  if (now + delay >= deadline) return std::nullopt;
  return delay;
}

absl::Status WithAttemptCount(const absl::Status& status, int attempts) {
  if (status.ok() || attempts <= 1) return status;
  return absl::Status(status.code(),
                      absl::StrCat(status.message(), " (after ", attempts, " attempts)"));
}

}  // namespace moe::client
