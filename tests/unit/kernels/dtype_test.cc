// The 16-bit float conversions and the dtype tables checkpoints are parsed with: every bit
// pattern round-trips, rounding is to nearest with ties to even, and the special values (NaN,
// infinities, subnormals, overflow) come out as IEEE 754 says.
#include "moe/kernels/dtype.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/random.h"

namespace moe::kernels {
namespace {

float FloatFromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

uint32_t BitsOfFloat(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

bool IsHalfNaN(uint16_t bits) { return (bits & 0x7c00u) == 0x7c00u && (bits & 0x03ffu) != 0; }
bool IsBF16NaN(uint16_t bits) { return (bits & 0x7f80u) == 0x7f80u && (bits & 0x007fu) != 0; }

// The value of a binary16 pattern, computed from the definition (no bit tricks): finite values
// are m * 2^(e - 25) with the implicit bit, subnormals m * 2^-24. Infinity for exponent 31.
double HalfValueFromDefinition(uint16_t bits) {
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  const double sign = (bits & 0x8000u) ? -1.0 : 1.0;
  if (exponent == 0x1f) return sign * std::numeric_limits<double>::infinity();
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

// Nearest binary16 to a finite or infinite `value` by searching the ordered table of
// non-negative finite halves; ties go to the even pattern. |value| >= 65520 (half-way between
// the largest half 65504 and 2^16) overflows to infinity.
uint16_t NearestHalfReference(float value) {
  const uint16_t sign = std::signbit(value) ? 0x8000u : 0u;
  const double magnitude = std::fabs(static_cast<double>(value));
  if (magnitude >= 65520.0) return sign | 0x7c00u;
  // Largest pattern in [0, 0x7bff] whose value is <= magnitude (values increase with bits).
  uint32_t lo = 0, hi = 0x7bff;
  while (lo < hi) {
    const uint32_t mid = (lo + hi + 1) / 2;
    if (HalfValueFromDefinition(static_cast<uint16_t>(mid)) <= magnitude) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  uint16_t result = static_cast<uint16_t>(lo);
  if (lo < 0x7bff) {
    const double below = magnitude - HalfValueFromDefinition(static_cast<uint16_t>(lo));
    const double above = HalfValueFromDefinition(static_cast<uint16_t>(lo + 1)) - magnitude;
    if (above < below || (above == below && (lo & 1u) != 0)) result = static_cast<uint16_t>(lo + 1);
  }
  return sign | result;
}

// Nearest bfloat16 to a finite or infinite float, from distances in double; ties to even. The
// pattern after the largest finite one stands for 2^128 so that overflow rounds as IEEE says.
uint16_t NearestBF16Reference(float value) {
  const uint32_t bits = BitsOfFloat(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude_bits = bits & 0x7fffffffu;
  if (magnitude_bits == 0x7f800000u) return sign | 0x7f80u;
  const uint16_t truncated = static_cast<uint16_t>(magnitude_bits >> 16);
  const double magnitude = std::fabs(static_cast<double>(value));
  const double below_value = static_cast<double>(FloatFromBits(uint32_t{truncated} << 16));
  const uint16_t next = static_cast<uint16_t>(truncated + 1);
  const double above_value = next == 0x7f80u
                                 ? std::ldexp(1.0, 128)
                                 : static_cast<double>(FloatFromBits(uint32_t{next} << 16));
  const double below = magnitude - below_value;
  const double above = above_value - magnitude;
  const bool round_up = above < below || (above == below && (truncated & 1u) != 0);
  return sign | (round_up ? next : truncated);
}

std::string Hex(uint32_t bits) {
  char buffer[16];
  std::snprintf(buffer, sizeof(buffer), "0x%08x", bits);
  return buffer;
}

TEST(BF16Test, EveryNonNaNPatternRoundTripsExactly) {
  for (uint32_t bits = 0; bits <= 0xffffu; ++bits) {
    const auto pattern = static_cast<uint16_t>(bits);
    const float widened = BF16ToFloat(pattern);
    if (IsBF16NaN(pattern)) {
      ASSERT_TRUE(std::isnan(widened)) << "bf16 " << Hex(bits);
      ASSERT_TRUE(IsBF16NaN(FloatToBF16(widened))) << "bf16 " << Hex(bits);
      continue;
    }
    ASSERT_EQ(BitsOfFloat(widened), bits << 16) << "bf16 " << Hex(bits);
    ASSERT_EQ(FloatToBF16(widened), pattern) << "bf16 " << Hex(bits);
  }
}

TEST(BF16Test, RoundsToNearestWithTiesToEven) {
  // 1 + 2^-8 lies half-way between 1 and 1 + 2^-7: the even neighbour (1.0) wins.
  EXPECT_EQ(FloatToBF16(1.0f + 0x1p-8f), 0x3f80u);
  // 1 + 3 * 2^-8 lies half-way between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
  EXPECT_EQ(FloatToBF16(1.0f + 3 * 0x1p-8f), 0x3f82u);
  // Just above and below a tie.
  EXPECT_EQ(FloatToBF16(FloatFromBits(0x3f808001u)), 0x3f81u);
  EXPECT_EQ(FloatToBF16(FloatFromBits(0x3f807fffu)), 0x3f80u);
  EXPECT_EQ(FloatToBF16(-1.0f - 0x1p-8f), 0xbf80u);
  // The largest float is past the half-way point to 2^128: it rounds to infinity.
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::max()), 0x7f80u);
  EXPECT_EQ(FloatToBF16(-std::numeric_limits<float>::max()), 0xff80u);
  // The largest finite bfloat16 stays finite.
  EXPECT_EQ(FloatToBF16(FloatFromBits(0x7f7f0000u)), 0x7f7fu);
}

TEST(BF16Test, MatchesNearestValueAroundEveryTie) {
  for (uint32_t high = 0; high <= 0xffffu; ++high) {
    if (IsBF16NaN(static_cast<uint16_t>(high)) || (high & 0x7fffu) == 0x7f80u) continue;
    for (uint32_t low : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
      const uint32_t bits = (high << 16) | low;
      const float value = FloatFromBits(bits);
      if (std::isnan(value)) continue;
      ASSERT_EQ(FloatToBF16(value), NearestBF16Reference(value)) << "float bits " << Hex(bits);
    }
  }
}

TEST(BF16Test, MatchesNearestValueForRandomFloats) {
  const uint64_t seed = moe::testing::FreshSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 200000; ++i) {
    const auto bits = static_cast<uint32_t>(rng());
    const float value = FloatFromBits(bits);
    if (std::isnan(value)) continue;
    ASSERT_EQ(FloatToBF16(value), NearestBF16Reference(value)) << "float bits " << Hex(bits);
  }
}

TEST(BF16Test, NaNStaysQuietNaNAndInfinityStaysInfinity) {
  for (uint32_t bits : {0x7f800001u, 0x7fc00000u, 0x7fffffffu, 0xff800001u, 0xffc00000u,
                        0x7f80ffffu, 0x7f810000u}) {
    const uint16_t converted = FloatToBF16(FloatFromBits(bits));
    EXPECT_TRUE(IsBF16NaN(converted)) << "float bits " << Hex(bits);
    EXPECT_NE(converted & 0x0040u, 0u) << "quiet bit, float bits " << Hex(bits);
    EXPECT_EQ(converted & 0x8000u, (bits >> 16) & 0x8000u) << "sign, float bits " << Hex(bits);
  }
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::infinity()), 0x7f80u);
  EXPECT_EQ(FloatToBF16(-std::numeric_limits<float>::infinity()), 0xff80u);
  EXPECT_EQ(FloatToBF16(0.0f), 0x0000u);
  EXPECT_EQ(FloatToBF16(-0.0f), 0x8000u);
}

TEST(HalfTest, WidensEveryPatternToItsDefinedValue) {
  for (uint32_t bits = 0; bits <= 0xffffu; ++bits) {
    const auto pattern = static_cast<uint16_t>(bits);
    const float widened = HalfToFloat(pattern);
    if (IsHalfNaN(pattern)) {
      ASSERT_TRUE(std::isnan(widened)) << "half " << Hex(bits);
      continue;
    }
    ASSERT_EQ(static_cast<double>(widened), HalfValueFromDefinition(pattern))
        << "half " << Hex(bits);
    ASSERT_EQ(std::signbit(widened), (bits & 0x8000u) != 0) << "half " << Hex(bits);
  }
}

TEST(HalfTest, EveryNonNaNPatternRoundTripsExactly) {
  for (uint32_t bits = 0; bits <= 0xffffu; ++bits) {
    const auto pattern = static_cast<uint16_t>(bits);
    if (IsHalfNaN(pattern)) {
      ASSERT_TRUE(IsHalfNaN(FloatToHalf(HalfToFloat(pattern)))) << "half " << Hex(bits);
      continue;
    }
    ASSERT_EQ(FloatToHalf(HalfToFloat(pattern)), pattern) << "half " << Hex(bits);
  }
}

TEST(HalfTest, RoundsTiesToEvenBetweenEveryPairOfNeighbours) {
  // Midpoints of neighbouring halves need 12 significant bits: exact in float. Check the
  // midpoint itself and the floats on either side of it, for normals and subnormals alike.
  for (uint32_t bits = 0; bits < 0x7bffu; ++bits) {
    const double lower = HalfValueFromDefinition(static_cast<uint16_t>(bits));
    const double upper = HalfValueFromDefinition(static_cast<uint16_t>(bits + 1));
    const auto midpoint = static_cast<float>((lower + upper) / 2);
    ASSERT_EQ(static_cast<double>(midpoint), (lower + upper) / 2);
    const uint16_t even =
        (bits & 1u) == 0 ? static_cast<uint16_t>(bits) : static_cast<uint16_t>(bits + 1);
    ASSERT_EQ(FloatToHalf(midpoint), even) << "midpoint above half " << Hex(bits);
    ASSERT_EQ(FloatToHalf(-midpoint), 0x8000u | even) << "midpoint above half -" << Hex(bits);
    const float just_below = std::nextafter(midpoint, 0.0f);
    const float just_above = std::nextafter(midpoint, 1e9f);
    ASSERT_EQ(FloatToHalf(just_below), bits) << "just below midpoint above half " << Hex(bits);
    ASSERT_EQ(FloatToHalf(just_above), bits + 1) << "just above midpoint above half " << Hex(bits);
  }
}

TEST(HalfTest, MatchesNearestValueForRandomFloats) {
  const uint64_t seed = moe::testing::FreshSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> exponent(-30, 17);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  for (int i = 0; i < 200000; ++i) {
    float value = std::ldexp(mantissa(rng), exponent(rng));
    if (rng() & 1u) value = -value;
    ASSERT_EQ(FloatToHalf(value), NearestHalfReference(value))
        << "float " << value << " bits " << Hex(BitsOfFloat(value));
  }
  for (int i = 0; i < 200000; ++i) {  // arbitrary bit patterns, mostly overflow and underflow
    const float value = FloatFromBits(static_cast<uint32_t>(rng()));
    if (std::isnan(value)) continue;
    ASSERT_EQ(FloatToHalf(value), NearestHalfReference(value))
        << "float " << value << " bits " << Hex(BitsOfFloat(value));
  }
}

TEST(HalfTest, HandlesInfinityNaNOverflowAndSubnormals) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(FloatToHalf(inf), 0x7c00u);
  EXPECT_EQ(FloatToHalf(-inf), 0xfc00u);
  EXPECT_TRUE(IsHalfNaN(FloatToHalf(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(IsHalfNaN(FloatToHalf(FloatFromBits(0x7f800001u))));  // signalling, low payload
  EXPECT_TRUE(IsHalfNaN(FloatToHalf(FloatFromBits(0xffc00000u))));
  // Overflow: 65504 is the largest half; 65520 is half-way to 2^16 and rounds to infinity.
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bffu);
  EXPECT_EQ(FloatToHalf(std::nextafter(65520.0f, 0.0f)), 0x7bffu);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00u);
  EXPECT_EQ(FloatToHalf(-65520.0f), 0xfc00u);
  EXPECT_EQ(FloatToHalf(1e10f), 0x7c00u);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::max()), 0x7c00u);
  // Normal boundary and subnormals.
  EXPECT_EQ(FloatToHalf(0x1p-14f), 0x0400u);
  EXPECT_EQ(FloatToHalf(0x1p-24f), 0x0001u);
  EXPECT_EQ(FloatToHalf(-0x1p-24f), 0x8001u);
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000u);  // tie between 0 and 2^-24: even (zero)
  EXPECT_EQ(FloatToHalf(std::nextafter(0x1p-25f, 1.0f)), 0x0001u);
  EXPECT_EQ(FloatToHalf(3 * 0x1p-25f), 0x0002u);     // tie between 1 and 2 ulps: even (2)
  EXPECT_EQ(FloatToHalf(1023 * 0x1p-24f), 0x03ffu);  // largest subnormal
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::denorm_min()), 0x0000u);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::denorm_min()), 0x8000u);
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000u);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000u);
  // Ties to even among normals: 1 + 2^-11 is half-way between 1 and 1 + 2^-10.
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f), 0x3c00u);
  EXPECT_EQ(FloatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02u);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00u);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000u);
  // Widening the specials.
  EXPECT_EQ(HalfToFloat(0x7c00u), inf);
  EXPECT_EQ(HalfToFloat(0xfc00u), -inf);
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00u)));
  EXPECT_EQ(HalfToFloat(0x0001u), 0x1p-24f);
  EXPECT_EQ(HalfToFloat(0x03ffu), 1023 * 0x1p-24f);
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000u)));
}

TEST(WidenToFloatTest, WidensEachFloatFormatElementByElement) {
  const uint64_t seed = moe::testing::FreshSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const size_t count = 1037;
  const std::vector<float> source = moe::testing::RandomFloats(rng, count, 3.0f);
  std::vector<uint16_t> bf16(count), half(count);
  for (size_t i = 0; i < count; ++i) {
    bf16[i] = FloatToBF16(source[i]);
    half[i] = FloatToHalf(source[i]);
  }
  std::vector<float> out(count, std::nanf(""));
  ASSERT_TRUE(WidenToFloat(DType::kF32, source.data(), out.data(), count));
  EXPECT_EQ(0, std::memcmp(out.data(), source.data(), count * sizeof(float)));
  std::fill(out.begin(), out.end(), std::nanf(""));
  ASSERT_TRUE(WidenToFloat(DType::kBF16, bf16.data(), out.data(), count));
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(out[i], BF16ToFloat(bf16[i])) << "element " << i;
  std::fill(out.begin(), out.end(), std::nanf(""));
  ASSERT_TRUE(WidenToFloat(DType::kF16, half.data(), out.data(), count));
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(out[i], HalfToFloat(half[i])) << "element " << i;
  // Zero elements is fine and touches nothing.
  EXPECT_TRUE(WidenToFloat(DType::kBF16, bf16.data(), out.data(), 0));
}

TEST(WidenToFloatTest, RefusesNonFloatDTypes) {
  const std::vector<uint8_t> source(64, 1);
  std::vector<float> out(8, 0.0f);
  for (DType dtype :
       {DType::kBool, DType::kU8, DType::kI8, DType::kF8E5M2, DType::kF8E4M3, DType::kI16,
        DType::kU16, DType::kI32, DType::kU32, DType::kF64, DType::kI64, DType::kU64}) {
    EXPECT_FALSE(WidenToFloat(dtype, source.data(), out.data(), 8)) << DTypeName(dtype);
  }
}

struct NamedDType {
  std::string_view name;
  DType dtype;
  size_t size;
};

constexpr NamedDType kSafetensorsDTypes[] = {
    {"BOOL", DType::kBool, 1},      {"U8", DType::kU8, 1},          {"I8", DType::kI8, 1},
    {"F8_E5M2", DType::kF8E5M2, 1}, {"F8_E4M3", DType::kF8E4M3, 1}, {"I16", DType::kI16, 2},
    {"U16", DType::kU16, 2},        {"F16", DType::kF16, 2},        {"BF16", DType::kBF16, 2},
    {"I32", DType::kI32, 4},        {"U32", DType::kU32, 4},        {"F32", DType::kF32, 4},
    {"F64", DType::kF64, 8},        {"I64", DType::kI64, 8},        {"U64", DType::kU64, 8},
};

TEST(DTypeNameTest, ParsesAllFifteenSafetensorsNames) {
  for (const NamedDType& entry : kSafetensorsDTypes) {
    const std::optional<DType> parsed = DTypeFromName(entry.name);
    ASSERT_TRUE(parsed.has_value()) << entry.name;
    EXPECT_EQ(*parsed, entry.dtype) << entry.name;
    EXPECT_EQ(DTypeName(entry.dtype), entry.name);
    EXPECT_EQ(DTypeSize(entry.dtype), entry.size) << entry.name;
  }
}

TEST(DTypeNameTest, RefusesUnknownNames) {
  for (std::string_view name : {"", "f32", "bf16", "F 32", "F32 ", " F32", "FP32", "FLOAT32",
                                "F8_E4M3FN", "F8", "Q4_0", "I128", "bool"}) {
    EXPECT_FALSE(DTypeFromName(name).has_value()) << "'" << name << "'";
  }
  EXPECT_FALSE(DTypeFromName(std::string_view("F32\0", 4)).has_value());
}

TEST(ComputeDTypeTest, ParsesUserSpellingsCaseInsensitively) {
  EXPECT_EQ(ComputeDTypeFromString("f32"), DType::kF32);
  EXPECT_EQ(ComputeDTypeFromString("F32"), DType::kF32);
  EXPECT_EQ(ComputeDTypeFromString("float32"), DType::kF32);
  EXPECT_EQ(ComputeDTypeFromString("bf16"), DType::kBF16);
  EXPECT_EQ(ComputeDTypeFromString("BFloat16"), DType::kBF16);
  EXPECT_EQ(ComputeDTypeFromString("f16"), DType::kF16);
  EXPECT_EQ(ComputeDTypeFromString("FLOAT16"), DType::kF16);
  for (std::string_view name : {"", "i32", "int8", "f64", "bf 16", "float", "f8_e4m3"}) {
    EXPECT_FALSE(ComputeDTypeFromString(name).has_value()) << "'" << name << "'";
  }
}

}  // namespace
}  // namespace moe::kernels
