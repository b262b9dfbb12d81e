// When and how long to wait before retrying a call: only UNAVAILABLE (server starting, draining,
// connection lost) and RESOURCE_EXHAUSTED (queue full) are retried, after an exponential
// back-off with full jitter (a uniform wait in [0, ceiling], the ceiling growing by `multiplier`
// per attempt up to `max_backoff`), and never when the wait would end at or past the deadline.
#pragma once

#include <optional>

#include "absl/random/bit_gen_ref.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "moe/client/client.h"

namespace moe::client {

// INVALID_ARGUMENT naming the field: max_attempts < 1, a negative or infinite back-off,
// max_backoff below initial_backoff, multiplier below 1.
absl::Status ValidateRetryPolicy(const RetryPolicy& policy);

bool IsRetryable(absl::StatusCode code);

// The most the wait after failed attempt `attempt` (1 = the first) may be:
// min(max_backoff, initial_backoff * multiplier^(attempt - 1)).
absl::Duration BackoffCeiling(const RetryPolicy& policy, int attempt);

// The wait before attempt `attempt + 1` after attempt `attempt` ended with `status` at `now`,
// or nullopt to give up: `status` is OK or not retryable, `attempt` was the policy's last, or
// the wait would reach `deadline`.
std::optional<absl::Duration> NextRetryDelay(const RetryPolicy& policy, int attempt,
                                             const absl::Status& status, absl::Time now,
                                             absl::Time deadline, absl::BitGenRef random);

// A failed call's final status; when it took more than one attempt the message ends with
// " (after N attempts)".
absl::Status WithAttemptCount(const absl::Status& status, int attempts);

}  // namespace moe::client
