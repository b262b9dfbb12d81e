#include "server/engine/decoder/rotary_embedding.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace moe::engine {

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, double theta)
    : head_dim_(head_dim), half_(head_dim / 2), inv_freq_(static_cast<size_t>(head_dim / 2)) {
  for (int64_t i = 0; i < half_; ++i) {
    inv_freq_[i] = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
  }
}

void RotaryEmbedding::Prepare(int64_t positions) {
  if (positions <= positions_) return;
  const int64_t grown = std::max(positions, 2 * positions_);
  cos_.resize(static_cast<size_t>(grown * half_));
  sin_.resize(static_cast<size_t>(grown * half_));
  for (int64_t p = positions_; p < grown; ++p) {
    for (int64_t i = 0; i < half_; ++i) {
      const double angle = static_cast<double>(p) * inv_freq_[i];
      cos_[p * half_ + i] = static_cast<float>(std::cos(angle));
      sin_[p * half_ + i] = static_cast<float>(std::sin(angle));
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
