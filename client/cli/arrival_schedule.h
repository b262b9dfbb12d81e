// When an open-loop benchmark sends each request: at a constant rate (exactly one period apart)
// or as a Poisson process (exponentially distributed gaps with mean 1/rate, as requests from
// many independent users arrive). The schedule is fixed in advance of the answers: a slow answer
// never delays the next send.
#pragma once

#include <cstdint>
#include <random>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace moe::client::cli {

enum class Arrival { kConstant, kPoisson };

// "constant" or "poisson"; INVALID_ARGUMENT otherwise.
absl::StatusOr<Arrival> ParseArrival(absl::string_view name);
absl::string_view ArrivalName(Arrival arrival);

class ArrivalSchedule {
 public:
  // `rate_per_s` > 0. `seed` seeds the Poisson gaps (unused for constant arrivals).
  ArrivalSchedule(Arrival arrival, double rate_per_s, uint64_t seed);

  // The time of the next send, from the start of the schedule: 0 for the first, then one
  // gap later for each call. Constant: call i (from 0) is at i x period, period being 1/rate
  // rounded to a nanosecond, so that every gap is exactly equal.
  absl::Duration Next();

 private:
  Arrival arrival_;
  int64_t period_ns_;  // constant
  std::mt19937_64 rng_;
  std::exponential_distribution<double> gap_s_;  // poisson
  int64_t index_ = 0;
  double poisson_time_s_ = 0;
};

}  // namespace moe::client::cli
