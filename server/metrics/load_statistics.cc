#include "server/metrics/load_statistics.h"

#include <algorithm>

namespace moe::metrics {
namespace {

int64_t Total(std::span<const int64_t> expert_tokens) {
  int64_t total = 0;
  for (int64_t tokens : expert_tokens) total += tokens;
  return total;
}

}  // namespace

std::optional<double> LoadImbalance(std::span<const int64_t> expert_tokens) {
  const int64_t total = Total(expert_tokens);
  if (expert_tokens.empty() || total <= 0) return std::nullopt;
  const int64_t largest = *std::max_element(expert_tokens.begin(), expert_tokens.end());
  // max / (total / E), rearranged to divide once.
  return static_cast<double>(largest) * static_cast<double>(expert_tokens.size()) /
         static_cast<double>(total);
}

std::vector<double> LoadShares(std::span<const int64_t> expert_tokens) {
  const int64_t total = Total(expert_tokens);
  if (total <= 0) return {};
  std::vector<double> shares;
  shares.reserve(expert_tokens.size());
  for (int64_t tokens : expert_tokens) {
    shares.push_back(static_cast<double>(tokens) / static_cast<double>(total));
  }
  return shares;
}

int64_t IdleExperts(std::span<const int64_t> expert_tokens) {
  return std::count(expert_tokens.begin(), expert_tokens.end(), int64_t{0});
}

}  // namespace moe::metrics
