// The "priority" request parameter: a priority-1 request (the highest) overtakes queued
// requests of the default priority.
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

class PriorityTest : public SharedServerTest<PriorityTest> {
 public:
  static std::vector<std::string> ServerArgs() { return OneRequestPerBatchArgs(); }
};

TEST_F(PriorityTest, HighPriorityRequestOvertakesQueuedDefaultOnes) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  constexpr int kFillers = 60;
  AsyncCalls calls(stub());
  for (int i = 0; i < kFillers; ++i) calls.Start(OneBatchRequest(rng));
  ASSERT_TRUE(calls.WaitForFinished(2));
  const size_t waiting = kFillers - calls.finished();
  const size_t urgent = calls.Start(OneBatchRequest(rng, {.priority = 1}));
  ASSERT_TRUE(calls.WaitAll());
  ASSERT_THAT(calls.status(urgent), GrpcOk());
  size_t finished_later = 0;
  for (int i = 0; i < kFillers; ++i) {
    ASSERT_THAT(calls.status(i), GrpcOk()) << "filler " << i;
    finished_later += calls.finish_time(i) > calls.finish_time(urgent);
  }
  ASSERT_GT(waiting, 10u) << "the fillers ran too fast to queue; the test proves nothing";
  // It should run next; allow for fillers still on their way into the queue.
  EXPECT_GE(finished_later, waiting / 2)
      << waiting << " fillers were waiting when the priority-1 request came";
}

TEST_F(PriorityTest, ExplicitDefaultPriorityKeepsItsPlaceInTheQueue) {
  // "priority": 0 is the default level, the same as no parameter: first come, first served.
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  constexpr int kFillers = 40;
  AsyncCalls calls(stub());
  for (int i = 0; i < kFillers; ++i) calls.Start(OneBatchRequest(rng));
  ASSERT_TRUE(calls.WaitForFinished(2));
  const size_t waiting = kFillers - calls.finished();
  const size_t explicit_default = calls.Start(OneBatchRequest(rng, {.priority = 0}));
  ASSERT_TRUE(calls.WaitAll());
  ASSERT_THAT(calls.status(explicit_default), GrpcOk());
  size_t finished_later = 0;
  for (int i = 0; i < kFillers; ++i) {
    finished_later += calls.finish_time(i) > calls.finish_time(explicit_default);
  }
  ASSERT_GT(waiting, 10u) << "the fillers ran too fast to queue; the test proves nothing";
  EXPECT_LE(finished_later, 2u) << "a priority-0 request overtook " << finished_later
                                << " default-priority ones";
}

TEST_F(PriorityTest, AnyExplicitLevelOvertakesTheDefault) {
  // The default level sorts after every explicit one (as in Triton): level 5 is low, but not
  // as low as no priority at all.
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  constexpr int kFillers = 60;
  AsyncCalls calls(stub());
  for (int i = 0; i < kFillers; ++i) calls.Start(OneBatchRequest(rng));
  ASSERT_TRUE(calls.WaitForFinished(2));
  const size_t waiting = kFillers - calls.finished();
  const size_t level5 = calls.Start(OneBatchRequest(rng, {.priority = 5}));
  ASSERT_TRUE(calls.WaitAll());
  ASSERT_THAT(calls.status(level5), GrpcOk());
  size_t finished_later = 0;
  for (int i = 0; i < kFillers; ++i) {
    finished_later += calls.finish_time(i) > calls.finish_time(level5);
  }
  ASSERT_GT(waiting, 10u) << "the fillers ran too fast to queue; the test proves nothing";
  EXPECT_GE(finished_later, waiting / 2)
      << waiting << " fillers were waiting when the priority-5 request came";
}

}  // namespace
}  // namespace moe::integration
