#include "server/metrics/expert_load_window.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace moe::metrics {

absl::StatusOr<ExpertLoadWindow> ExpertLoadWindow::Create(int64_t num_layers, int64_t num_experts,
                                                          absl::Duration window, int num_slots) {
  if (num_layers < 1 || num_experts < 1) {
    return absl::InvalidArgumentError(absl::StrCat("expert load window: ", num_layers,
                                                   " layers of ", num_experts,
                                                   " experts; both must be positive"));
  }
  if (num_slots < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert load window: ", num_slots, " slots; must be positive"));
  }
  const absl::Duration slot = window / num_slots;
  if (slot < absl::Microseconds(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert load window: ", absl::FormatDuration(window), " over ", num_slots,
                     " slots is too short"));
  }
  return ExpertLoadWindow(num_layers, num_experts, slot, num_slots);
}

ExpertLoadWindow::ExpertLoadWindow(int64_t num_layers, int64_t num_experts, absl::Duration slot,
                                   int num_slots)
    : num_layers_(num_layers), num_experts_(num_experts), slot_(slot), slots_(num_slots) {
  for (Slot& s : slots_) {
    s.expert_tokens.assign(static_cast<size_t>(num_layers * num_experts), 0);
    s.entropy_sum.assign(static_cast<size_t>(num_layers), 0.0);
  }
}

int64_t ExpertLoadWindow::SlotIndex(absl::Time now) const {
  absl::Duration remainder;  // IDivDuration writes it; a null pointer is not allowed
  return absl::IDivDuration(now - absl::UnixEpoch(), slot_, &remainder);
}

void ExpertLoadWindow::Add(absl::Time now, std::span<const int64_t> expert_tokens,
                           std::span<const double> entropy_sum, int64_t rows) {
  const int64_t index = SlotIndex(now);
  Slot& slot = slots_[static_cast<size_t>(index % static_cast<int64_t>(slots_.size()))];
  if (slot.index != index) {
    // The ring came round: this slot's old contents fell out of the window.
    std::fill(slot.expert_tokens.begin(), slot.expert_tokens.end(), 0);
    std::fill(slot.entropy_sum.begin(), slot.entropy_sum.end(), 0.0);
    slot.entropy_rows = 0;
    slot.index = index;
  }
  const size_t counts = std::min(expert_tokens.size(), slot.expert_tokens.size());
  for (size_t i = 0; i < counts; ++i) slot.expert_tokens[i] += expert_tokens[i];
  if (!entropy_sum.empty()) {
    const size_t layers = std::min(entropy_sum.size(), slot.entropy_sum.size());
    for (size_t i = 0; i < layers; ++i) slot.entropy_sum[i] += entropy_sum[i];
    slot.entropy_rows += rows;
  }
}

ExpertLoadWindow::Totals ExpertLoadWindow::Sum(absl::Time now) const {
  const int64_t newest = SlotIndex(now);
  const int64_t oldest = newest - static_cast<int64_t>(slots_.size()) + 1;
  Totals totals;
  totals.expert_tokens.assign(static_cast<size_t>(num_layers_ * num_experts_), 0);
  totals.entropy_sum.assign(static_cast<size_t>(num_layers_), 0.0);
  for (const Slot& slot : slots_) {
    if (slot.index < oldest || slot.index > newest) continue;
    for (size_t i = 0; i < slot.expert_tokens.size(); ++i) {
      totals.expert_tokens[i] += slot.expert_tokens[i];
    }
    for (size_t i = 0; i < slot.entropy_sum.size(); ++i)
      totals.entropy_sum[i] += slot.entropy_sum[i];
    totals.entropy_rows += slot.entropy_rows;
  }
  return totals;
}

}  // namespace moe::metrics
