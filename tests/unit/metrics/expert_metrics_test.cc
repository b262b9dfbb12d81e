// A model's expert and layer series as a scrape shows them: counters equal to what was
// recorded, window gauges from the recent counts, measured time only for sampled passes, and a
// series count that docs/METRICS.md quotes.
#include "server/metrics/expert_metrics.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "tests/testing/exposition_text.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::metrics {
namespace {

using ::moe::testing::CountSamples;
using ::moe::testing::ExpositionSample;
using ::moe::testing::FindSample;

std::vector<ExpositionSample> Scrape(const ExpertMetrics& metrics, absl::Time now) {
  ExpertFamilies families;
  metrics.Collect(now, &families);
  return testing::ParseExposition(prometheus::TextSerializer().Serialize(families.TakeNonEmpty()));
}

std::map<std::string, std::string> At(int64_t layer, int64_t expert) {
  return {{"model", "m"}, {"layer", std::to_string(layer)}, {"expert", std::to_string(expert)}};
}

std::map<std::string, std::string> At(int64_t layer) {
  return {{"model", "m"}, {"layer", std::to_string(layer)}};
}

TEST(ExpertMetricsTest, CountersAndWindowGaugesFollowTheRecordedRouting) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  constexpr int64_t kLayers = 3;
  constexpr int64_t kExperts = 5;
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ExpertMetrics> metrics,
                           ExpertMetrics::Create("m", kLayers, kExperts, {}));
  const absl::Time now = absl::Now();
  std::vector<int64_t> total(kLayers * kExperts, 0);
  std::uniform_int_distribution<int64_t> tokens(0, 40);
  double entropy_total[kLayers] = {};
  int64_t rows_total = 0;
  for (int batch = 0; batch < 7; ++batch) {
    std::vector<int64_t> counts(kLayers * kExperts);
    for (int64_t& c : counts) c = tokens(rng);
    counts[2] = 0;  // layer 0, expert 2 never gets a token
    const std::vector<double> layer_seconds = {0.001, 0.002, 0.003};
    const std::vector<double> entropy = {0.5 * (batch + 1), 1.0, 0.25};
    const int64_t rows = batch + 1;
    BatchObservation observation;
    observation.rows = rows;
    observation.expert_tokens = counts;
    observation.layer_seconds = layer_seconds;
    observation.entropy_sum = entropy;
    metrics->Record(observation, now);
    for (size_t i = 0; i < counts.size(); ++i) total[i] += counts[i];
    for (int64_t l = 0; l < kLayers; ++l) entropy_total[l] += entropy[l];
    rows_total += rows;
  }
  const std::vector<ExpositionSample> samples = Scrape(*metrics, now);
  for (int64_t l = 0; l < kLayers; ++l) {
    int64_t layer_total = 0;
    int64_t largest = 0;
    int64_t idle = 0;
    for (int64_t e = 0; e < kExperts; ++e) {
      const int64_t t = total[l * kExperts + e];
      EXPECT_EQ(FindSample(samples, "moe_expert_tokens_total", At(l, e)), t)
          << "layer " << l << " expert " << e;
      layer_total += t;
      largest = std::max(largest, t);
      idle += t == 0 ? 1 : 0;
    }
    for (int64_t e = 0; e < kExperts; ++e) {
      EXPECT_THAT(FindSample(samples, "moe_expert_load_share", At(l, e)),
                  ::testing::Optional(::testing::DoubleNear(
                      static_cast<double>(total[l * kExperts + e]) / layer_total, 1e-12)));
    }
    EXPECT_EQ(FindSample(samples, "moe_layer_tokens_total", At(l)), layer_total);
    EXPECT_THAT(FindSample(samples, "moe_layer_load_imbalance", At(l)),
                ::testing::Optional(::testing::DoubleNear(
                    static_cast<double>(largest) * kExperts / layer_total, 1e-12)));
    EXPECT_EQ(FindSample(samples, "moe_layer_idle_experts", At(l)), idle);
    EXPECT_THAT(FindSample(samples, "moe_layer_routing_entropy_nats", At(l)),
                ::testing::Optional(::testing::DoubleNear(entropy_total[l] / rows_total, 1e-12)));
    EXPECT_EQ(FindSample(samples, "moe_layer_duration_seconds_count", At(l)), 7);
  }
  EXPECT_GE(FindSample(samples, "moe_layer_idle_experts", At(0)).value_or(0), 1);
  // No pass was sampled: no expert time.
  for (int64_t e = 0; e < kExperts; ++e) {
    EXPECT_EQ(FindSample(samples, "moe_expert_compute_seconds_total", At(1, e)), 0.0);
    EXPECT_EQ(FindSample(samples, "moe_expert_compute_samples_total", At(1, e)), 0.0);
  }
}

TEST(ExpertMetricsTest, MeasuredTimeCountsOnlyExpertsThatRan) {
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ExpertMetrics> metrics,
                           ExpertMetrics::Create("m", 1, 3, {}));
  const std::vector<int64_t> counts = {4, 0, 2};
  const std::vector<double> seconds = {0.25, 0.0, 0.5};
  BatchObservation observation;
  observation.rows = 3;
  observation.expert_tokens = counts;
  observation.expert_seconds = seconds;
  metrics->Record(observation, absl::Now());
  metrics->Record(observation, absl::Now());
  observation.expert_seconds = {};  // an unsampled pass adds tokens, not time
  metrics->Record(observation, absl::Now());
  const std::vector<ExpositionSample> samples = Scrape(*metrics, absl::Now());
  EXPECT_EQ(FindSample(samples, "moe_expert_compute_seconds_total", At(0, 0)), 0.5);
  EXPECT_EQ(FindSample(samples, "moe_expert_compute_samples_total", At(0, 0)), 2);
  EXPECT_EQ(FindSample(samples, "moe_expert_compute_samples_total", At(0, 1)), 0);
  EXPECT_EQ(FindSample(samples, "moe_expert_compute_seconds_total", At(0, 2)), 1.0);
  EXPECT_EQ(FindSample(samples, "moe_expert_tokens_total", At(0, 0)), 12);
}

TEST(ExpertMetricsTest, EmptyWindowLeavesTheGaugesOut) {
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ExpertMetrics> metrics,
                           ExpertMetrics::Create("m", 2, 4, {}));
  const std::vector<int64_t> counts = {1, 1, 1, 1, 2, 0, 0, 2};
  BatchObservation observation;
  observation.rows = 2;
  observation.expert_tokens = counts;
  const absl::Time then = absl::Now();
  metrics->Record(observation, then);
  // Two minutes later the 60 s window is empty: no idle-expert alarm from an idle server.
  const std::vector<ExpositionSample> later = Scrape(*metrics, then + absl::Minutes(2));
  EXPECT_EQ(CountSamples(later, "moe_layer_idle_experts"), 0);
  EXPECT_EQ(CountSamples(later, "moe_layer_load_imbalance"), 0);
  EXPECT_EQ(CountSamples(later, "moe_expert_load_share"), 0);
  // The counters stay.
  EXPECT_EQ(FindSample(later, "moe_expert_tokens_total", At(1, 0)), 2);
}

// The figures docs/METRICS.md gives for a 64-layer, 256-expert model.
TEST(ExpertMetricsTest, SeriesCountOfALargeModel) {
  constexpr int64_t kLayers = 64;
  constexpr int64_t kExperts = 256;
  std::vector<int64_t> counts(kLayers * kExperts, 1);
  std::vector<double> layer_seconds(kLayers, 1e-3);
  std::vector<double> entropy(kLayers, 1.0);
  BatchObservation observation;
  observation.rows = 8;
  observation.expert_tokens = counts;
  observation.layer_seconds = layer_seconds;
  observation.entropy_sum = entropy;

  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ExpertMetrics> per_expert,
                           ExpertMetrics::Create("m", kLayers, kExperts, {}));
  per_expert->Record(observation, absl::Now());
  const std::vector<ExpositionSample> full = Scrape(*per_expert, absl::Now());
  EXPECT_EQ(CountSamples(full, "moe_expert_", /*prefix=*/true), 4 * kLayers * kExperts);
  EXPECT_EQ(4 * kLayers * kExperts, 65536);
  EXPECT_EQ(CountSamples(full, "moe_layer_", /*prefix=*/true), 22 * kLayers);
  EXPECT_EQ(22 * kLayers, 1408);

  ExpertMetricsOptions options;
  options.series = ExpertSeries::kPerLayer;
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ExpertMetrics> per_layer,
                           ExpertMetrics::Create("m", kLayers, kExperts, options));
  per_layer->Record(observation, absl::Now());
  const std::vector<ExpositionSample> bounded = Scrape(*per_layer, absl::Now());
  EXPECT_EQ(CountSamples(bounded, "moe_expert_", /*prefix=*/true), 0);
  EXPECT_EQ(CountSamples(bounded, "moe_layer_", /*prefix=*/true), 22 * kLayers);
  EXPECT_EQ(FindSample(bounded, "moe_layer_load_imbalance", At(5)), 1.0)
      << "per_layer still computes the aggregates from every expert's count";
  EXPECT_EQ(FindSample(bounded, "moe_layer_tokens_total", At(5)), kExperts);
}

TEST(ExpertMetricsTest, RefusesEmptyShapes) {
  EXPECT_THAT(ExpertMetrics::Create("m", 0, 8, {}).status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace moe::metrics
