#include "client/cli/arrival_schedule.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe::client::cli {

absl::StatusOr<Arrival> ParseArrival(absl::string_view name) {
  if (name == "constant") return Arrival::kConstant;
  if (name == "poisson") return Arrival::kPoisson;
  return absl::InvalidArgumentError(
      absl::StrCat("--arrival '", std::string(name), "': expected poisson or constant"));
}

absl::string_view ArrivalName(Arrival arrival) {
  return arrival == Arrival::kConstant ? "constant" : "poisson";
}

ArrivalSchedule::ArrivalSchedule(Arrival arrival, double rate_per_s, uint64_t seed)
    : arrival_(arrival),
      period_ns_(std::max<int64_t>(1, std::llround(1e9 / rate_per_s))),
      rng_(seed),
      gap_s_(rate_per_s) {}

absl::Duration ArrivalSchedule::Next() {
  const int64_t index = index_++;
  if (arrival_ == Arrival::kConstant) return absl::Nanoseconds(index * period_ns_);
  if (index > 0) poisson_time_s_ += gap_s_(rng_);
  return absl::Seconds(poisson_time_s_);
}

}  // namespace moe::client::cli
