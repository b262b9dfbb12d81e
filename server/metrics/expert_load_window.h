// Per-expert token counts and router entropy over a sliding time window (the last 60 s, say),
// for the gauges that show the current load: shares, imbalance, idle experts, entropy.
//
// The window is a ring of fixed time slots (window / slots each). A batch adds into the slot
// its time falls in; a query sums the slots that are younger than the window. Memory is
// slots x layers x experts counts, whatever the traffic, and adding is a few additions per
// expert. The window therefore moves in steps of one slot: it covers between
// (slots - 1) / slots and all of `window`.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace moe::metrics {

class ExpertLoadWindow {
 public:
  // INVALID_ARGUMENT unless layers, experts and slots are positive and `window` is at least
  // one microsecond per slot.
  static absl::StatusOr<ExpertLoadWindow> Create(int64_t num_layers, int64_t num_experts,
                                                 absl::Duration window, int num_slots);

  // Adds one batch seen at `now`: `expert_tokens` [layers, experts] assignments, and
  // `entropy_sum` [layers] the sum over its `rows` tokens of the router's gate entropy (nats);
  // `entropy_sum` may be empty when it was not measured.
  void Add(absl::Time now, std::span<const int64_t> expert_tokens,
           std::span<const double> entropy_sum, int64_t rows);

  struct Totals {
    std::vector<int64_t> expert_tokens;  // [layers, experts]
    std::vector<double> entropy_sum;     // [layers]
    int64_t entropy_rows = 0;            // tokens whose entropy is in entropy_sum
  };
  // Sums over the slots inside the window ending at `now`.
  Totals Sum(absl::Time now) const;

  int64_t num_layers() const { return num_layers_; }
  int64_t num_experts() const { return num_experts_; }

 private:
  ExpertLoadWindow(int64_t num_layers, int64_t num_experts, absl::Duration slot, int num_slots);

  struct Slot {
    int64_t index = -1;  // which slot of time (now / slot length) it holds; -1: never used
    std::vector<int64_t> expert_tokens;
    std::vector<double> entropy_sum;
    int64_t entropy_rows = 0;
  };
  int64_t SlotIndex(absl::Time now) const;

  int64_t num_layers_;
  int64_t num_experts_;
  absl::Duration slot_;
  std::vector<Slot> slots_;
};

}  // namespace moe::metrics
