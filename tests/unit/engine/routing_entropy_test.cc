// Gate entropy against hand-computed values and a naive double-precision formula.
#include "server/engine/routing_entropy.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/random.h"

namespace moe::engine {
namespace {

using kernels::ScoringFunc;

TEST(GateEntropyTest, UniformRouterHasLogE) {
  const std::vector<float> logits = {3.7f, 3.7f, 3.7f, 3.7f};
  EXPECT_NEAR(GateEntropySumNats(logits.data(), 1, 4, ScoringFunc::kSoftmax), std::log(4.0), 1e-12);
}

TEST(GateEntropyTest, KnownTwoExpertDistributions) {
  // softmax([0, ln 3]) = [1/4, 3/4]: H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623351446...
  const std::vector<float> softmax_logits = {0.0f, static_cast<float>(std::log(3.0))};
  EXPECT_NEAR(GateEntropySumNats(softmax_logits.data(), 1, 2, ScoringFunc::kSoftmax),
              0.5623351446188083, 1e-7);
  // sigmoid([ln 3, 0]) = [3/4, 1/2], scaled to [0.6, 0.4]: H = 0.6730116670...
  const std::vector<float> sigmoid_logits = {static_cast<float>(std::log(3.0)), 0.0f};
  EXPECT_NEAR(GateEntropySumNats(sigmoid_logits.data(), 1, 2, ScoringFunc::kSigmoid),
              0.6730116670092565, 1e-7);
}

TEST(GateEntropyTest, CertainRouterIsNearZeroAndRowsAdd) {
  // Row 0: one expert dominates (H ~ 1e-41); row 1: uniform over 3 (ln 3).
  const std::vector<float> logits = {100.0f, 0.0f, 0.0f, -2.0f, -2.0f, -2.0f};
  EXPECT_NEAR(GateEntropySumNats(logits.data(), 1, 3, ScoringFunc::kSoftmax), 0.0, 1e-30);
  EXPECT_NEAR(GateEntropySumNats(logits.data(), 2, 3, ScoringFunc::kSoftmax), std::log(3.0), 1e-12);
}

TEST(GateEntropyTest, MatchesTheDefinitionOnRandomLogits) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  constexpr int64_t kRows = 37;
  constexpr int64_t kExperts = 64;
  const std::vector<float> logits = testing::RandomFloats(rng, kRows * kExperts, 3.0f);
  for (ScoringFunc scoring : {ScoringFunc::kSoftmax, ScoringFunc::kSigmoid}) {
    double expected = 0.0;
    for (int64_t r = 0; r < kRows; ++r) {
      std::vector<double> p(kExperts);
      double total = 0.0;
      for (int64_t e = 0; e < kExperts; ++e) {
        const double z = logits[r * kExperts + e];
        p[e] = scoring == ScoringFunc::kSoftmax ? std::exp(z) : 1.0 / (1.0 + std::exp(-z));
        total += p[e];
      }
      for (double v : p) expected -= v / total * std::log(v / total);
    }
    const double got = GateEntropySumNats(logits.data(), kRows, kExperts, scoring);
    EXPECT_LT(std::abs(got - expected) / expected, 1e-9)
        << "relative error, tolerance 1e-9; got " << got << ", expected " << expected;
    EXPECT_GT(got, 0.0);
    EXPECT_LE(got, kRows * std::log(static_cast<double>(kExperts)) + 1e-9);
  }
}

TEST(GateEntropyTest, NothingToMeasureIsZero) {
  EXPECT_EQ(GateEntropySumNats(nullptr, 4, 8, ScoringFunc::kSoftmax), 0.0);
  const std::vector<float> logits = {1.0f, 2.0f};
  EXPECT_EQ(GateEntropySumNats(logits.data(), 0, 2, ScoringFunc::kSoftmax), 0.0);
}

}  // namespace
}  // namespace moe::engine
