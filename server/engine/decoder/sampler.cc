#include "server/engine/decoder/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe::engine {
namespace {

// With nucleus sampling the kept set is a prefix of the tokens by descending probability; it
// is usually short, so the most likely tokens are sorted first and the rest only when they do
// not reach top_p.
constexpr size_t kNucleusHead = 1024;

// Higher value first, then lower id: a strict total order, so results do not depend on the
// sort algorithm.
bool Before(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first != b.first ? a.first > b.first : a.second < b.second;
}

// NaN logits count as -inf: they are never chosen while any number is present.
float Clean(float value) { return std::isnan(value) ? -INFINITY : value; }

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& params, int64_t vocab_size) {
  if (!std::isfinite(params.temperature) || params.temperature < 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("temperature = ", params.temperature,
                                                   " must be a finite number >= 0 (0 = greedy)"));
  }
  if (params.top_k < 0 || params.top_k > vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("top_k = ", params.top_k, " must be in [0, ",
                                                   vocab_size, "] (0 = no limit; ", vocab_size,
                                                   " is the vocabulary size)"));
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {  // NaN fails both comparisons
    return absl::InvalidArgumentError(
        absl::StrCat("top_p = ", params.top_p, " must be in (0, 1] (1 = no limit)"));
  }
  if (!std::isfinite(params.repetition_penalty) || params.repetition_penalty <= 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("repetition_penalty = ", params.repetition_penalty,
                     " must be a finite number > 0 (1 = none)"));
  }
  return absl::OkStatus();
}

TokenSampler::TokenSampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

int32_t TokenSampler::Sample(std::span<const float> logits, std::span<const int32_t> history,
                             float* logprob) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  if (vocab == 0) {
    if (logprob != nullptr) *logprob = 0.0f;
    return 0;
  }
  scratch_.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) scratch_[i] = Clean(logits[i]);
  if (params_.repetition_penalty != 1.0f) {
    // Once per distinct token, as transformers' gather/scatter does.
    penalised_.assign(static_cast<size_t>(vocab), 0);
    for (const int32_t token : history) {
      if (token < 0 || token >= vocab || penalised_[token]) continue;
      penalised_[token] = 1;
      float& value = scratch_[token];
      value =
          value < 0.0f ? value * params_.repetition_penalty : value / params_.repetition_penalty;
    }
  }

  if (params_.temperature == 0.0f) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i) {
      if (scratch_[i] > scratch_[best]) best = i;
    }
    if (logprob != nullptr) {
      const double top = scratch_[best];
      double partition = 0.0;
      for (const float value : scratch_) partition += std::exp(static_cast<double>(value) - top);
      // All -inf (all NaN): a uniform pick among nothing; say so with 0 rather than NaN.
      *logprob = std::isfinite(top) ? static_cast<float>(-std::log(partition)) : 0.0f;
    }
    return static_cast<int32_t>(best);
  }

  // Temperature, then top-k on the scaled logits. The largest logit is subtracted before the
  // division: the top stays 0 and the rest at most 0, so a tiny temperature drives them to -inf
  // (greedy in the limit) instead of overflowing the largest ones to +inf, which would leave
  // nothing to tell them apart.
  float high = -INFINITY;
  for (const float value : scratch_) high = std::max(high, value);
  const float shift = std::isfinite(high) ? high : 0.0f;
  candidates_.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) {
    candidates_[i] = {(scratch_[i] - shift) / params_.temperature, static_cast<int32_t>(i)};
  }
  if (params_.top_k > 0 && params_.top_k < vocab) {
    std::nth_element(candidates_.begin(), candidates_.begin() + (params_.top_k - 1),
                     candidates_.end(), Before);
    candidates_.resize(static_cast<size_t>(params_.top_k));
  }
  // Softmax over what is left (unnormalised; the sums below normalise).
  float top = -INFINITY;
  for (const auto& candidate : candidates_) top = std::max(top, candidate.first);
  if (!std::isfinite(top)) {
    // Every logit -inf or NaN: nothing to prefer, take the first candidate.
    if (logprob != nullptr) *logprob = 0.0f;
    return std::min_element(candidates_.begin(), candidates_.end(), Before)->second;
  }
  double total = 0.0;
  for (auto& candidate : candidates_) {
    candidate.first = std::exp(candidate.first - top);
    total += candidate.first;
  }
  if (params_.top_p < 1.0f) {
    // Keep the most likely tokens while the mass before each is below top_p.
    const double threshold = static_cast<double>(params_.top_p) * total;
    auto sorted_end = candidates_.end();
    if (candidates_.size() > kNucleusHead) {
      sorted_end = candidates_.begin() + kNucleusHead;
      std::nth_element(candidates_.begin(), sorted_end - 1, candidates_.end(), Before);
      double head = 0.0;
      for (auto it = candidates_.begin(); it != sorted_end; ++it) head += it->first;
      if (head < threshold) sorted_end = candidates_.end();
    }
    std::sort(candidates_.begin(), sorted_end, Before);
    double before = 0.0;
    size_t kept = 0;
    while (kept < candidates_.size() && before < threshold) before += candidates_[kept++].first;
    candidates_.resize(std::max<size_t>(kept, 1));
    total = 0.0;
    for (const auto& candidate : candidates_) total += candidate.first;
  }
  // Inverse CDF with a 53-bit uniform draw (independent of the standard library's
  // distributions, which differ between implementations).
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * total;
  double cumulative = 0.0;
  size_t chosen = candidates_.size() - 1;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    cumulative += candidates_[i].first;
    if (u < cumulative && candidates_[i].first > 0.0f) {
      chosen = i;
      break;
    }
  }
  // Rounding can leave u past the last sum; the fallback must not be a zero-probability token.
  while (candidates_[chosen].first <= 0.0f && chosen > 0) --chosen;
  if (logprob != nullptr) {
    *logprob = static_cast<float>(std::log(candidates_[chosen].first / total));
  }
  return candidates_[chosen].second;
}

}  // namespace moe::engine
