// CPU routing: top-k selection over router scores (order, ties, NaN/Inf logits, bias,
// renormalisation, determinism, row independence), the expert capacity, and the permutation of
// assignments into expert order.
#include "moe/kernels/cpu_routing.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/kernels/moe_layer.h"
#include "tests/testing/random.h"

namespace moe::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int32_t kIdPoison = -7777;

std::string SeedTrace(uint64_t seed) { return "seed=" + std::to_string(seed); }

// Scores of one row in double precision: softmax over the row or sigmoid per expert.
std::vector<double> ReferenceScores(const float* logits, int64_t num_experts, ScoringFunc scoring) {
  std::vector<double> scores(num_experts);
  if (scoring == ScoringFunc::kSigmoid) {
    for (int64_t e = 0; e < num_experts; ++e) {
      scores[e] = 1.0 / (1.0 + std::exp(-static_cast<double>(logits[e])));
    }
    return scores;
  }
  double max_logit = -std::numeric_limits<double>::infinity();
  for (int64_t e = 0; e < num_experts; ++e) max_logit = std::max(max_logit, double{logits[e]});
  double sum = 0.0;
  for (int64_t e = 0; e < num_experts; ++e) {
    scores[e] = std::exp(static_cast<double>(logits[e]) - max_logit);
    sum += scores[e];
  }
  for (double& s : scores) s /= sum;
  return scores;
}

// All experts ordered by descending selection score, exact ties to the lower index, NaN last.
std::vector<int32_t> ReferenceOrder(const std::vector<double>& selection) {
  std::vector<int32_t> order(selection.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    const bool a_nan = std::isnan(selection[a]), b_nan = std::isnan(selection[b]);
    if (a_nan || b_nan) return !a_nan && b_nan;
    return selection[a] > selection[b];
  });
  return order;
}

// Smallest gap between neighbours among the first min(k + 1, E) sorted selection scores: when
// it is tiny, float and double arithmetic may legitimately order the experts differently.
double SelectionMargin(const std::vector<double>& selection, const std::vector<int32_t>& order,
                       int top_k) {
  double margin = std::numeric_limits<double>::infinity();
  const size_t last = std::min(order.size(), static_cast<size_t>(top_k) + 1);
  for (size_t j = 1; j < last; ++j) {
    margin = std::min(margin, selection[order[j - 1]] - selection[order[j]]);
  }
  return margin;
}

void ExpectValidIds(const int32_t* ids, int64_t num_tokens, int64_t num_experts, int top_k) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::set<int32_t> seen;
    for (int j = 0; j < top_k; ++j) {
      const int32_t id = ids[t * top_k + j];
      ASSERT_GE(id, 0) << "token " << t << " slot " << j;
      ASSERT_LT(id, num_experts) << "token " << t << " slot " << j;
      ASSERT_TRUE(seen.insert(id).second) << "token " << t << " repeats expert " << id;
    }
  }
}

struct RouteResult {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

RouteResult Route(const std::vector<float>& logits, const float* bias, int64_t num_tokens,
                  int64_t num_experts, const RouterConfig& router) {
  RouteResult result;
  result.ids.assign(num_tokens * router.top_k, kIdPoison);
  result.weights.assign(num_tokens * router.top_k, kNaN);
  RouteTopKCpu(logits.data(), bias, num_tokens, num_experts, router, result.ids.data(),
               result.weights.data());
  return result;
}

// Checks ids and weights of every row against the double-precision reference. Rows whose
// selection margin is below 1e-4 skip the id comparison (and the weights, which follow the ids).
void ExpectMatchesReference(const std::vector<float>& logits, const float* bias, int64_t num_tokens,
                            int64_t num_experts, const RouterConfig& router,
                            const RouteResult& result) {
  const int k = router.top_k;
  ExpectValidIds(result.ids.data(), num_tokens, num_experts, k);
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* row = logits.data() + t * num_experts;
    const std::vector<double> scores = ReferenceScores(row, num_experts, router.scoring);
    std::vector<double> selection = scores;
    if (bias != nullptr) {
      for (int64_t e = 0; e < num_experts; ++e) selection[e] += bias[e];
    }
    const std::vector<int32_t> order = ReferenceOrder(selection);
    if (SelectionMargin(selection, order, k) <= 1e-4) continue;
    double chosen_sum = 0.0;
    for (int j = 0; j < k; ++j) chosen_sum += scores[order[j]];
    for (int j = 0; j < k; ++j) {
      ASSERT_EQ(result.ids[t * k + j], order[j]) << "token " << t << " slot " << j;
      double expected = scores[order[j]];
      if (router.renormalize) expected /= chosen_sum;
      expected *= router.routed_scaling_factor;
      EXPECT_NEAR(result.weights[t * k + j], expected, 1e-5 * std::fabs(expected) + 1e-12)
          << "token " << t << " slot " << j << " (relative tolerance 1e-5)";
    }
  }
}

struct RandomRouting {
  int64_t num_tokens;
  int64_t num_experts;
  RouterConfig router;
  bool with_bias;
};

TEST(RouteTopKCpuTest, SelectsHighestScoresWithReferenceWeights) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 rng(seed);
  for (int c = 0; c < 60; ++c) {
    RandomRouting config;
    config.num_tokens = std::vector<int64_t>{1, 2, 7, 64, 300}[rng() % 5];
    config.num_experts = 1 + static_cast<int64_t>(rng() % 64);
    config.router.top_k = 1 + static_cast<int>(rng() % std::min<int64_t>(config.num_experts, 8));
    config.router.scoring = (rng() & 1u) ? ScoringFunc::kSigmoid : ScoringFunc::kSoftmax;
    config.router.renormalize = (rng() & 1u) != 0;
    config.router.routed_scaling_factor = (rng() & 1u) ? 1.0f : 2.5f;
    config.with_bias = (rng() % 3) == 0;
    SCOPED_TRACE(
        SeedTrace(seed) + " case=" + std::to_string(c) + " T=" + std::to_string(config.num_tokens) +
        " E=" + std::to_string(config.num_experts) + " k=" + std::to_string(config.router.top_k) +
        " sigmoid=" + std::to_string(config.router.scoring == ScoringFunc::kSigmoid) +
        " renormalize=" + std::to_string(config.router.renormalize) +
        " bias=" + std::to_string(config.with_bias));
    const std::vector<float> logits =
        moe::testing::RandomFloats(rng, config.num_tokens * config.num_experts, 2.0f);
    const std::vector<float> bias = moe::testing::RandomFloats(rng, config.num_experts, 0.1f);
    const float* bias_ptr = config.with_bias ? bias.data() : nullptr;
    const RouteResult result =
        Route(logits, bias_ptr, config.num_tokens, config.num_experts, config.router);
    ExpectMatchesReference(logits, bias_ptr, config.num_tokens, config.num_experts, config.router,
                           result);
  }
}

TEST(RouteTopKCpuTest, ExactTiesGoToLowerIndexInDescendingOrder) {
  for (ScoringFunc scoring : {ScoringFunc::kSoftmax, ScoringFunc::kSigmoid}) {
    SCOPED_TRACE(scoring == ScoringFunc::kSigmoid ? "sigmoid" : "softmax");
    RouterConfig router;
    router.scoring = scoring;
    router.top_k = 3;
    RouteResult result = Route({1, 3, 3, 2, 3}, nullptr, 1, 5, router);
    EXPECT_THAT(result.ids, ElementsAre(1, 2, 4));
    router.top_k = 4;
    result = Route({1, 3, 3, 2, 3}, nullptr, 1, 5, router);
    EXPECT_THAT(result.ids, ElementsAre(1, 2, 4, 3));
    router.top_k = 5;
    result = Route({0, 0, 0, 0, 0}, nullptr, 1, 5, router);
    EXPECT_THAT(result.ids, ElementsAre(0, 1, 2, 3, 4));
    EXPECT_EQ(result.weights[0], result.weights[4]);
  }
}

TEST(RouteTopKCpuTest, TiedIntegerLogitsFollowStableDescendingOrder) {
  const uint64_t seed = moe::testing::FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  std::mt19937_64 rng(seed);
  const int64_t num_tokens = 50, num_experts = 40;
  std::vector<float> logits(num_tokens * num_experts);
  for (float& l : logits) l = static_cast<float>(static_cast<int>(rng() % 5) - 2);
  for (ScoringFunc scoring : {ScoringFunc::kSoftmax, ScoringFunc::kSigmoid}) {
    for (int k : {1, 5, 8, 40}) {
      SCOPED_TRACE(std::string(scoring == ScoringFunc::kSigmoid ? "sigmoid" : "softmax") +
                   " k=" + std::to_string(k));
      RouterConfig router;
      router.scoring = scoring;
      router.top_k = k;
      const RouteResult result = Route(logits, nullptr, num_tokens, num_experts, router);
      for (int64_t t = 0; t < num_tokens; ++t) {
        std::vector<double> row(logits.begin() + t * num_experts,
                                logits.begin() + (t + 1) * num_experts);
        const std::vector<int32_t> order = ReferenceOrder(row);
        for (int j = 0; j < k; ++j) {
          ASSERT_EQ(result.ids[t * k + j], order[j]) << "token " << t << " slot " << j;
        }
      }
    }
  }
}

TEST(RouteTopKCpuTest, BiasSteersSelectionButWeightsStayUnbiased) {
  RouterConfig router;
  router.scoring = ScoringFunc::kSigmoid;
  router.top_k = 2;
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 3.0f};
  const std::vector<float> bias = {10.0f, 0.0f, 0.0f, -10.0f};
  const auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  RouteResult result = Route(logits, bias.data(), 1, 4, router);
  EXPECT_THAT(result.ids, ElementsAre(0, 2));
  EXPECT_NEAR(result.weights[0], sigmoid(0.0), 1e-6);
  EXPECT_NEAR(result.weights[1], sigmoid(2.0), 1e-6);

  router.renormalize = true;
  router.routed_scaling_factor = 2.5f;
  result = Route(logits, bias.data(), 1, 4, router);
  EXPECT_THAT(result.ids, ElementsAre(0, 2));
  const double sum = sigmoid(0.0) + sigmoid(2.0);
  EXPECT_NEAR(result.weights[0], 2.5 * sigmoid(0.0) / sum, 1e-6);
  EXPECT_NEAR(result.weights[1], 2.5 * sigmoid(2.0) / sum, 1e-6);

  // Softmax scoring takes the bias for selection too; weights are the unbiased probabilities.
  router = RouterConfig{};
  router.top_k = 1;
  const std::vector<float> softmax_bias = {0.0f, 0.0f, 0.0f, 1.0f};
  result = Route({0.0f, 0.0f, 0.1f, 0.0f}, softmax_bias.data(), 1, 4, router);
  EXPECT_THAT(result.ids, ElementsAre(3));
  const double denominator = 3.0 + std::exp(0.1);
  EXPECT_NEAR(result.weights[0], 1.0 / denominator, 1e-6);
}

TEST(RouteTopKCpuTest, RenormalisedWeightsSumToScalingFactor) {
  const uint64_t seed = moe::testing::FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  std::mt19937_64 rng(seed);
  const int64_t num_tokens = 33, num_experts = 24;
  const std::vector<float> logits = moe::testing::RandomFloats(rng, num_tokens * num_experts);
  for (ScoringFunc scoring : {ScoringFunc::kSoftmax, ScoringFunc::kSigmoid}) {
    for (float factor : {1.0f, 2.5f}) {
      RouterConfig router;
      router.scoring = scoring;
      router.top_k = 6;
      router.renormalize = true;
      router.routed_scaling_factor = factor;
      const RouteResult result = Route(logits, nullptr, num_tokens, num_experts, router);
      for (int64_t t = 0; t < num_tokens; ++t) {
        double sum = 0.0;
        for (int j = 0; j < router.top_k; ++j) sum += result.weights[t * router.top_k + j];
        EXPECT_NEAR(sum, factor, 1e-5 * factor) << "token " << t << " factor " << factor;
      }
    }
  }
}

TEST(RouteTopKCpuTest, AllNaNRowsStillYieldDistinctIdsInRange) {
  const int64_t num_experts = 16;
  for (ScoringFunc scoring : {ScoringFunc::kSoftmax, ScoringFunc::kSigmoid}) {
    for (int k : {1, 4, 8, 16}) {
      SCOPED_TRACE(std::string(scoring == ScoringFunc::kSigmoid ? "sigmoid" : "softmax") +
                   " k=" + std::to_string(k));
      RouterConfig router;
      router.scoring = scoring;
      router.top_k = k;
      router.renormalize = (k % 2) == 0;
      const std::vector<float> logits(3 * num_experts, kNaN);
      const RouteResult result = Route(logits, nullptr, 3, num_experts, router);
      ExpectValidIds(result.ids.data(), 3, num_experts, k);
    }
  }
}

TEST(RouteTopKCpuTest, SigmoidRanksInfinitiesAndNaNsAsDocumented) {
  // Per-expert sigmoid makes each score well defined: +inf -> 1, -inf -> 0, NaN below all.
  const uint64_t seed = moe::testing::FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> finite(-3.0f, 3.0f);
  const int64_t num_tokens = 40, num_experts = 12;
  std::vector<float> logits(num_tokens * num_experts);
  for (float& l : logits) {
    switch (rng() % 6) {
      case 0:
        l = kNaN;
        break;
      case 1:
        l = kInf;
        break;
      case 2:
        l = -kInf;
        break;
      default:
        l = finite(rng);
    }
  }
  for (int k : {1, 3, 6, 12}) {
    SCOPED_TRACE("k=" + std::to_string(k));
    RouterConfig router;
    router.scoring = ScoringFunc::kSigmoid;
    router.top_k = k;
    const RouteResult result = Route(logits, nullptr, num_tokens, num_experts, router);
    ExpectValidIds(result.ids.data(), num_tokens, num_experts, k);
    for (int64_t t = 0; t < num_tokens; ++t) {
      const float* row = logits.data() + t * num_experts;
      const std::vector<double> scores = ReferenceScores(row, num_experts, ScoringFunc::kSigmoid);
      const std::vector<int32_t> order = ReferenceOrder(scores);
      for (int j = 0; j < k; ++j) {
        const int32_t id = result.ids[t * k + j];
        if (std::isnan(scores[order[j]])) {
          EXPECT_TRUE(std::isnan(row[id]))
              << "token " << t << " slot " << j << ": a NaN expert's place went to a number";
        } else {
          EXPECT_EQ(id, order[j]) << "token " << t << " slot " << j;
        }
      }
    }
  }
}

TEST(RouteTopKCpuTest, SoftmaxGivesMinusInfinityLogitsZeroWeightAndLastPlace) {
  RouterConfig router;
  router.top_k = 4;
  // Experts 1 and 3 are -inf: zero probability, ranked after the finite ones, lower index first.
  const RouteResult result = Route({0.5f, -kInf, 1.5f, -kInf, -0.5f}, nullptr, 1, 5, router);
  EXPECT_THAT(result.ids, ElementsAre(2, 0, 4, 1));
  const double denominator = std::exp(0.5) + std::exp(1.5) + std::exp(-0.5);
  EXPECT_NEAR(result.weights[0], std::exp(1.5) / denominator, 1e-6);
  EXPECT_NEAR(result.weights[1], std::exp(0.5) / denominator, 1e-6);
  EXPECT_NEAR(result.weights[2], std::exp(-0.5) / denominator, 1e-6);
  EXPECT_EQ(result.weights[3], 0.0f);
}

TEST(RouteTopKCpuTest, MixedNonFiniteLogitsYieldDistinctIdsInRange) {
  const uint64_t seed = moe::testing::FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  std::mt19937_64 rng(seed);
  for (int c = 0; c < 40; ++c) {
    const int64_t num_tokens = 1 + static_cast<int64_t>(rng() % 20);
    const int64_t num_experts = 1 + static_cast<int64_t>(rng() % 64);
    RouterConfig router;
    router.top_k = 1 + static_cast<int>(rng() % num_experts);
    router.scoring = (rng() & 1u) ? ScoringFunc::kSigmoid : ScoringFunc::kSoftmax;
    router.renormalize = (rng() & 1u) != 0;
    SCOPED_TRACE("case=" + std::to_string(c) + " T=" + std::to_string(num_tokens) +
                 " E=" + std::to_string(num_experts) + " k=" + std::to_string(router.top_k));
    std::vector<float> logits = moe::testing::RandomFloats(rng, num_tokens * num_experts);
    for (float& l : logits) {
      switch (rng() % 5) {
        case 0:
          l = kNaN;
          break;
        case 1:
          l = kInf;
          break;
        case 2:
          l = -kInf;
          break;
        case 3:
          l = std::numeric_limits<float>::max();
          break;
        default:
          break;
      }
    }
    std::vector<float> bias = moe::testing::RandomFloats(rng, num_experts);
    const float* bias_ptr = (rng() & 1u) ? bias.data() : nullptr;
    const RouteResult result = Route(logits, bias_ptr, num_tokens, num_experts, router);
    ExpectValidIds(result.ids.data(), num_tokens, num_experts, router.top_k);
  }
}

TEST(RouteTopKCpuTest, RepeatedRunsAreBitIdentical) {
  const uint64_t seed = moe::testing::FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  std::mt19937_64 rng(seed);
  const int64_t num_tokens = 300, num_experts = 64;
  std::vector<float> logits = moe::testing::RandomFloats(rng, num_tokens * num_experts);
  for (size_t i = 0; i < logits.size(); i += 97) logits[i] = logits[i + 1];  // some exact ties
  for (ScoringFunc scoring : {ScoringFunc::kSoftmax, ScoringFunc::kSigmoid}) {
    RouterConfig router;
    router.scoring = scoring;
    router.top_k = 8;
    router.renormalize = true;
    const RouteResult first = Route(logits, nullptr, num_tokens, num_experts, router);
    for (int run = 1; run < 20; ++run) {
      const RouteResult again = Route(logits, nullptr, num_tokens, num_experts, router);
      ASSERT_EQ(0,
                std::memcmp(first.ids.data(), again.ids.data(), first.ids.size() * sizeof(int32_t)))
          << "run " << run;
      ASSERT_EQ(0, std::memcmp(first.weights.data(), again.weights.data(),
                               first.weights.size() * sizeof(float)))
          << "run " << run;
    }
  }
}

TEST(RouteTopKCpuTest, RowResultDoesNotDependOnOtherRows) {
  const uint64_t seed = moe::testing::FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  std::mt19937_64 rng(seed);
  const int64_t num_experts = 37;
  for (ScoringFunc scoring : {ScoringFunc::kSoftmax, ScoringFunc::kSigmoid}) {
    RouterConfig router;
    router.scoring = scoring;
    router.top_k = 5;
    router.renormalize = true;
    const std::vector<float> token = moe::testing::RandomFloats(rng, num_experts);
    const std::vector<float> bias = moe::testing::RandomFloats(rng, num_experts, 0.1f);
    const RouteResult alone = Route(token, bias.data(), 1, num_experts, router);
    for (int64_t batch : {2, 7, 129}) {
      std::vector<float> logits = moe::testing::RandomFloats(rng, batch * num_experts, 3.0f);
      const int64_t position = static_cast<int64_t>(rng() % batch);
      std::copy(token.begin(), token.end(), logits.begin() + position * num_experts);
      const RouteResult batched = Route(logits, bias.data(), batch, num_experts, router);
      for (int j = 0; j < router.top_k; ++j) {
        EXPECT_EQ(batched.ids[position * router.top_k + j], alone.ids[j])
            << "batch " << batch << " position " << position << " slot " << j;
        EXPECT_EQ(batched.weights[position * router.top_k + j], alone.weights[j])
            << "batch " << batch << " position " << position << " slot " << j;
      }
    }
  }
}

TEST(RouteTopKCpuTest, ZeroTokensWritesNothing) {
  RouterConfig router;
  router.top_k = 2;
  std::vector<int32_t> ids(4, kIdPoison);
  std::vector<float> weights(4, -3.0f);
  const float logits[4] = {1, 2, 3, 4};
  RouteTopKCpu(logits, nullptr, 0, 4, router, ids.data(), weights.data());
  EXPECT_THAT(ids, ElementsAre(kIdPoison, kIdPoison, kIdPoison, kIdPoison));
  EXPECT_THAT(weights, ElementsAre(-3.0f, -3.0f, -3.0f, -3.0f));
}

TEST(ExpertCapacityTest, IsCeilOfFactorTimesAssignmentsPerExpert) {
  RouterConfig router;
  router.top_k = 2;
  EXPECT_EQ(ExpertCapacity(router, 100, 8), std::numeric_limits<int64_t>::max());
  router.capacity_factor = -1.0;
  EXPECT_EQ(ExpertCapacity(router, 100, 8), std::numeric_limits<int64_t>::max());
  router.capacity_factor = 1.0;
  EXPECT_EQ(ExpertCapacity(router, 64, 8), 16);  // exact: 1 * 64 * 2 / 8
  router.capacity_factor = 1.25;
  EXPECT_EQ(ExpertCapacity(router, 7, 16), 2);  // ceil(1.09375)
  router.capacity_factor = 0.5;
  EXPECT_EQ(ExpertCapacity(router, 300, 64), 5);  // ceil(4.6875)
  router.top_k = 1;
  EXPECT_EQ(ExpertCapacity(router, 1, 16), 1);  // ceil(1 / 32)
}

// Expected permutation from the definition: walk assignments in order, an expert keeps the
// first `capacity` of its assignments, the rest are dropped.
struct ExpectedPermutation {
  std::vector<int64_t> offsets;
  std::vector<int64_t> permuted_to_assignment;
  std::vector<int64_t> assignment_to_permuted;
  int64_t dropped = 0;
};

ExpectedPermutation ReferencePermutation(const std::vector<int32_t>& ids, int64_t num_experts,
                                         int64_t capacity) {
  ExpectedPermutation expected;
  std::vector<std::vector<int64_t>> per_expert(num_experts);
  expected.assignment_to_permuted.assign(ids.size(), -1);
  for (size_t a = 0; a < ids.size(); ++a) {
    if (static_cast<int64_t>(per_expert[ids[a]].size()) < capacity) {
      per_expert[ids[a]].push_back(static_cast<int64_t>(a));
    } else {
      ++expected.dropped;
    }
  }
  expected.offsets.push_back(0);
  for (int64_t e = 0; e < num_experts; ++e) {
    for (int64_t a : per_expert[e]) {
      expected.assignment_to_permuted[a] =
          static_cast<int64_t>(expected.permuted_to_assignment.size());
      expected.permuted_to_assignment.push_back(a);
    }
    expected.offsets.push_back(static_cast<int64_t>(expected.permuted_to_assignment.size()));
  }
  return expected;
}

struct PermutationBuffers {
  explicit PermutationBuffers(int64_t num_assignments, int64_t num_experts)
      : offsets(num_experts + 1, -12345),
        permuted_to_assignment(num_assignments, -12345),
        assignment_to_permuted(num_assignments, -12345) {}
  ExpertPermutation View() {
    return {offsets.data(), permuted_to_assignment.data(), assignment_to_permuted.data()};
  }
  std::vector<int64_t> offsets, permuted_to_assignment, assignment_to_permuted;
};

void ExpectPermutation(const PermutationBuffers& actual, const ExpectedPermutation& expected,
                       int64_t dropped) {
  EXPECT_EQ(dropped, expected.dropped);
  EXPECT_THAT(actual.offsets, ElementsAreArray(expected.offsets));
  const std::vector<int64_t> kept(
      actual.permuted_to_assignment.begin(),
      actual.permuted_to_assignment.begin() + expected.permuted_to_assignment.size());
  EXPECT_THAT(kept, ElementsAreArray(expected.permuted_to_assignment));
  EXPECT_THAT(actual.assignment_to_permuted, ElementsAreArray(expected.assignment_to_permuted));
}

TEST(BuildExpertPermutationCpuTest, HandWorkedExample) {
  // T=3, k=2, E=3: assignments a0..a5 go to experts 2,0 | 0,1 | 2,1.
  const std::vector<int32_t> ids = {2, 0, 0, 1, 2, 1};
  PermutationBuffers buffers(6, 3);
  int64_t dropped = BuildExpertPermutationCpu(ids.data(), 3, 2, 3,
                                              std::numeric_limits<int64_t>::max(), buffers.View());
  EXPECT_EQ(dropped, 0);
  EXPECT_THAT(buffers.offsets, ElementsAre(0, 2, 4, 6));
  EXPECT_THAT(buffers.permuted_to_assignment, ElementsAre(1, 2, 3, 5, 0, 4));
  EXPECT_THAT(buffers.assignment_to_permuted, ElementsAre(4, 0, 1, 2, 5, 3));

  PermutationBuffers capped(6, 3);
  dropped = BuildExpertPermutationCpu(ids.data(), 3, 2, 3, 1, capped.View());
  EXPECT_EQ(dropped, 3);
  EXPECT_THAT(capped.offsets, ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(std::vector<int64_t>(capped.permuted_to_assignment.begin(),
                                   capped.permuted_to_assignment.begin() + 3),
              ElementsAre(1, 3, 0));
  EXPECT_THAT(capped.assignment_to_permuted, ElementsAre(2, 0, -1, 1, -1, -1));
}

std::vector<int32_t> RandomDistinctIds(std::mt19937_64& rng, int64_t num_tokens, int top_k,
                                       int64_t num_experts, int64_t popular_experts) {
  // Draw each token's experts from the first `popular_experts` so that some experts get none.
  std::vector<int32_t> ids;
  std::vector<int32_t> pool(popular_experts);
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng);
    ids.insert(ids.end(), pool.begin(), pool.begin() + top_k);
  }
  return ids;
}

TEST(BuildExpertPermutationCpuTest, StableOffsetsInverseAndCapacityDropsOnRandomIds) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 rng(seed);
  for (int c = 0; c < 40; ++c) {
    const int64_t num_tokens = std::vector<int64_t>{1, 2, 7, 64, 300, 1000}[rng() % 6];
    const int64_t num_experts = 1 + static_cast<int64_t>(rng() % 64);
    const int top_k = 1 + static_cast<int>(rng() % std::min<int64_t>(num_experts, 8));
    const int64_t popular =
        top_k + static_cast<int64_t>(rng() % (num_experts - top_k + 1));  // in [k, E]
    const int64_t capacity = (rng() % 3 == 0) ? std::numeric_limits<int64_t>::max()
                                              : static_cast<int64_t>(rng() % (num_tokens + 1));
    SCOPED_TRACE(SeedTrace(seed) + " case=" + std::to_string(c) +
                 " T=" + std::to_string(num_tokens) + " E=" + std::to_string(num_experts) +
                 " k=" + std::to_string(top_k) + " capacity=" + std::to_string(capacity));
    const std::vector<int32_t> ids =
        RandomDistinctIds(rng, num_tokens, top_k, num_experts, popular);
    PermutationBuffers buffers(num_tokens * top_k, num_experts);
    const int64_t dropped = BuildExpertPermutationCpu(ids.data(), num_tokens, top_k, num_experts,
                                                      capacity, buffers.View());
    ExpectPermutation(buffers, ReferencePermutation(ids, num_experts, capacity), dropped);
    // The inverse mapping agrees with the forward one and with the experts' ranges.
    for (int64_t a = 0; a < num_tokens * top_k; ++a) {
      const int64_t p = buffers.assignment_to_permuted[a];
      if (p < 0) continue;
      ASSERT_EQ(buffers.permuted_to_assignment[p], a);
      ASSERT_GE(p, buffers.offsets[ids[a]]);
      ASSERT_LT(p, buffers.offsets[ids[a] + 1]);
    }
  }
}

TEST(BuildExpertPermutationCpuTest, ZeroTokensGivesZeroOffsets) {
  PermutationBuffers buffers(0, 5);
  const int64_t dropped = BuildExpertPermutationCpu(nullptr, 0, 2, 5, 3, buffers.View());
  EXPECT_EQ(dropped, 0);
  EXPECT_THAT(buffers.offsets, ElementsAre(0, 0, 0, 0, 0, 0));
}

TEST(BuildExpertPermutationCpuTest, ZeroCapacityDropsEverything) {
  const std::vector<int32_t> ids = {0, 1, 1, 0};
  PermutationBuffers buffers(4, 2);
  const int64_t dropped = BuildExpertPermutationCpu(ids.data(), 2, 2, 2, 0, buffers.View());
  EXPECT_EQ(dropped, 4);
  EXPECT_THAT(buffers.offsets, ElementsAre(0, 0, 0));
  EXPECT_THAT(buffers.assignment_to_permuted, ElementsAre(-1, -1, -1, -1));
}

}  // namespace
}  // namespace moe::kernels
