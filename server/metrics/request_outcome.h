// How a ModelInfer call ended, as the `outcome` label of moe_requests_total: one mapping from
// the call's final status code, so that every path that finishes a call counts the same way.
#pragma once

#include <array>
#include <string_view>

#include "absl/status/status.h"

namespace moe::metrics {

enum class RequestOutcome {
  kSuccess,    // OK
  kInvalid,    // the request was wrong (bad tensor, unknown model, model cannot run it)
  kRejected,   // the server could not take it (queue full, too large, loading, draining)
  kCancelled,  // the client cancelled or went away
  kDeadline,   // its deadline passed before it was computed
  kInternal,   // an engine failure, or anything unforeseen
};

inline constexpr std::array<RequestOutcome, 6> kAllRequestOutcomes = {
    RequestOutcome::kSuccess,   RequestOutcome::kInvalid,  RequestOutcome::kRejected,
    RequestOutcome::kCancelled, RequestOutcome::kDeadline, RequestOutcome::kInternal};

RequestOutcome OutcomeOf(absl::StatusCode code);

// The label value: "success", "invalid", ...
std::string_view OutcomeName(RequestOutcome outcome);

}  // namespace moe::metrics
