// The registry side of the metrics: outcomes by status code, request and batch series per
// model, the "(unknown)" model, what loading sets, the timing sample, device memory.
#include "server/metrics/server_metrics.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics/request_outcome.h"
#include "tests/testing/exposition_text.h"
#include "tests/testing/status_matchers.h"

namespace moe::metrics {
namespace {

using ::moe::testing::CountSamples;
using ::moe::testing::ExpositionSample;
using ::moe::testing::FindSample;
using ::moe::testing::StatusIs;

std::vector<ExpositionSample> Scrape(const ServerMetrics& metrics) {
  return testing::ParseExposition(metrics.SerializeText());
}

TEST(RequestOutcomeTest, EveryStatusCodeHasAnOutcome) {
  EXPECT_EQ(OutcomeOf(absl::StatusCode::kOk), RequestOutcome::kSuccess);
  for (auto code : {absl::StatusCode::kInvalidArgument, absl::StatusCode::kNotFound,
                    absl::StatusCode::kFailedPrecondition, absl::StatusCode::kOutOfRange,
                    absl::StatusCode::kUnimplemented}) {
    EXPECT_EQ(OutcomeOf(code), RequestOutcome::kInvalid) << absl::StatusCodeToString(code);
  }
  EXPECT_EQ(OutcomeOf(absl::StatusCode::kResourceExhausted), RequestOutcome::kRejected);
  EXPECT_EQ(OutcomeOf(absl::StatusCode::kUnavailable), RequestOutcome::kRejected);
  EXPECT_EQ(OutcomeOf(absl::StatusCode::kCancelled), RequestOutcome::kCancelled);
  EXPECT_EQ(OutcomeOf(absl::StatusCode::kDeadlineExceeded), RequestOutcome::kDeadline);
  for (auto code : {absl::StatusCode::kInternal, absl::StatusCode::kUnknown,
                    absl::StatusCode::kDataLoss, absl::StatusCode::kAborted}) {
    EXPECT_EQ(OutcomeOf(code), RequestOutcome::kInternal) << absl::StatusCodeToString(code);
  }
  std::vector<std::string> names;
  for (RequestOutcome outcome : kAllRequestOutcomes) names.emplace_back(OutcomeName(outcome));
  EXPECT_THAT(names, ::testing::ElementsAre("success", "invalid", "rejected", "cancelled",
                                            "deadline", "internal"));
}

class ServerMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.max_batch_rows = 64;
    options_.max_queue_requests = 100;
    options_.expert_timing_sample_rate = 0.25;
    MOE_ASSERT_OK_AND_ASSIGN(metrics_, ServerMetrics::Create({"alpha", "beta"}, options_));
  }
  ModelMetricsOptions options_;
  std::unique_ptr<ServerMetrics> metrics_;
};

TEST_F(ServerMetricsTest, CountsCallsByModelAndOutcome) {
  ModelMetrics* alpha = metrics_->ForModel("alpha");
  alpha->RecordCall(absl::StatusCode::kOk, absl::Milliseconds(3));
  alpha->RecordCall(absl::StatusCode::kOk, absl::Milliseconds(30));
  alpha->RecordCall(absl::StatusCode::kInvalidArgument, absl::Milliseconds(1));
  alpha->RecordCall(absl::StatusCode::kResourceExhausted, absl::Milliseconds(1));
  metrics_->ForModel("beta")->RecordCall(absl::StatusCode::kInternal, absl::Milliseconds(1));
  metrics_->ForModel("no-such-model")
      ->RecordCall(absl::StatusCode::kNotFound, absl::ZeroDuration());
  const auto samples = Scrape(*metrics_);
  auto requests = [&](const std::string& model, const std::string& outcome) {
    return FindSample(samples, "moe_requests_total", {{"model", model}, {"outcome", outcome}});
  };
  EXPECT_EQ(requests("alpha", "success"), 2);
  EXPECT_EQ(requests("alpha", "invalid"), 1);
  EXPECT_EQ(requests("alpha", "rejected"), 1);
  EXPECT_EQ(requests("alpha", "internal"), 0);
  EXPECT_EQ(requests("beta", "internal"), 1);
  EXPECT_EQ(requests(kUnknownModelLabel, "invalid"), 1);
  // Latency of successful calls only, in seconds.
  EXPECT_EQ(FindSample(samples, "moe_request_duration_seconds_count", {{"model", "alpha"}}), 2);
  EXPECT_THAT(FindSample(samples, "moe_request_duration_seconds_sum", {{"model", "alpha"}}),
              ::testing::Optional(::testing::DoubleNear(0.033, 1e-9)));
  EXPECT_EQ(FindSample(samples, "moe_request_duration_seconds_bucket",
                       {{"model", "alpha"}, {"le", "0.005"}}),
            1);
  // The unknown model has outcome counters and nothing else.
  EXPECT_EQ(FindSample(samples, "moe_requests_queued", {{"model", kUnknownModelLabel}}),
            std::nullopt);
}

TEST_F(ServerMetricsTest, QueueBatchAndCapacitySeries) {
  ModelMetrics* alpha = metrics_->ForModel("alpha");
  alpha->RecordAccepted(3);
  alpha->SetQueued(7);
  alpha->SetRunning(2);
  alpha->RecordComputed(absl::Microseconds(250), absl::Milliseconds(2));
  BatchObservation batch;
  batch.rows = 40;
  batch.requests = 5;
  batch.seconds = 0.004;
  alpha->RecordBatch(batch);
  batch.failed = true;
  alpha->RecordBatch(batch);
  const auto samples = Scrape(*metrics_);
  const std::map<std::string, std::string> model = {{"model", "alpha"}};
  EXPECT_EQ(FindSample(samples, "moe_requests_queued", model), 7);
  EXPECT_EQ(FindSample(samples, "moe_requests_running", model), 2);
  EXPECT_EQ(FindSample(samples, "moe_queue_capacity_requests", model), 100);
  EXPECT_EQ(FindSample(samples, "moe_batch_capacity_rows", model), 64);
  EXPECT_EQ(FindSample(samples, "moe_batches_total", model), 2);
  EXPECT_EQ(FindSample(samples, "moe_batch_rows_sum", model), 80);
  EXPECT_EQ(FindSample(samples, "moe_batch_rows_bucket", {{"model", "alpha"}, {"le", "32"}}), 0);
  EXPECT_EQ(FindSample(samples, "moe_batch_rows_bucket", {{"model", "alpha"}, {"le", "64"}}), 2);
  EXPECT_EQ(FindSample(samples, "moe_request_rows_sum", model), 3);
  EXPECT_EQ(FindSample(samples, "moe_request_queue_duration_seconds_sum", model), 0.00025);
  EXPECT_EQ(FindSample(samples, "moe_request_compute_duration_seconds_sum", model), 0.002);
}

TEST_F(ServerMetricsTest, LoadingSetsInfoAndStartsExpertSeries) {
  ModelMetrics* alpha = metrics_->ForModel("alpha");
  EXPECT_EQ(CountSamples(Scrape(*metrics_), "moe_model_info"), 0);
  LoadedModelInfo info{.architecture = "MoEMLP",
                       .backend = "cpu",
                       .device = "cpu (2 threads)",
                       .dtype = "F32",
                       .num_moe_layers = 2,
                       .num_experts = 4,
                       .top_k = 2,
                       .weight_bytes = 12345,
                       .load_time = absl::Milliseconds(1500)};
  MOE_ASSERT_OK(alpha->SetLoaded(info));
  EXPECT_THAT(alpha->SetLoaded(info), StatusIs(absl::StatusCode::kFailedPrecondition));
  const std::vector<int64_t> counts = {3, 1, 0, 0, 2, 2, 0, 0};
  BatchObservation batch;
  batch.rows = 2;
  batch.expert_tokens = counts;
  alpha->RecordBatch(batch);
  const auto samples = Scrape(*metrics_);
  EXPECT_EQ(FindSample(samples, "moe_model_info",
                       {{"model", "alpha"},
                        {"architecture", "MoEMLP"},
                        {"backend", "cpu"},
                        {"device", "cpu (2 threads)"},
                        {"dtype", "F32"},
                        {"moe_layers", "2"},
                        {"experts", "4"},
                        {"top_k", "2"}}),
            1);
  EXPECT_EQ(FindSample(samples, "moe_model_load_duration_seconds", {{"model", "alpha"}}), 1.5);
  EXPECT_EQ(FindSample(samples, "moe_model_weight_bytes", {{"model", "alpha"}}), 12345);
  EXPECT_EQ(FindSample(samples, "moe_expert_tokens_total",
                       {{"model", "alpha"}, {"layer", "1"}, {"expert", "0"}}),
            2);
  EXPECT_EQ(FindSample(samples, "moe_layer_idle_experts", {{"model", "alpha"}, {"layer", "0"}}), 2);
  // beta has not loaded: no expert series for it.
  EXPECT_EQ(FindSample(samples, "moe_layer_tokens_total", {{"model", "beta"}}), std::nullopt);
  EXPECT_THAT(metrics_->ForModel("nobody")->SetLoaded(info),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(ServerMetricsTest, ExpertTimingSamplesEveryNthPass) {
  ModelMetrics* alpha = metrics_->ForModel("alpha");
  std::vector<bool> sampled;
  for (int i = 0; i < 12; ++i) sampled.push_back(alpha->SampleExpertTiming());
  // Rate 0.25: passes 0, 4 and 8.
  EXPECT_THAT(sampled, ::testing::ElementsAre(true, false, false, false, true, false, false, false,
                                              true, false, false, false));
  EXPECT_EQ(FindSample(Scrape(*metrics_), "moe_expert_timing_sample_ratio"), 0.25);

  for (const auto& [rate, expected] : {std::pair{0.0, 0}, std::pair{1.0, 10}, std::pair{0.1, 1}}) {
    ModelMetricsOptions options;
    options.expert_timing_sample_rate = rate;
    MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ServerMetrics> metrics,
                             ServerMetrics::Create({"m"}, options));
    int count = 0;
    for (int i = 0; i < 10; ++i) count += metrics->ForModel("m")->SampleExpertTiming() ? 1 : 0;
    EXPECT_EQ(count, expected) << "rate " << rate;
  }
}

TEST_F(ServerMetricsTest, DeviceMemoryIsReadAtScrapeTime) {
  EXPECT_EQ(CountSamples(Scrape(*metrics_), "moe_device_memory_used_bytes"), 0);
  uint64_t used = 1000;
  metrics_->SetDeviceMemoryReader([&used]() -> absl::StatusOr<DeviceMemory> {
    return DeviceMemory{
        .backend = "cuda", .device = "gpu0", .used_bytes = used, .total_bytes = 8000};
  });
  EXPECT_EQ(FindSample(Scrape(*metrics_), "moe_device_memory_used_bytes",
                       {{"backend", "cuda"}, {"device", "gpu0"}}),
            1000);
  used = 3000;
  EXPECT_EQ(FindSample(Scrape(*metrics_), "moe_device_memory_used_bytes"), 3000);
  EXPECT_EQ(FindSample(Scrape(*metrics_), "moe_device_memory_total_bytes"), 8000);
  metrics_->SetDeviceMemoryReader(
      []() -> absl::StatusOr<DeviceMemory> { return absl::UnavailableError("no driver"); });
  EXPECT_EQ(CountSamples(Scrape(*metrics_), "moe_device_memory_used_bytes"), 0);
}

TEST(ServerMetricsCreateTest, RefusesBadOptions) {
  ModelMetricsOptions options;
  options.expert_timing_sample_rate = 1.5;
  EXPECT_THAT(ServerMetrics::Create({"m"}, options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("1.5")));
  options.expert_timing_sample_rate = 0.01;
  options.experts.window = absl::Microseconds(10);
  EXPECT_THAT(ServerMetrics::Create({"m"}, options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("window")));
}

}  // namespace
}  // namespace moe::metrics
