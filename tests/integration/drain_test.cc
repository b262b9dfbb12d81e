// SIGTERM and SIGINT drain: readiness goes NOT_SERVING, new calls get UNAVAILABLE (or find the
// port closed), every request already accepted is answered, then the process exits with 0.
#include <chrono>
#include <csignal>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/async_calls.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/random.h"

namespace moe::integration {
namespace {

using grpc::health::v1::HealthCheckResponse;

// One request per batch, so that a burst of requests takes a while to drain.
std::vector<std::string> DrainServerArgs(std::vector<std::string> extra = {}) {
  return OneRequestPerBatchArgs(std::move(extra));
}

// A new connection's call: UNAVAILABLE whether the server refuses it or no longer listens.
grpc::Status CallOnNewChannel(const testing::ServerProcess& server, std::mt19937_64& rng) {
  auto stub = inference::GRPCInferenceService::NewStub(server.NewChannel());
  inference::ModelInferResponse response;
  return Infer(*stub, OneBatchRequest(rng), &response, absl::Seconds(10));
}

void DrainsInFlightRequestsOn(int signal) {
  std::mt19937_64 rng(testing::FreshSeed());
  auto started = StartServer(DrainServerArgs());
  ASSERT_TRUE(started.ok()) << started.status();
  testing::ServerProcess& server = **started;
  auto stub = NewStub(server);

  constexpr int kCalls = 100;
  AsyncCalls calls(*stub);
  for (int i = 0; i < kCalls; ++i) calls.Start(OneBatchRequest(rng));
  // The first answer proves the calls reached the server; the rest are queued or on the way.
  ASSERT_TRUE(calls.WaitForFinished(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const absl::Time signalled = absl::Now();
  ASSERT_TRUE(server.Terminate(signal).ok());
  const size_t finished_at_signal = calls.finished();

  // Draining: the server is no longer ready and takes no new calls.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (calls.finished() < kCalls) {
    auto health = grpc::health::v1::Health::NewStub(server.channel());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health->Check(&context, request, &response);
    if (status.ok()) {
      EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING) << "while draining";
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(status);
    }
    EXPECT_EQ(CallOnNewChannel(server, rng).error_code(), grpc::StatusCode::UNAVAILABLE)
        << "a new call while draining";
  }

  ASSERT_TRUE(calls.WaitAll(absl::Seconds(120)));
  size_t answered_after_signal = 0;
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_THAT(calls.status(i), GrpcOk()) << "call " << i << " was accepted before the signal";
    answered_after_signal += calls.finish_time(i) > signalled;
  }
  EXPECT_LT(finished_at_signal, static_cast<size_t>(kCalls));
  EXPECT_GT(answered_after_signal, 0u)
      << "every call finished before the signal: the drain was not exercised";

  auto exit_code = server.WaitForExit(absl::Seconds(60));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << server.LogTail();
  EXPECT_EQ(*exit_code, 0) << server.LogTail();
  EXPECT_EQ(CallOnNewChannel(server, rng).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "a call after exit";
}

TEST(DrainTest, SigtermAnswersEveryAcceptedRequestThenExitsZero) {
  DrainsInFlightRequestsOn(SIGTERM);
}

TEST(DrainTest, SigintAnswersEveryAcceptedRequestThenExitsZero) {
  DrainsInFlightRequestsOn(SIGINT);
}

TEST(DrainTest, IdleServerExitsZeroOnSigterm) {
  auto started = StartServer();
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_TRUE((*started)->Terminate(SIGTERM).ok());
  auto exit_code = (*started)->WaitForExit(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << (*started)->LogTail();
  EXPECT_EQ(*exit_code, 0) << (*started)->LogTail();
}

TEST(DrainTest, IdleServerWithAConnectedClientExitsPromptly) {
  std::mt19937_64 rng(testing::FreshSeed());
  auto started = StartServer(DrainServerArgs());
  ASSERT_TRUE(started.ok()) << started.status();
  testing::ServerProcess& server = **started;
  // A client that made a call and keeps its connection open, as load balancers and sidecars do.
  auto stub = NewStub(server);
  inference::ModelInferResponse response;
  ASSERT_THAT(Infer(*stub, OneBatchRequest(rng), &response), GrpcOk());
  const absl::Time signalled = absl::Now();
  ASSERT_TRUE(server.Terminate(SIGTERM).ok());
  auto exit_code = server.WaitForExit(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << server.LogTail();
  EXPECT_EQ(*exit_code, 0) << server.LogTail();
  // Nothing is in flight: there is nothing to wait for.
  EXPECT_LT(absl::Now() - signalled, absl::Seconds(2)) << server.LogTail();
}

TEST(DrainTest, DrainTimeoutBoundsTheDrain) {
  std::mt19937_64 rng(testing::FreshSeed());
  // Far more queued work than 300 ms compute (1000 batches of 16 rows).
  auto started = StartServer(DrainServerArgs({"--drain-timeout", "300ms"}));
  ASSERT_TRUE(started.ok()) << started.status();
  testing::ServerProcess& server = **started;
  auto stub = NewStub(server);
  constexpr int kCalls = 1000;
  AsyncCalls calls(*stub);
  for (int i = 0; i < kCalls; ++i) calls.Start(OneBatchRequest(rng), absl::Seconds(120));
  ASSERT_TRUE(calls.WaitForFinished(1));
  const absl::Time signalled = absl::Now();
  ASSERT_TRUE(server.Terminate(SIGTERM).ok());
  auto exit_code = server.WaitForExit(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << server.LogTail();
  const absl::Duration drain = absl::Now() - signalled;
  EXPECT_LT(drain, absl::Seconds(10)) << "--drain-timeout 300ms";
  EXPECT_EQ(*exit_code, 0) << server.LogTail();
  // Every call got an answer (none hangs); those cut off are not OK.
  ASSERT_TRUE(calls.WaitAll(absl::Seconds(30)));
  size_t unanswered = 0;
  for (int i = 0; i < kCalls; ++i) unanswered += !calls.status(i).ok();
  EXPECT_GT(unanswered, 0u) << "all " << kCalls << " calls finished within the drain timeout: "
                            << "the timeout was not exercised";
}

}  // namespace
}  // namespace moe::integration
