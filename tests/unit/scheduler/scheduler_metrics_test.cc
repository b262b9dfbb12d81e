// The scheduler feeds the metrics what really happened: per-expert token counters equal to the
// routing the requests got back, one batch and its timings per forward pass, queue and running
// gauges back at zero when idle, measured expert time on sampled passes.
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "server/engine/moe_backend.h"
#include "server/engine/moe_mlp_model.h"
#include "server/metrics/server_metrics.h"
#include "server/scheduler/batch_scheduler.h"
#include "tests/testing/exposition_text.h"
#include "tests/testing/moe_mlp_random.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::scheduler {
namespace {

using ::moe::testing::FindSample;

struct Outcome {
  absl::Notification done;
  absl::Status status;
  InferenceResult result;
};

class SchedulerMetricsTest : public ::testing::TestWithParam<double> {
 protected:
  void SetUp() override {
    seed_ = testing::FreshSeed();
    rng_.seed(seed_);
    config_ = testing::SmallMoEMLPConfig(kernels::Activation::kSwiGLU);
    checkpoint_ = testing::InMemoryCheckpoint(testing::RandomMoEMLPTensors(config_, rng_));
    ASSERT_NE(checkpoint_, nullptr);
    backend_ = engine::CreateCpuBackend();
    MOE_ASSERT_OK_AND_ASSIGN(model::MoEMLPWeights weights,
                             model::LoadMoEMLPWeights(*checkpoint_, config_));
    MOE_ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<engine::MoEMLPModel> model,
        engine::MoEMLPModel::Create("m", config_, std::move(weights), *backend_));
    metrics::ModelMetricsOptions options;
    options.expert_timing_sample_rate = GetParam();
    MOE_ASSERT_OK_AND_ASSIGN(metrics_, metrics::ServerMetrics::Create({"m"}, options));
    const engine::ModelDescription& d = model->description();
    metrics::LoadedModelInfo info;
    info.num_moe_layers = d.num_moe_layers;
    info.num_experts = d.num_experts;
    info.top_k = d.top_k;
    MOE_ASSERT_OK(metrics_->ForModel("m")->SetLoaded(info));
    MOE_ASSERT_OK_AND_ASSIGN(scheduler_,
                             BatchScheduler::Create(std::move(model), {}, metrics_->ForModel("m")));
  }

  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  model::MoEMLPConfig config_;
  std::unique_ptr<model::Checkpoint> checkpoint_;
  std::unique_ptr<engine::MoEBackend> backend_;
  std::unique_ptr<metrics::ServerMetrics> metrics_;
  std::unique_ptr<BatchScheduler> scheduler_;
};

TEST_P(SchedulerMetricsTest, ExpertCountersEqualTheRoutingReturned) {
  SCOPED_TRACE(::testing::Message()
               << "seed " << seed_ << " (MOE_TEST_SEED replays), sample rate " << GetParam());
  constexpr int kRequests = 40;
  const int64_t layers = config_.num_blocks;
  const int64_t experts = config_.num_experts;
  const int k = config_.top_k;
  std::vector<Outcome> outcomes(kRequests);
  std::uniform_int_distribution<int64_t> row_count(1, 6);
  int64_t total_rows = 0;
  for (Outcome& outcome : outcomes) {
    const int64_t rows = row_count(rng_);
    total_rows += rows;
    auto request = std::make_unique<InferenceRequest>(
        testing::RandomFloats(rng_, rows * config_.input_dim), rows, /*want_routing=*/true,
        absl::InfiniteFuture(), kDefaultPriorityLevel,
        [&outcome](absl::Status status, InferenceResult result) {
          outcome.status = std::move(status);
          outcome.result = std::move(result);
          outcome.done.Notify();
        });
    MOE_ASSERT_OK(scheduler_->Submit(std::move(request)).status());
  }
  std::vector<int64_t> routed(layers * experts, 0);
  for (Outcome& outcome : outcomes) {
    ASSERT_TRUE(outcome.done.WaitForNotificationWithTimeout(absl::Seconds(30)));
    MOE_ASSERT_OK(outcome.status);
    const std::vector<int32_t>& ids = outcome.result.topk_ids;
    ASSERT_EQ(ids.size() % (layers * k), 0u);
    for (size_t i = 0; i < ids.size(); ++i) {
      const int64_t layer = static_cast<int64_t>(i / k) % layers;
      ++routed[layer * experts + ids[i]];
    }
  }
  scheduler_->FinishDrain(absl::Seconds(10));  // the last batch's report is in

  const auto samples = testing::ParseExposition(metrics_->SerializeText());
  const SchedulerStats stats = scheduler_->stats();
  auto at = [](int64_t layer, int64_t expert) {
    return std::map<std::string, std::string>{
        {"model", "m"}, {"layer", std::to_string(layer)}, {"expert", std::to_string(expert)}};
  };
  int64_t sampled_runs = 0;
  for (int64_t layer = 0; layer < layers; ++layer) {
    for (int64_t e = 0; e < experts; ++e) {
      EXPECT_EQ(FindSample(samples, "moe_expert_tokens_total", at(layer, e)),
                routed[layer * experts + e])
          << "layer " << layer << " expert " << e;
      const double seconds =
          FindSample(samples, "moe_expert_compute_seconds_total", at(layer, e)).value_or(-1);
      const double runs =
          FindSample(samples, "moe_expert_compute_samples_total", at(layer, e)).value_or(-1);
      EXPECT_GE(seconds, 0.0);
      EXPECT_LE(runs, stats.batches);
      EXPECT_EQ(seconds > 0.0, runs > 0) << "time is measured exactly when the expert ran";
      if (GetParam() == 0.0) {
        EXPECT_EQ(runs, 0);
      }
      sampled_runs += static_cast<int64_t>(runs);
    }
    EXPECT_EQ(FindSample(samples, "moe_layer_tokens_total",
                         {{"model", "m"}, {"layer", std::to_string(layer)}}),
              total_rows * k);
    EXPECT_EQ(FindSample(samples, "moe_layer_duration_seconds_count",
                         {{"model", "m"}, {"layer", std::to_string(layer)}}),
              stats.batches);
  }
  if (GetParam() == 1.0) {
    EXPECT_GE(sampled_runs, stats.batches * layers) << "every pass timed: at least one expert "
                                                       "per layer and pass";
  }
  const std::map<std::string, std::string> model = {{"model", "m"}};
  EXPECT_EQ(FindSample(samples, "moe_batches_total", model), stats.batches);
  EXPECT_EQ(FindSample(samples, "moe_batch_rows_sum", model), total_rows);
  EXPECT_EQ(FindSample(samples, "moe_request_rows_count", model), kRequests);
  EXPECT_EQ(FindSample(samples, "moe_request_rows_sum", model), total_rows);
  EXPECT_EQ(FindSample(samples, "moe_request_queue_duration_seconds_count", model), kRequests);
  EXPECT_EQ(FindSample(samples, "moe_request_compute_duration_seconds_count", model), kRequests);
  EXPECT_EQ(FindSample(samples, "moe_requests_queued", model), 0);
  EXPECT_EQ(FindSample(samples, "moe_requests_running", model), 0);
}

INSTANTIATE_TEST_SUITE_P(SampleRates, SchedulerMetricsTest, ::testing::Values(0.0, 0.5, 1.0),
                         [](const auto& info) {
                           return "rate_" + std::to_string(static_cast<int>(info.param * 100));
                         });

}  // namespace
}  // namespace moe::scheduler
