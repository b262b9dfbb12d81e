// Deadlines are honoured in the queue: a request whose "timeout" parameter passes while it waits
// behind others gets DEADLINE_EXCEEDED from the server, the others are unaffected, and the server
// keeps serving, also after calls whose gRPC deadline passed while they waited.
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/async_calls.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/random.h"

namespace moe::integration {
namespace {

class DeadlineTest : public SharedServerTest<DeadlineTest> {
 public:
  static std::vector<std::string> ServerArgs() { return OneRequestPerBatchArgs(); }

 protected:
  static constexpr int kFillers = 40;

  // Starts kFillers requests (a batch each, one after the other) and waits until the first has
  // finished, so that the queue is busy for a while.
  void FillQueue(AsyncCalls& calls, std::mt19937_64& rng) {
    for (int i = 0; i < kFillers; ++i) calls.Start(OneBatchRequest(rng));
    ASSERT_TRUE(calls.WaitForFinished(1));
  }

  void ExpectFillersOk(AsyncCalls& calls) {
    for (int i = 0; i < kFillers; ++i) {
      EXPECT_THAT(calls.status(i), GrpcOk()) << "filler " << i;
    }
  }

  void ExpectStillServing(std::mt19937_64& rng) {
    inference::ModelInferResponse response;
    EXPECT_THAT(Infer(stub(), OneBatchRequest(rng), &response), GrpcOk());
  }
};

TEST_F(DeadlineTest, TimeoutParameterExpiringInTheQueueIsDeadlineExceeded) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  AsyncCalls calls(stub());
  ASSERT_NO_FATAL_FAILURE(FillQueue(calls, rng));
  const size_t late = calls.Start(OneBatchRequest(rng, {.timeout_us = 1000}), absl::Seconds(60));
  ASSERT_TRUE(calls.WaitAll());
  // The gRPC deadline was a minute away: the server itself said DEADLINE_EXCEEDED.
  EXPECT_EQ(calls.status(late).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << Describe(calls.status(late)) << " (latency " << absl::FormatDuration(calls.latency(late))
      << ")";
  EXPECT_LT(calls.latency(late), absl::Seconds(30));
  ExpectFillersOk(calls);
  ExpectStillServing(rng);
}

// A 5 ms client deadline gives DEADLINE_EXCEEDED on the client's side whatever the server does,
// so this checks only that the server copes with calls whose deadline passes while they wait:
// the fillers are answered and it keeps serving. That such a request leaves the queue without
// being computed is checked in-process, where the queue can be held and inspected
// (kserve_service_test's DeadlineInTheQueueIsExceededAndNeverComputed, batch_scheduler_test).
TEST_F(DeadlineTest, GrpcDeadlineExpiringInTheQueueLeavesTheServerServing) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  AsyncCalls calls(stub());
  ASSERT_NO_FATAL_FAILURE(FillQueue(calls, rng));
  const size_t late = calls.Start(OneBatchRequest(rng), absl::Milliseconds(5));  // client-side
  ASSERT_TRUE(calls.WaitAll());
  EXPECT_EQ(calls.status(late).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << Describe(calls.status(late));
  ExpectFillersOk(calls);
  ExpectStillServing(rng);
}

TEST_F(DeadlineTest, GenerousTimeoutParameterIsMet) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  AsyncCalls calls(stub());
  ASSERT_NO_FATAL_FAILURE(FillQueue(calls, rng));
  const size_t patient = calls.Start(OneBatchRequest(rng, {.timeout_us = 60'000'000}));
  ASSERT_TRUE(calls.WaitAll());
  EXPECT_THAT(calls.status(patient), GrpcOk());
  ExpectFillersOk(calls);
}

TEST_F(DeadlineTest, ManyExpiringRequestsLeaveTheServerServing) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  AsyncCalls calls(stub());
  ASSERT_NO_FATAL_FAILURE(FillQueue(calls, rng));
  for (int i = 0; i < 40; ++i) calls.Start(OneBatchRequest(rng, {.timeout_us = 500}));
  ASSERT_TRUE(calls.WaitAll());
  int expired = 0;
  for (size_t i = kFillers; i < calls.size(); ++i) {
    const grpc::Status& status = calls.status(i);
    EXPECT_TRUE(status.ok() || status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
        << Describe(status);
    expired += status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
  }
  EXPECT_GT(expired, 0);
  ExpectFillersOk(calls);
  ExpectStillServing(rng);
}

}  // namespace
}  // namespace moe::integration
