// Load aggregates against values worked out by hand.
#include "server/metrics/load_statistics.h"

#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::metrics {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::Optional;

TEST(LoadImbalanceTest, PerfectBalanceIsOne) {
  const std::vector<int64_t> tokens = {5, 5, 5, 5};
  EXPECT_THAT(LoadImbalance(tokens), Optional(DoubleNear(1.0, 1e-12)));
}

TEST(LoadImbalanceTest, IsLargestOverMean) {
  // total 20 over 4 experts: mean 5, largest 10 -> 2.
  const std::vector<int64_t> tokens = {10, 6, 4, 0};
  EXPECT_THAT(LoadImbalance(tokens), Optional(DoubleNear(2.0, 1e-12)));
  // total 7 over 3: mean 7/3, largest 4 -> 12/7.
  const std::vector<int64_t> uneven = {1, 4, 2};
  EXPECT_THAT(LoadImbalance(uneven), Optional(DoubleNear(12.0 / 7.0, 1e-12)));
}

TEST(LoadImbalanceTest, OneExpertTakingEverythingIsTheExpertCount) {
  const std::vector<int64_t> tokens = {0, 0, 9, 0, 0, 0, 0, 0};
  EXPECT_THAT(LoadImbalance(tokens), Optional(DoubleNear(8.0, 1e-12)));
}

TEST(LoadImbalanceTest, NoTokensOrNoExpertsHasNoValue) {
  const std::vector<int64_t> none = {0, 0, 0};
  EXPECT_EQ(LoadImbalance(none), std::nullopt);
  EXPECT_EQ(LoadImbalance({}), std::nullopt);
}

TEST(LoadSharesTest, AreFractionsOfTheTotal) {
  const std::vector<int64_t> tokens = {1, 0, 3};
  EXPECT_THAT(LoadShares(tokens), ElementsAre(DoubleNear(0.25, 1e-12), DoubleNear(0.0, 1e-12),
                                              DoubleNear(0.75, 1e-12)));
  const std::vector<int64_t> none = {0, 0};
  EXPECT_TRUE(LoadShares(none).empty());
}

TEST(IdleExpertsTest, CountsExpertsWithoutTokens) {
  const std::vector<int64_t> tokens = {0, 3, 0, 1, 0};
  EXPECT_EQ(IdleExperts(tokens), 3);
  const std::vector<int64_t> busy = {2, 1};
  EXPECT_EQ(IdleExperts(busy), 0);
}

}  // namespace
}  // namespace moe::metrics
