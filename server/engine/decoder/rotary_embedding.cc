#include "server/engine/decoder/rotary_embedding.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <utility>

namespace moe::engine {

namespace {

// YaRN's correction range (arXiv 2309.00071, as transformers and vLLM compute it): the
// dimension at which a frequency makes `rotations` turns over `context` positions.
double CorrectionDimension(double rotations, double dim, double base, double context) {
  return dim * std::log(context / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(base));
}

}  // namespace

RopeFrequencies ComputeRopeFrequencies(int64_t head_dim, double theta,
                                       const model::RopeScaling& scaling) {
  const int64_t half = head_dim / 2;
  const auto dim = static_cast<double>(head_dim);
  RopeFrequencies out;
  out.inv_freq.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    out.inv_freq[i] = std::pow(theta, -2.0 * static_cast<double>(i) / dim);
  }
  switch (scaling.type) {
    case model::RopeScalingType::kNone:
      break;
    case model::RopeScalingType::kLinear:
      for (double& f : out.inv_freq) f /= scaling.factor;
      break;
    case model::RopeScalingType::kYarn: {
      // Low dimensions (many turns over the trained context) keep their frequency
      // (extrapolation), high ones are divided by the factor (interpolation), with a linear
      // ramp between the dimensions where beta_fast and beta_slow turns are made.
      const auto context = static_cast<double>(scaling.original_max_position_embeddings);
      const double low =
          std::max(std::floor(CorrectionDimension(scaling.beta_fast, dim, theta, context)), 0.0);
      double high =
          std::min(std::ceil(CorrectionDimension(scaling.beta_slow, dim, theta, context)), dim - 1);
      if (low == high) high += 0.001;  // as transformers: no division by zero
      for (int64_t i = 0; i < half; ++i) {
        const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        const double extrapolated = out.inv_freq[i];
        out.inv_freq[i] = extrapolated / scaling.factor * ramp + extrapolated * (1.0 - ramp);
      }
      out.attention_scale = scaling.attention_factor;
      break;
    }
  }
  return out;
}

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, RopeFrequencies frequencies)
    : head_dim_(head_dim), half_(head_dim / 2), frequencies_(std::move(frequencies)) {}

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, double theta)
    : RotaryEmbedding(head_dim, ComputeRopeFrequencies(head_dim, theta, model::RopeScaling())) {}

void RotaryEmbedding::Prepare(int64_t positions) {
  if (positions <= positions_) return;
  const int64_t grown = std::max(positions, 2 * positions_);
  cos_.resize(static_cast<size_t>(grown * half_));
  sin_.resize(static_cast<size_t>(grown * half_));
  for (int64_t p = positions_; p < grown; ++p) {
    for (int64_t i = 0; i < half_; ++i) {
      const double angle = static_cast<double>(p) * frequencies_.inv_freq[i];
      cos_[p * half_ + i] = static_cast<float>(std::cos(angle) * frequencies_.attention_scale);
      sin_[p * half_ + i] = static_cast<float>(std::sin(angle) * frequencies_.attention_scale);
    }
  }
  positions_ = grown;
}

void RotaryEmbedding::Apply(float* x, int64_t num_heads, int64_t position) const {
  const float* cos = cos_.data() + position * half_;
  const float* sin = sin_.data() + position * half_;
  for (int64_t h = 0; h < num_heads; ++h) {
    float* head = x + h * head_dim_;
    for (int64_t i = 0; i < half_; ++i) {
      const float x1 = head[i];
      const float x2 = head[i + half_];
      head[i] = x1 * cos[i] - x2 * sin[i];
      head[i + half_] = x2 * cos[i] + x1 * sin[i];
    }
  }
}

}  // namespace moe::engine
