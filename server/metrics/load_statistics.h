// Aggregates of one MoE layer's expert load, computed from per-expert token counts: how evenly
// the router spreads tokens (imbalance, shares) and whether experts have stopped receiving any
// (collapse). Pure functions, so that tests check them against hand-computed values.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace moe::metrics {

// Largest count / mean count over the experts: 1 when every expert got the same number of
// tokens, E when one expert got them all. nullopt when there are no experts or no tokens.
std::optional<double> LoadImbalance(std::span<const int64_t> expert_tokens);

// Each expert's fraction of the total (sums to 1). Empty when there are no tokens.
std::vector<double> LoadShares(std::span<const int64_t> expert_tokens);

// Experts that got no token.
int64_t IdleExperts(std::span<const int64_t> expert_tokens);

}  // namespace moe::metrics
