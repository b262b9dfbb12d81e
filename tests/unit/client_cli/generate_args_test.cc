// `--prompt-ids 1,2,3` and `--max-new-tokens N | MIN:MAX`: what is accepted, what is refused
// with the flag named, and that ranges are drawn uniformly within their bounds.
#include "client/cli/generate_args.h"

#include <cmath>
#include <map>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::client::cli {
namespace {

using ::moe::testing::IsOk;
using ::moe::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(ClientCliTokenIds, ParsesCommaSeparatedIdsWithSpaces) {
  EXPECT_THAT(*ParseTokenIds("1,306,4658", "prompt-ids"), ElementsAre(1, 306, 4658));
  EXPECT_THAT(*ParseTokenIds(" 0 , 7 ", "prompt-ids"), ElementsAre(0, 7));
  EXPECT_THAT(*ParseTokenIds("", "stop-ids"), IsEmpty());
  EXPECT_THAT(*ParseTokenIds("2147483647", "stop-ids"), ElementsAre(2147483647));
}

TEST(ClientCliTokenIds, RefusesNonIdsNamingTheFlagAndTheItem) {
  for (const char* bad : {"1,x", "1,,2", "-1", "1.5", "2147483648", "1;2", ","}) {
    EXPECT_THAT(ParseTokenIds(bad, "prompt-ids"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--prompt-ids")))
        << bad;
  }
  EXPECT_THAT(ParseTokenIds("4,abc", "stop-ids"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'abc'")));
}

TEST(ClientCliIntRange, OneNumberIsAFixedRange) {
  auto range = ParseIntRange("128", "max-new-tokens");
  ASSERT_THAT(range, IsOk());
  EXPECT_EQ(range->min, 128);
  EXPECT_EQ(range->max, 128);
  EXPECT_TRUE(range->fixed());
}

TEST(ClientCliIntRange, MinColonMaxIsInclusive) {
  auto range = ParseIntRange("16:256", "prompt-len");
  ASSERT_THAT(range, IsOk());
  EXPECT_EQ(range->min, 16);
  EXPECT_EQ(range->max, 256);
  EXPECT_FALSE(range->fixed());
  auto same = ParseIntRange("8:8", "prompt-len");
  ASSERT_THAT(same, IsOk());
  EXPECT_TRUE(same->fixed());
}

TEST(ClientCliIntRange, RefusesBadRangesNamingTheFlag) {
  for (const char* bad : {"", "x", "0", "-4", "8:4", "1:2:3", ":8", "8:", "1.5", "0:4"}) {
    EXPECT_THAT(ParseIntRange(bad, "max-new-tokens"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--max-new-tokens")))
        << "'" << bad << "'";
  }
  EXPECT_THAT(ParseIntRange("8:4", "prompt-len"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("MIN is above MAX")));
  EXPECT_THAT(ParseIntRange("0", "n", /*lowest=*/0), IsOk());
}

TEST(ClientCliIntRange, DrawsCoverTheWholeRangeAndNothingElse) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  const IntRange range{.min = 3, .max = 7};
  std::map<int64_t, int> seen;
  for (int i = 0; i < 2000; ++i) ++seen[range.Draw(rng)];
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_EQ(seen.begin()->first, 3);
  EXPECT_EQ(seen.rbegin()->first, 7);
  for (const auto& [value, count] : seen) {
    EXPECT_GT(count, 300) << value << ": uniform would give about 400 of 2000";
  }
}

TEST(ClientCliRandomTokenIds, StayBelowTheVocabularySize) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  const std::vector<int32_t> ids = RandomTokenIds(5000, 10, rng);
  ASSERT_EQ(ids.size(), 5000u);
  std::map<int32_t, int> seen;
  for (int32_t id : ids) ++seen[id];
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(seen.begin()->first, 0);
  EXPECT_EQ(seen.rbegin()->first, 9);
}

TEST(ClientCliIntRange, LogUniformSpreadHasAsManyValuesPerOctaveAndStaysInRange) {
  IntRange range{.min = 8, .max = 511, .spread = Spread::kLogUniform};
  std::mt19937_64 rng(testing::FreshSeed());
  std::map<int, int> octaves;  // floor(log2(value)) -> count
  const int draws = 60000;
  for (int i = 0; i < draws; ++i) {
    const int64_t value = range.Draw(rng);
    ASSERT_GE(value, 8);
    ASSERT_LE(value, 511);
    ++octaves[static_cast<int>(std::log2(static_cast<double>(value)))];
  }
  // Octaves [8,16), [16,32), ... [256,512): six of them, 1/6 of the draws each, within 5%
  // (10,000 per octave: one standard deviation is about 91).
  ASSERT_EQ(octaves.size(), 6u);
  for (const auto& [octave, count] : octaves) {
    EXPECT_NEAR(count, draws / 6, draws / 6 * 0.05) << "octave 2^" << octave;
  }
}

TEST(ClientCliIntRange, SpreadNamesRoundTripAndOthersAreRefused) {
  EXPECT_EQ(*ParseSpread("uniform", "s"), Spread::kUniform);
  EXPECT_EQ(*ParseSpread("log-uniform", "s"), Spread::kLogUniform);
  EXPECT_EQ(SpreadName(Spread::kLogUniform), "log-uniform");
  EXPECT_FALSE(ParseSpread("normal", "max-new-tokens-spread").ok());
}

}  // namespace
}  // namespace moe::client::cli
