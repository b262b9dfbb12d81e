// The Client against an in-process fake KServe server: which failures are retried and how often,
// that retries stop at the deadline, InferAsync (results, retries, errors delivered on a gRPC
// thread), the bearer token on every call, what a request looks like on arrival, and
// DescribeModel on a server without moe.v1.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/client/client.h"
#include "tests/testing/server_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/client/fake_kserve_server.h"

namespace moe::client {
namespace {

using ::moe::client::testing::FakeKServeServer;
using ::moe::testing::IsOk;
using ::moe::testing::StatusIs;
using ::testing::AnyOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::SizeIs;

const grpc::Status kUnavailable(grpc::StatusCode::UNAVAILABLE, "server is draining");
const grpc::Status kQueueFull(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue is full");

// Quick retries so that the tests take milliseconds.
ConnectOptions FastRetries(const std::string& target, int max_attempts = 4) {
  return ConnectOptions{.target = target,
                        .timeout = absl::Seconds(20),
                        .retry = {.max_attempts = max_attempts,
                                  .initial_backoff = absl::Milliseconds(5),
                                  .max_backoff = absl::Milliseconds(40),
                                  .multiplier = 2.0}};
}

std::unique_ptr<Client> ConnectOrDie(const ConnectOptions& options) {
  auto client = Client::Connect(options);
  EXPECT_THAT(client, IsOk());
  return client.ok() ? *std::move(client) : nullptr;
}

InferInput Rows(std::vector<float> values, bool raw = true) {
  const auto rows = static_cast<int64_t>(values.size() / 3);
  return InferInput{.name = "x", .shape = {rows, 3}, .values = std::move(values), .raw = raw};
}

// Collects an InferAsync result and the thread `done` ran on.
struct AsyncResult {
  absl::Notification done;
  absl::StatusOr<InferResult> result = absl::UnknownError("not run");
  std::thread::id thread;
  int runs = 0;

  absl::AnyInvocable<void(absl::StatusOr<InferResult>)> Callback() {
    return [this](absl::StatusOr<InferResult> r) {
      result = std::move(r);
      thread = std::this_thread::get_id();
      ++runs;
      done.Notify();
    };
  }
};

class ClientCallsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = FakeKServeServer::Start();
    ASSERT_NE(server_, nullptr);
  }
  std::unique_ptr<FakeKServeServer> server_;
};

TEST_F(ClientCallsTest, RetriesUnavailableAndResourceExhaustedUntilTheServerAnswers) {
  auto client = ConnectOrDie(FastRetries(server_->address()));
  server_->FailNext("ServerLive", {kUnavailable, kQueueFull});
  auto live = client->ServerLive();
  ASSERT_THAT(live, IsOk());
  EXPECT_TRUE(*live);
  EXPECT_EQ(server_->calls("ServerLive"), 3);
}

TEST_F(ClientCallsTest, DoesNotRetryOtherErrors) {
  auto client = ConnectOrDie(FastRetries(server_->address()));
  for (grpc::StatusCode code :
       {grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::NOT_FOUND,
        grpc::StatusCode::DEADLINE_EXCEEDED, grpc::StatusCode::INTERNAL,
        grpc::StatusCode::FAILED_PRECONDITION, grpc::StatusCode::CANCELLED}) {
    const int before = server_->calls("ModelInfer");
    server_->FailNext("ModelInfer", {grpc::Status(code, "no luck")});
    EXPECT_THAT(client->Infer("fake", {Rows({1, 2, 3})}),
                StatusIs(static_cast<absl::StatusCode>(code), "ModelInfer: no luck"));
    EXPECT_EQ(server_->calls("ModelInfer"), before + 1) << "code " << code;
  }
}

TEST_F(ClientCallsTest, GivesUpAfterTheLastAttemptWithTheLastError) {
  auto client = ConnectOrDie(FastRetries(server_->address(), /*max_attempts=*/4));
  server_->FailAlways("ServerReady", kUnavailable);
  EXPECT_THAT(client->ServerReady(),
              StatusIs(absl::StatusCode::kUnavailable,
                       "ServerReady: server is draining (after 4 attempts)"));
  EXPECT_EQ(server_->calls("ServerReady"), 4);
}

TEST_F(ClientCallsTest, StopsRetryingBeforeTheDeadline) {
  ConnectOptions options = FastRetries(server_->address(), /*max_attempts=*/1000);
  options.timeout = absl::Milliseconds(400);
  auto client = ConnectOrDie(options);
  server_->FailAlways("ServerLive", kUnavailable);
  const absl::Time start = absl::Now();
  // The last error, or DEADLINE_EXCEEDED when the deadline passed during the last attempt.
  EXPECT_THAT(
      client->ServerLive(),
      AnyOf(StatusIs(absl::StatusCode::kUnavailable, HasSubstr("server is draining (after")),
            StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("(after"))));
  const absl::Duration took = absl::Now() - start;
  // 1000 attempts with waits of up to 40 ms would take 20 s; a loaded machine may be slow.
  EXPECT_LT(took, absl::Milliseconds(400) + absl::Seconds(1));
  // Waits of 20 ms on average: many attempts fit, far fewer than 1000.
  EXPECT_GT(server_->calls("ServerLive"), 3);
  EXPECT_LT(server_->calls("ServerLive"), 1000);
}

TEST_F(ClientCallsTest, InfersTypedAndRaw) {
  auto client = ConnectOrDie(FastRetries(server_->address()));
  for (bool raw : {false, true}) {
    auto result = client->Infer("fake", {Rows({1, 2, 3, 4, 5, 6}, raw)}, {.request_id = "r1"});
    ASSERT_THAT(result, IsOk());
    EXPECT_EQ(result->model_name, "fake");
    EXPECT_EQ(result->id, "r1");
    EXPECT_EQ(result->queue_us, 7);
    const OutputTensor* y = result->Find("y");
    ASSERT_NE(y, nullptr);
    EXPECT_THAT(y->shape, ElementsAre(2, 2));
    EXPECT_THAT(y->fp32, ElementsAre(1, 2, 4, 5));
    EXPECT_EQ(server_->last_infer_request().raw_input_contents_size(), raw ? 1 : 0);
  }
}

TEST_F(ClientCallsTest, RequestArrivesWithItsParametersAndOutputs) {
  auto client = ConnectOrDie(FastRetries(server_->address()));
  InferInput input = Rows({1, 2, 3});
  input.wire_type = WireType::kBf16;
  // The fake refuses BF16, but the request it saw is what matters.
  (void)client->Infer("fake", {input},
                      {.want_routing = true,
                       .outputs = {"y"},
                       .priority = 2,
                       .queue_timeout = absl::Milliseconds(3),
                       .request_id = "abc"});
  const inference::ModelInferRequest request = server_->last_infer_request();
  EXPECT_EQ(request.model_name(), "fake");
  EXPECT_EQ(request.id(), "abc");
  ASSERT_EQ(request.inputs_size(), 1);
  EXPECT_EQ(request.inputs(0).datatype(), "BF16");
  ASSERT_EQ(request.raw_input_contents_size(), 1);
  EXPECT_EQ(request.raw_input_contents(0), std::string("\x80\x3f\x00\x40\x40\x40", 6));
  ASSERT_EQ(request.outputs_size(), 1);
  EXPECT_EQ(request.outputs(0).name(), "y");
  EXPECT_TRUE(request.parameters().at("routing").bool_param());
  EXPECT_EQ(request.parameters().at("priority").int64_param(), 2);
  EXPECT_EQ(request.parameters().at("timeout").int64_param(), 3000);
}

TEST_F(ClientCallsTest, ChecksInputsBeforeSending) {
  auto client = ConnectOrDie(FastRetries(server_->address()));
  InferInput bad = Rows({1, 2, 3});
  bad.values.pop_back();
  EXPECT_THAT(client->Infer("fake", {bad}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "ModelInfer: input 'x' has shape [1, 3] (3 values) but 2 values"));
  EXPECT_EQ(server_->calls("ModelInfer"), 0);
}

TEST_F(ClientCallsTest, SendsTheBearerTokenWithEveryCallAndRetry) {
  ConnectOptions options = FastRetries(server_->address());
  options.bearer_token = "s3cr3t.t0ken";
  auto client = ConnectOrDie(options);
  server_->FailNext("ServerLive", {kUnavailable});
  ASSERT_THAT(client->ServerLive(), IsOk());
  ASSERT_THAT(client->Infer("fake", {Rows({1, 2, 3})}), IsOk());
  AsyncResult async;
  client->InferAsync("fake", {Rows({1, 2, 3})}, {}, async.Callback());
  ASSERT_TRUE(async.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  ASSERT_THAT(async.result, IsOk());
  EXPECT_THAT(server_->authorizations(), SizeIs(4));
  EXPECT_THAT(server_->authorizations(), Each(Eq("Bearer s3cr3t.t0ken")));
}

TEST_F(ClientCallsTest, SendsNoAuthorizationWithoutAToken) {
  auto client = ConnectOrDie(FastRetries(server_->address()));
  ASSERT_THAT(client->ServerLive(), IsOk());
  EXPECT_THAT(server_->authorizations(), ElementsAre(""));
}

TEST_F(ClientCallsTest, InferAsyncRetriesAndDeliversTheResultOnAGrpcThread) {
  auto client = ConnectOrDie(FastRetries(server_->address()));
  server_->FailNext("ModelInfer", {kUnavailable, kQueueFull});
  AsyncResult async;
  client->InferAsync("fake", {Rows({7, 8, 9})}, {}, async.Callback());
  ASSERT_TRUE(async.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  ASSERT_THAT(async.result, IsOk());
  EXPECT_THAT(async.result->Find("y")->fp32, ElementsAre(7, 8));
  EXPECT_EQ(server_->calls("ModelInfer"), 3);
  EXPECT_NE(async.thread, std::this_thread::get_id());
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(async.runs, 1);
}

TEST_F(ClientCallsTest, InferAsyncGivesUpWithTheLastError) {
  auto client = ConnectOrDie(FastRetries(server_->address(), /*max_attempts=*/3));
  server_->FailAlways("ModelInfer", kQueueFull);
  AsyncResult async;
  client->InferAsync("fake", {Rows({1, 2, 3})}, {}, async.Callback());
  ASSERT_TRUE(async.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_THAT(async.result, StatusIs(absl::StatusCode::kResourceExhausted,
                                     "ModelInfer: queue is full (after 3 attempts)"));
  EXPECT_EQ(server_->calls("ModelInfer"), 3);
}

TEST_F(ClientCallsTest, InferAsyncReportsBadInputsThroughDoneOnAnotherThread) {
  auto client = ConnectOrDie(FastRetries(server_->address()));
  InferInput unnamed = Rows({1, 2, 3});
  unnamed.name = "";
  AsyncResult async;
  client->InferAsync("fake", {unnamed}, {}, async.Callback());
  ASSERT_TRUE(async.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_THAT(async.result, StatusIs(absl::StatusCode::kInvalidArgument,
                                     "ModelInfer: input 0 has an empty name"));
  EXPECT_NE(async.thread, std::this_thread::get_id());
  EXPECT_EQ(server_->calls("ModelInfer"), 0);
}

TEST_F(ClientCallsTest, InferAsyncHonoursTheCallTimeout) {
  ConnectOptions options = FastRetries(server_->address(), /*max_attempts=*/1000);
  auto client = ConnectOrDie(options);
  server_->FailAlways("ModelInfer", kUnavailable);
  AsyncResult async;
  const absl::Time start = absl::Now();
  client->InferAsync("fake", {Rows({1, 2, 3})}, {.timeout = absl::Milliseconds(300)},
                     async.Callback());
  ASSERT_TRUE(async.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(300) + absl::Seconds(1));
  EXPECT_THAT(
      async.result,
      AnyOf(StatusIs(absl::StatusCode::kUnavailable, HasSubstr("server is draining (after")),
            StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("(after"))));
}

TEST_F(ClientCallsTest, DescribeModelFallsBackToKServeMetadataWithoutMoeV1) {
  auto client = ConnectOrDie(FastRetries(server_->address()));
  auto info = client->DescribeModel("fake");
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->name(), "fake");
  EXPECT_EQ(info->input_name(), "x");
  EXPECT_EQ(info->input_width(), 3);
  EXPECT_EQ(info->output_name(), "y");
  EXPECT_EQ(info->output_width(), 2);
  EXPECT_TRUE(info->ready());
  EXPECT_EQ(info->architecture(), "");
  EXPECT_THAT(client->DescribeModel("nothing"),
              StatusIs(absl::StatusCode::kNotFound, "ModelMetadata: no model named 'nothing'"));
  EXPECT_THAT(client->ListModels(),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("ListModels: ")));
}

TEST(ClientMoeV1Test, DescribeModelAsksMoeV1WhenServed) {
  auto server = FakeKServeServer::Start({.serve_moe_v1 = true});
  ASSERT_NE(server, nullptr);
  auto client = ConnectOrDie(FastRetries(server->address()));
  auto info = client->DescribeModel("fake");
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->architecture(), "FakeArch");
  EXPECT_EQ(server->calls("ModelMetadata"), 0);
}

TEST_F(ClientCallsTest, WaitForReadyPollsUntilReady) {
  auto client = ConnectOrDie(FastRetries(server_->address()));
  server_->FailNext("ServerReady", {kUnavailable, kUnavailable, kUnavailable});
  MOE_EXPECT_OK(client->WaitForReady(absl::Seconds(20)));
  EXPECT_EQ(server_->calls("ServerReady"), 4);
}

TEST(ClientNoServerTest, WaitForReadyTimesOutWithTheLastError) {
  auto port = moe::testing::PickFreeLoopbackPort();
  ASSERT_THAT(port, IsOk());
  const std::string target = absl::StrCat("127.0.0.1:", *port);
  auto client = ConnectOrDie(FastRetries(target));
  const absl::Time start = absl::Now();
  EXPECT_THAT(client->WaitForReady(absl::Milliseconds(500)),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       HasSubstr(absl::StrCat("WaitForReady: server ", target,
                                              " is not ready after 500ms; last answer: "
                                              "ServerReady: "))));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST(ClientNoServerTest, HealthStatusNamesAreTheProtocolsNames) {
  EXPECT_EQ(HealthStatusName(HealthStatus::kServing), "SERVING");
  EXPECT_EQ(HealthStatusName(HealthStatus::kNotServing), "NOT_SERVING");
  EXPECT_EQ(HealthStatusName(HealthStatus::kServiceUnknown), "SERVICE_UNKNOWN");
  EXPECT_EQ(HealthStatusName(HealthStatus::kUnknown), "UNKNOWN");
}

}  // namespace
}  // namespace moe::client
