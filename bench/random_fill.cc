#include "bench/random_fill.h"

#include <algorithm>
#include <cstdint>

namespace moe::bench {
namespace {

constexpr int64_t kBlock = int64_t{1} << 16;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// xorshift64*: the top 24 bits become a float in [-1, 1).
class XorShift {
 public:
  explicit XorShift(uint64_t seed) : state_(seed == 0 ? 0x2545f4914f6cdd1dull : seed) {}
  float NextSigned() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    const uint64_t bits = state_ * 0x2545f4914f6cdd1dull;
    return static_cast<float>(bits >> 40) * (2.0f / 16777216.0f) - 1.0f;
  }

 private:
  uint64_t state_;
};

template <typename Out, typename Convert>
void FillBlocks(Out* dst, int64_t count, float scale, uint64_t seed, Convert convert) {
  const int64_t num_blocks = (count + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < num_blocks; ++b) {
    XorShift rng(SplitMix64(seed ^ SplitMix64(static_cast<uint64_t>(b))));
    const int64_t end = std::min(count, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < end; ++i) dst[i] = convert(scale * rng.NextSigned());
  }
}

}  // namespace

void FillUniform(kernels::DType dtype, void* dst, int64_t count, float scale, uint64_t seed) {
  switch (dtype) {
    case kernels::DType::kBF16:
      FillBlocks(static_cast<uint16_t*>(dst), count, scale, seed, kernels::FloatToBF16);
      break;
    case kernels::DType::kF16:
      FillBlocks(static_cast<uint16_t*>(dst), count, scale, seed, kernels::FloatToHalf);
      break;
    default:
      FillBlocks(static_cast<float*>(dst), count, scale, seed, [](float v) { return v; });
      break;
  }
}

}  // namespace moe::bench
