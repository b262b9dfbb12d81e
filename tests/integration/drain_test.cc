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

// Polls the health service until it says NOT_SERVING, or until the server no longer answers
// (UNAVAILABLE: it has drained and stopped listening already); fails after `timeout`.
void AwaitNotServing(const testing::ServerProcess& server, absl::Duration timeout) {
  auto health = grpc::health::v1::Health::NewStub(server.channel());
  const absl::Time give_up = absl::Now() + timeout;
  std::string last = "no answer yet";
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    grpc::health::v1::HealthCheckRequest request;
    HealthCheckResponse response;
    const grpc::Status status = health->Check(&context, request, &response);
    if (status.ok() && response.status() == HealthCheckResponse::NOT_SERVING) return;
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE) return;
    last =
        status.ok() ? HealthCheckResponse::ServingStatus_Name(response.status()) : Describe(status);
    if (absl::Now() >= give_up) {
      ADD_FAILURE() << "health still " << last << " " << absl::FormatDuration(timeout)
                    << " after the signal";
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void DrainsInFlightRequestsOn(int signal) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  auto started = StartServer(DrainServerArgs());
  ASSERT_TRUE(started.ok()) << started.status();
  testing::ServerProcess& server = **started;
  auto stub = NewStub(server);

  constexpr int kCalls = 100;
  AsyncCalls calls(*stub);
  for (int i = 0; i < kCalls; ++i) calls.Start(OneBatchRequest(rng));
  // The first answer proves the calls' connection is up and the server computing; the other
  // calls are queued or, rarely, still on their way. One that reaches the server only after the
  // signal is refused as new work (UNAVAILABLE), which the checks below allow; one that was
  // accepted must be answered.
  ASSERT_TRUE(calls.WaitForFinished(1));
  const absl::Time signalled = absl::Now();
  ASSERT_TRUE(server.Terminate(signal).ok());
  const size_t finished_at_signal = calls.finished();

  // Draining: the server is no longer ready (or already gone) and takes no new calls. Health
  // turns NOT_SERVING only after the scheduler refuses new work, so the call below is new work
  // whether the drain is still running or over.
  ASSERT_NO_FATAL_FAILURE(AwaitNotServing(server, absl::Seconds(5)));
  EXPECT_EQ(CallOnNewChannel(server, rng).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "a new call while draining";

  ASSERT_TRUE(calls.WaitAll(absl::Seconds(120)));
  size_t answered_after_signal = 0;
  size_t refused = 0;
  for (int i = 0; i < kCalls; ++i) {
    const grpc::Status& status = calls.status(i);
    if (status.ok()) {
      answered_after_signal += calls.finish_time(i) > signalled;
      continue;
    }
    // Only a call that had not reached the server when the drain began may fail, and only as
    // the drain refuses new work: an accepted call dropped in the drain would fail otherwise.
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << "call " << i << ": " << Describe(status);
    EXPECT_THAT(status.error_message(), ::testing::HasSubstr("accepts no new requests"))
        << "call " << i << " failed other than by being refused as new work";
    ++refused;
  }
  EXPECT_LT(refused, static_cast<size_t>(kCalls) / 2)
      << "most calls should have been accepted before the signal";
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
  // Nothing is in flight: there is nothing to wait for. The bound is loose for slow machines;
  // what it guards against is waiting out the idle connection or the 30 s --drain-timeout.
  EXPECT_LT(absl::Now() - signalled, absl::Seconds(10)) << server.LogTail();
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
