// The load loops against a fake Client whose answers take a set time: what is counted (calls
// after the warm-up only, exactly --requests of them), errors by code, the server's timing
// means, every connection made before the clock starts, and the open loop keeping its schedule
// when answers are slower than the gaps between sends (and dropping past --max-in-flight).
#include "client/cli/bench_runner.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace moe::client::cli {
namespace {

using ::moe::testing::StatusIs;

class FakeClient : public Client {
 public:
  explicit FakeClient(absl::Duration latency) : latency_(latency) {}
  ~FakeClient() override {
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      threads.swap(threads_);
    }
    for (std::thread& thread : threads) thread.join();
  }

  // Every `n`-th call (1-based) fails with UNAVAILABLE; 0: none.
  void FailEvery(int n) { fail_every_ = n; }

  absl::Status WaitForReady(absl::Duration) override { return absl::OkStatus(); }
  absl::StatusOr<bool> ServerLive() override {
    absl::MutexLock lock(&mu_);
    connects_.push_back(absl::Now());
    return true;
  }
  absl::StatusOr<bool> ServerReady() override { return true; }
  absl::StatusOr<bool> ModelReady(const std::string&) override { return true; }
  absl::StatusOr<HealthStatus> Health(const std::string&) override {
    return HealthStatus::kServing;
  }
  absl::StatusOr<std::vector<ModelInfo>> ListModels() override {
    return absl::UnimplementedError("fake");
  }
  absl::StatusOr<ModelInfo> DescribeModel(const std::string&) override {
    return absl::UnimplementedError("fake");
  }

  absl::StatusOr<InferResult> Infer(const std::string& model, const std::vector<InferInput>& inputs,
                                    const InferOptions& options) override {
    const int64_t call = Start(inputs);
    absl::SleepFor(latency_);
    return Answer(model, inputs, call);
  }

  void InferAsync(const std::string& model, const std::vector<InferInput>& inputs,
                  const InferOptions& options,
                  absl::AnyInvocable<void(absl::StatusOr<InferResult>)> done) override {
    const int64_t call = Start(inputs);
    absl::MutexLock lock(&mu_);
    threads_.emplace_back([this, model, inputs, call, done = std::move(done)]() mutable {
      absl::SleepFor(latency_);
      done(Answer(model, inputs, call));
    });
  }
  absl::StatusOr<GenerateResult> Generate(const std::string&, const std::vector<int32_t>&,
                                          const GenerateOptions&, GenerateCallback) override {
    return absl::UnimplementedError("fake");
  }

  std::vector<absl::Time> sends() {
    absl::MutexLock lock(&mu_);
    return sends_;
  }
  std::vector<absl::Time> connects() {
    absl::MutexLock lock(&mu_);
    return connects_;
  }
  std::vector<std::vector<int64_t>> shapes() {
    absl::MutexLock lock(&mu_);
    return shapes_;
  }

 private:
  int64_t Start(const std::vector<InferInput>& inputs) {
    absl::MutexLock lock(&mu_);
    sends_.push_back(absl::Now());
    shapes_.push_back(inputs.at(0).shape);
    EXPECT_EQ(static_cast<int64_t>(inputs.at(0).values.size()),
              inputs[0].shape.at(0) * inputs[0].shape.at(1));
    EXPECT_EQ(inputs[0].name, "pixels");
    return calls_++;
  }
  absl::StatusOr<InferResult> Answer(const std::string& model,
                                     const std::vector<InferInput>& inputs, int64_t call) {
    if (fail_every_ > 0 && (call + 1) % fail_every_ == 0) {
      return absl::UnavailableError("ModelInfer: fake failure");
    }
    InferResult result;
    result.model_name = model;
    result.queue_us = 10;
    result.compute_us = 20 + call % 2 * 10;  // alternately 20 and 30
    result.batch_rows = inputs[0].shape[0];
    return result;
  }

  const absl::Duration latency_;
  std::atomic<int> fail_every_{0};
  absl::Mutex mu_;
  int64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<absl::Time> sends_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Time> connects_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<int64_t>> shapes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

BenchOptions Options() {
  BenchOptions options;
  options.target = "fake:1";
  options.model = "digits";
  options.input_name = "pixels";
  options.width = 16;
  options.warmup = absl::ZeroDuration();
  options.seed = 3;
  return options;
}

TEST(ClientCliBenchRunner, ClosedLoopMakesExactlyTheRequestsAskedFor) {
  FakeClient client(absl::Milliseconds(1));
  BenchOptions options = Options();
  options.concurrency = 4;
  options.requests = 50;
  options.rows_per_request = 3;
  const auto report = RunBench({&client}, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->requests_ok, 50);
  EXPECT_EQ(report->requests_failed, 0);
  EXPECT_EQ(report->mode, "closed");
  EXPECT_EQ(report->concurrency, 4);
  EXPECT_EQ(report->latency_ms.count, 50);
  EXPECT_GE(report->latency_ms.min, 1.0);
  EXPECT_GT(report->seconds, 0);
  for (const auto& shape : client.shapes()) {
    EXPECT_EQ(shape, (std::vector<int64_t>{3, 16}));
  }
}

TEST(ClientCliBenchRunner, ClosedLoopCountsNoCallStartedInTheWarmUp) {
  FakeClient client(absl::Milliseconds(5));
  BenchOptions options = Options();
  options.concurrency = 2;
  options.warmup = absl::Milliseconds(200);
  options.duration = absl::Milliseconds(300);
  const absl::Time before = absl::Now();
  const auto report = RunBench({&client}, options);
  ASSERT_TRUE(report.ok()) << report.status();
  const std::vector<absl::Time> sends = client.sends();
  const int64_t in_warmup = std::count_if(sends.begin(), sends.end(), [&](absl::Time t) {
    return t < before + absl::Milliseconds(190);
  });
  EXPECT_GT(in_warmup, 10) << "the warm-up sent load";
  EXPECT_LE(report->requests_ok, static_cast<int64_t>(sends.size()) - in_warmup);
  // 2 workers x 300 ms / 5 ms = 120 at most; a slow machine makes fewer.
  EXPECT_GT(report->requests_ok, 10);
  EXPECT_LE(report->requests_ok, 125);
  EXPECT_GE(report->seconds, 0.29);
  EXPECT_LT(report->seconds, 1.0);
}

TEST(ClientCliBenchRunner, EveryWorkerConnectsBeforeTheClockStarts) {
  FakeClient a(absl::Milliseconds(1)), b(absl::Milliseconds(1)), c(absl::Milliseconds(1));
  BenchOptions options = Options();
  options.concurrency = 6;
  options.requests = 300;
  const auto report = RunBench({&a, &b, &c}, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->connections, 3);
  absl::Time last_connect = absl::InfinitePast(), first_send = absl::InfiniteFuture();
  for (FakeClient* client : {&a, &b, &c}) {
    EXPECT_EQ(client->connects().size(), 2u) << "two workers per connection";
    for (absl::Time t : client->connects()) last_connect = std::max(last_connect, t);
    for (absl::Time t : client->sends()) first_send = std::min(first_send, t);
    EXPECT_FALSE(client->sends().empty()) << "calls are spread over every connection";
  }
  EXPECT_LE(last_connect, first_send);
}

TEST(ClientCliBenchRunner, CountsErrorsByCode) {
  FakeClient client(absl::Milliseconds(1));
  client.FailEvery(4);
  BenchOptions options = Options();
  options.concurrency = 1;
  options.requests = 40;
  const auto report = RunBench({&client}, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->requests_ok, 30);
  EXPECT_EQ(report->requests_failed, 10);
  EXPECT_EQ(report->errors, (std::map<std::string, int64_t>{{"UNAVAILABLE", 10}}));
  EXPECT_EQ(report->error_messages.at("UNAVAILABLE"), "ModelInfer: fake failure");
  EXPECT_EQ(report->latency_ms.count, 30) << "only successful calls are timed";
}

TEST(ClientCliBenchRunner, AveragesTheServersTimingParameters) {
  FakeClient client(absl::ZeroDuration());
  BenchOptions options = Options();
  options.requests = 20;
  options.rows_per_request = 5;
  const auto report = RunBench({&client}, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->with_server_timing, 20);
  EXPECT_DOUBLE_EQ(report->mean_queue_us, 10);
  EXPECT_DOUBLE_EQ(report->mean_compute_us, 25);  // ten of 20, ten of 30
  EXPECT_DOUBLE_EQ(report->mean_batch_rows, 5);
}

TEST(ClientCliBenchRunner, OpenLoopKeepsItsScheduleWhenAnswersAreSlow) {
  // A call every 10 ms; answers take 60 ms, so about six are in flight at once. A closed loop
  // of one worker would send a sixth as many.
  FakeClient client(absl::Milliseconds(60));
  BenchOptions options = Options();
  options.rate = 100;
  options.arrival = Arrival::kConstant;
  options.duration = absl::Milliseconds(500);
  const auto report = RunBench({&client}, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->mode, "open");
  EXPECT_EQ(report->concurrency, 0);
  EXPECT_EQ(report->requests_ok + report->dropped, 50);  // 0, 10, ..., 490 ms
  EXPECT_EQ(report->dropped, 0);
  EXPECT_GE(report->max_in_flight, 4);
  EXPECT_GE(report->latency_ms.min, 60.0);
  const std::vector<absl::Time> sends = client.sends();
  ASSERT_EQ(sends.size(), 50u);
  // Sends follow the schedule, not the answers: the 50th goes out about 490 ms after the first
  // (one worker waiting for each answer would need 50 x 60 ms = 3 s; a loaded machine may send
  // some late).
  const double span_ms = absl::ToDoubleMilliseconds(sends.back() - sends.front());
  EXPECT_GT(span_ms, 300);
  EXPECT_LT(span_ms, 1500);
}

TEST(ClientCliBenchRunner, OpenLoopDropsCallsPastMaxInFlight) {
  FakeClient client(absl::Milliseconds(500));
  BenchOptions options = Options();
  options.rate = 200;
  options.arrival = Arrival::kConstant;
  options.requests = 40;  // 200 ms of schedule: every answer comes well after the last send
  options.max_in_flight = 5;
  const auto report = RunBench({&client}, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->max_in_flight, 5);
  EXPECT_EQ(report->requests_ok, 5);
  EXPECT_EQ(report->dropped, 35);
  EXPECT_EQ(client.sends().size(), 5u);
}

TEST(ClientCliBenchRunner, OpenLoopWithPoissonArrivalsMakesTheRequestsAskedFor) {
  FakeClient a(absl::Milliseconds(2)), b(absl::Milliseconds(2));
  BenchOptions options = Options();
  options.rate = 1000;
  options.requests = 100;
  options.warmup = absl::Milliseconds(50);
  const auto report = RunBench({&a, &b}, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->requests_ok + report->dropped, 100);
  EXPECT_EQ(report->arrival, "poisson");
  EXPECT_EQ(report->connections, 2);
  EXPECT_GT(a.sends().size() + b.sends().size(), 100u) << "the warm-up sent load too";
}

TEST(ClientCliBenchRunner, RefusesBadOptions) {
  FakeClient client(absl::ZeroDuration());
  BenchOptions options = Options();
  options.concurrency = 0;
  EXPECT_THAT(RunBench({&client}, options),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("concurrency")));
  options = Options();
  options.duration = absl::ZeroDuration();
  EXPECT_THAT(RunBench({&client}, options),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("duration")));
  options = Options();
  options.rows_per_request = 0;
  EXPECT_THAT(ValidateBenchOptions(options), StatusIs(absl::StatusCode::kInvalidArgument));
  options = Options();
  options.width = 0;
  EXPECT_THAT(RunBench({&client}, options), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(RunBench({}, Options()), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(client.sends().empty());
}

TEST(ClientCliBenchRunner, WireTypeNames) {
  for (const char* name : {"fp32", "fp16", "bf16"}) {
    const auto wire = ParseWireType(name);
    ASSERT_TRUE(wire.ok());
    EXPECT_EQ(WireTypeName(*wire), name);
  }
  EXPECT_THAT(ParseWireType("fp8"), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace moe::client::cli
