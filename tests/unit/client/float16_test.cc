// The client's own float32 -> FP16/BF16 conversions (it does not link the kernels library): hand
// values, and bit-for-bit agreement with moe::kernels' tested conversions on every half, the
// midpoints between halves, and fresh random float32 patterns.
#include "client/src/float16.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#include "gtest/gtest.h"
#include "moe/kernels/dtype.h"
#include "tests/testing/random.h"

namespace moe::client {
namespace {

float FloatFromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

bool IsHalfNaN(uint16_t bits) { return (bits & 0x7c00u) == 0x7c00u && (bits & 0x03ffu) != 0; }

TEST(Float16Test, ConvertsHandValues) {
  struct Case {
    float value;
    uint16_t half;
    uint16_t bf16;
  };
  const Case cases[] = {
      {0.0f, 0x0000, 0x0000},
      {-0.0f, 0x8000, 0x8000},
      {1.0f, 0x3c00, 0x3f80},
      {-2.0f, 0xc000, 0xc000},
      {0.5f, 0x3800, 0x3f00},
      {65504.0f, 0x7bff, 0x4780},  // the largest half; bf16 rounds it up to 65536
      {65520.0f, 0x7c00, 0x4780},  // half-way past the largest half: infinity
      {3.14159265f, 0x4248, 0x4049},
      {1.0f / 3.0f, 0x3555, 0x3eab},
      {std::ldexp(1.0f, -24), 0x0001, 0x3380},  // smallest half subnormal
      {std::ldexp(1.0f, -25), 0x0000, 0x3300},  // half of it: a tie, to even (zero)
      {std::ldexp(1.5f, -25), 0x0001, 0x3340},
      {std::numeric_limits<float>::infinity(), 0x7c00, 0x7f80},
      {-std::numeric_limits<float>::infinity(), 0xfc00, 0xff80},
      {1.0009765625f, 0x3c01, 0x3f80},  // 1 + 2^-10: exact in half, rounds to 1 in bf16
  };
  for (const Case& c : cases) {
    EXPECT_EQ(FloatToHalfBits(c.value), c.half) << "half of " << c.value;
    EXPECT_EQ(FloatToBFloat16Bits(c.value), c.bf16) << "bf16 of " << c.value;
  }
  EXPECT_TRUE(IsHalfNaN(FloatToHalfBits(std::numeric_limits<float>::quiet_NaN())));
  const uint16_t bf16_nan = FloatToBFloat16Bits(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(bf16_nan & 0x7f80u, 0x7f80u);
  EXPECT_NE(bf16_nan & 0x007fu, 0u);
}

TEST(Float16Test, HalfMatchesTheKernelsOnEveryHalfAndBetween) {
  for (uint32_t bits = 0; bits < 0x10000u; ++bits) {
    const auto half = static_cast<uint16_t>(bits);
    if (IsHalfNaN(half)) continue;
    const float value = kernels::HalfToFloat(half);
    ASSERT_EQ(FloatToHalfBits(value), half) << "half 0x" << std::hex << bits;
    if ((half & 0x7fffu) >= 0x7c00u) continue;  // infinity has no next half
    // The midpoint to the next half up (in magnitude) and its float neighbours: the rounding
    // decisions.
    const float next = kernels::HalfToFloat(static_cast<uint16_t>(half + 1));
    const float midpoint = static_cast<float>((static_cast<double>(value) + next) / 2.0);
    for (float probe : {midpoint, std::nextafter(midpoint, 0.0f),
                        std::nextafter(midpoint, std::numeric_limits<float>::infinity()),
                        std::nextafter(midpoint, -std::numeric_limits<float>::infinity())}) {
      ASSERT_EQ(FloatToHalfBits(probe), kernels::FloatToHalf(probe))
          << "near the midpoint above half 0x" << std::hex << bits;
    }
  }
}

TEST(Float16Test, MatchesTheKernelsOnRandomFloats) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 2'000'000; ++i) {
    const uint32_t bits = any_bits(rng);
    const float value = FloatFromBits(bits);
    ASSERT_EQ(FloatToBFloat16Bits(value), kernels::FloatToBF16(value))
        << "bf16 of bits 0x" << std::hex << bits << " seed " << std::dec << seed;
    if (std::isnan(value)) {
      ASSERT_TRUE(IsHalfNaN(FloatToHalfBits(value))) << "seed " << seed;
    } else {
      ASSERT_EQ(FloatToHalfBits(value), kernels::FloatToHalf(value))
          << "half of bits 0x" << std::hex << bits << " seed " << std::dec << seed;
    }
  }
}

}  // namespace
}  // namespace moe::client
