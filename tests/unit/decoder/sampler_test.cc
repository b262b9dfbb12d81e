// Token sampling: greedy, temperature, top-k, top-p, repetition penalty, log-probabilities,
// seeds, and the validation of the parameters a client sends.
#include "server/engine/decoder/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::engine {
namespace {

using ::moe::testing::StatusIs;
using ::testing::HasSubstr;

// Softmax of logits / temperature in double precision.
std::vector<double> Softmax(const std::vector<float>& logits, double temperature) {
  const double top = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i)
    sum += p[i] = std::exp((logits[i] - top) / temperature);
  for (double& v : p) v /= sum;
  return p;
}

// Token ids by descending logit (ties to the lower id).
std::vector<int32_t> Ranked(const std::vector<float>& logits) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  return ids;
}

class SamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = testing::FreshSeed();
    std::printf("seed %llu (MOE_TEST_SEED replays)\n", static_cast<unsigned long long>(seed_));
    rng_.seed(seed_);
  }
  std::vector<float> RandomLogits(size_t vocab, float scale = 2.0f) {
    return testing::RandomFloats(rng_, vocab, scale);
  }
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_F(SamplerTest, GreedyIsArgmaxWithTiesToTheLowerId) {
  for (int trial = 0; trial < 20; ++trial) {
    const std::vector<float> logits = RandomLogits(100);
    TokenSampler sampler(SamplingParams{});
    EXPECT_EQ(sampler.Sample(logits, {}, nullptr),
              std::max_element(logits.begin(), logits.end()) - logits.begin())
        << "seed " << seed_;
  }
  TokenSampler sampler(SamplingParams{});
  const std::vector<float> tied = {1.0f, 3.0f, -2.0f, 3.0f};
  EXPECT_EQ(sampler.Sample(tied, {}, nullptr), 1);
  const std::vector<float> with_nan = {1.0f, NAN, 0.5f};
  EXPECT_EQ(sampler.Sample(with_nan, {}, nullptr), 0);
}

TEST_F(SamplerTest, GreedyLogprobIsLogSoftmaxOfTheLogits) {
  const std::vector<float> logits = RandomLogits(50);
  TokenSampler sampler(SamplingParams{});
  float logprob = 1.0f;
  const int32_t token = sampler.Sample(logits, {}, &logprob);
  EXPECT_NEAR(logprob, std::log(Softmax(logits, 1.0)[token]), 1e-5) << "seed " << seed_;
}

TEST_F(SamplerTest, TopKOfOneIsGreedy) {
  for (int trial = 0; trial < 50; ++trial) {
    const std::vector<float> logits = RandomLogits(64);
    SamplingParams params;
    params.temperature = 1.5f;
    params.top_k = 1;
    params.seed = seed_ + trial;
    TokenSampler sampler(params);
    float logprob = 1.0f;
    EXPECT_EQ(sampler.Sample(logits, {}, &logprob), Ranked(logits)[0]) << "seed " << seed_;
    EXPECT_EQ(logprob, 0.0f);
  }
}

TEST_F(SamplerTest, TopKNeverPicksOutsideTheKMostLikely) {
  const std::vector<float> logits = RandomLogits(200, 1.0f);
  const std::vector<int32_t> ranked = Ranked(logits);
  const std::set<int32_t> allowed(ranked.begin(), ranked.begin() + 7);
  SamplingParams params;
  params.temperature = 3.0f;  // flat, so every allowed token shows up
  params.top_k = 7;
  params.seed = seed_;
  TokenSampler sampler(params);
  std::set<int32_t> seen;
  for (int draw = 0; draw < 5000; ++draw) {
    const int32_t token = sampler.Sample(logits, {}, nullptr);
    ASSERT_TRUE(allowed.count(token)) << "token " << token << " outside the top 7, seed " << seed_;
    seen.insert(token);
  }
  EXPECT_EQ(seen, allowed) << "seed " << seed_;
}

TEST_F(SamplerTest, TopPNeverPicksOutsideTheNucleus) {
  for (const size_t vocab : {size_t{40}, size_t{3000}}) {  // 3000 takes the partial-sort path
    const std::vector<float> logits = RandomLogits(vocab, 3.0f);
    const double temperature = 0.8;
    const float top_p = 0.6f;
    const std::vector<double> p = Softmax(logits, temperature);
    const std::vector<int32_t> ranked = Ranked(logits);
    std::set<int32_t> nucleus;
    double before = 0.0;
    for (const int32_t id : ranked) {
      if (before >= top_p) break;
      nucleus.insert(id);
      before += p[id];
    }
    SamplingParams params;
    params.temperature = static_cast<float>(temperature);
    params.top_p = top_p;
    params.seed = seed_;
    TokenSampler sampler(params);
    for (int draw = 0; draw < 3000; ++draw) {
      const int32_t token = sampler.Sample(logits, {}, nullptr);
      ASSERT_TRUE(nucleus.count(token))
          << "token " << token << " outside the nucleus of " << nucleus.size() << " (vocab "
          << vocab << "), seed " << seed_;
    }
  }
}

TEST_F(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const std::vector<float> logits = RandomLogits(500, 0.5f);
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_p = 0.95f;
  params.seed = seed_;
  auto draws = [&](uint64_t seed) {
    SamplingParams p = params;
    p.seed = seed;
    TokenSampler sampler(p);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 100; ++i) tokens.push_back(sampler.Sample(logits, {}, nullptr));
    return tokens;
  };
  EXPECT_EQ(draws(seed_), draws(seed_));
  // 100 draws over ~hundreds of plausible tokens: two seeds agreeing on all is impossible in
  // practice.
  EXPECT_NE(draws(seed_), draws(seed_ + 1));
}

TEST_F(SamplerTest, TemperatureSamplingFrequenciesMatchTheSoftmax) {
  const std::vector<float> logits = RandomLogits(8, 1.0f);
  const double temperature = 0.7;
  const std::vector<double> p = Softmax(logits, temperature);
  SamplingParams params;
  params.temperature = static_cast<float>(temperature);
  params.seed = seed_;
  TokenSampler sampler(params);
  constexpr int kDraws = 100000;
  std::vector<int> counts(logits.size(), 0);
  for (int draw = 0; draw < kDraws; ++draw) ++counts[sampler.Sample(logits, {}, nullptr)];
  for (size_t i = 0; i < logits.size(); ++i) {
    // Each count is binomial(N, p): 5 standard deviations (plus one count for p ~ 0) fails a
    // correct sampler with probability below 1e-6 per token.
    const double sigma = std::sqrt(kDraws * p[i] * (1.0 - p[i]));
    EXPECT_NEAR(counts[i], kDraws * p[i], 5.0 * sigma + 1.0)
        << "token " << i << " p " << p[i] << ", seed " << seed_;
  }
}

TEST_F(SamplerTest, ATinyTemperatureIsGreedyNotAnOverflow) {
  // 1e-39 is a valid temperature (finite, > 0): logit / temperature overflows float for any
  // logit above about 3.4e-1, so the sampler must not compute it that way.
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> logits = RandomLogits(64);
    if (trial % 2 == 1) {
      for (float& value : logits) value = -std::abs(value) - 0.5f;  // all negative
    }
    SamplingParams params;
    params.temperature = 1e-39f;
    params.seed = seed_ + trial;
    TokenSampler sampler(params);
    float logprob = 1.0f;
    EXPECT_EQ(sampler.Sample(logits, {}, &logprob), Ranked(logits)[0])
        << "seed " << seed_ << ", trial " << trial;
    EXPECT_EQ(logprob, 0.0f);
  }
}

TEST_F(SamplerTest, RepetitionPenaltyDividesPositiveMultipliesNegativeOncePerToken) {
  // Penalty 2 on tokens 0 (seen twice) and 1: {3, -1, 2} -> {1.5, -2, 2}, so greedy picks 2.
  const std::vector<float> logits = {3.0f, -1.0f, 2.0f};
  const std::vector<int32_t> history = {0, 0, 1, 99 /* outside the vocabulary: ignored */};
  SamplingParams params;
  params.repetition_penalty = 2.0f;
  TokenSampler sampler(params);
  float logprob = 0.0f;
  EXPECT_EQ(sampler.Sample(logits, history, &logprob), 2);
  const double expected = 2.0 - std::log(std::exp(1.5) + std::exp(-2.0) + std::exp(2.0));
  EXPECT_NEAR(logprob, expected, 1e-6);
  // Without the history the raw argmax wins.
  EXPECT_EQ(sampler.Sample(logits, {}, nullptr), 0);
}

TEST_F(SamplerTest, LogprobIsUnderTheDistributionSampledFrom) {
  const std::vector<float> logits = RandomLogits(30);
  SamplingParams params;
  params.temperature = 0.5f;
  params.top_k = 5;
  params.seed = seed_;
  TokenSampler sampler(params);
  const std::vector<int32_t> ranked = Ranked(logits);
  // The renormalised softmax over the top 5 of logits / 0.5.
  std::vector<float> top(5);
  for (int i = 0; i < 5; ++i) top[i] = logits[ranked[i]];
  const std::vector<double> p = Softmax(top, 0.5);
  for (int draw = 0; draw < 200; ++draw) {
    float logprob = 1.0f;
    const int32_t token = sampler.Sample(logits, {}, &logprob);
    const int rank =
        static_cast<int>(std::find(ranked.begin(), ranked.end(), token) - ranked.begin());
    ASSERT_LT(rank, 5);
    EXPECT_NEAR(logprob, std::log(p[rank]), 1e-5) << "seed " << seed_;
  }
}

TEST(SamplingParamsTest, DefaultsAndSensibleValuesAreValid) {
  MOE_EXPECT_OK(ValidateSamplingParams(SamplingParams{}, 100));
  SamplingParams params{
      .temperature = 0.7f, .top_k = 100, .top_p = 0.9f, .repetition_penalty = 1.1f, .seed = 42};
  MOE_EXPECT_OK(ValidateSamplingParams(params, 100));
}

TEST(SamplingParamsTest, RejectsBadValuesNamingTheField) {
  struct Case {
    SamplingParams params;
    const char* field;
  };
  const std::vector<Case> cases = {
      {{.temperature = NAN}, "temperature"},
      {{.temperature = -0.5f}, "temperature"},
      {{.temperature = INFINITY}, "temperature"},
      {{.top_k = -1}, "top_k"},
      {{.top_k = 101}, "top_k"},
      {{.top_p = 0.0f}, "top_p"},
      {{.top_p = 1.5f}, "top_p"},
      {{.top_p = NAN}, "top_p"},
      {{.repetition_penalty = 0.0f}, "repetition_penalty"},
      {{.repetition_penalty = -1.0f}, "repetition_penalty"},
      {{.repetition_penalty = NAN}, "repetition_penalty"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(ValidateSamplingParams(c.params, 100),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.field)))
        << c.field;
  }
}

}  // namespace
}  // namespace moe::engine
