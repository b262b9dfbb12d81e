// Seeded random inputs for numeric tests; the seed goes into every failure message.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace moe::testing {

// A fresh seed per call (from std::random_device) unless MOE_TEST_SEED is set, so failures
// can be replayed.
uint64_t FreshSeed();

inline std::vector<float> RandomFloats(std::mt19937_64& rng, size_t count, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> values(count);
  for (float& v : values) v = dist(rng);
  return values;
}

// ||a - b|| / ||b|| in double precision; 0 when both are empty.
inline double RelativeL2(const float* a, const float* b, size_t count) {
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < count; ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    diff += d * d;
    ref += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  if (ref == 0.0) return diff == 0.0 ? 0.0 : INFINITY;
  return std::sqrt(diff / ref);
}

}  // namespace moe::testing
