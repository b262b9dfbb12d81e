// The "priority" request parameter: a priority-1 request (the highest) overtakes queued
// requests of the default priority.
#include <cstdint>
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

 protected:
  // What happened to one request of `priority` sent behind `fillers` default-priority ones.
  struct Probe {
    size_t waiting = 0;         // fillers not yet answered when the probe was sent
    size_t finished_later = 0;  // fillers answered after the probe
  };

  // Queues `fillers` default-priority requests, sends the probe once two have been answered,
  // and counts the fillers answered after it. Every call must succeed.
  void SendBehindFillers(int fillers, int64_t priority, Probe* probe) {
    const uint64_t seed = testing::FreshSeed();
    SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
    std::mt19937_64 rng(seed);
    AsyncCalls calls(stub());
    for (int i = 0; i < fillers; ++i) calls.Start(OneBatchRequest(rng));
    ASSERT_TRUE(calls.WaitForFinished(2));
    probe->waiting = fillers - calls.finished();
    const size_t sent = calls.Start(OneBatchRequest(rng, {.priority = priority}));
    ASSERT_TRUE(calls.WaitAll());
    ASSERT_THAT(calls.status(sent), GrpcOk());
    for (int i = 0; i < fillers; ++i) {
      ASSERT_THAT(calls.status(i), GrpcOk()) << "filler " << i;
      probe->finished_later += calls.finish_time(i) > calls.finish_time(sent);
    }
    ASSERT_GT(probe->waiting, 10u) << "the fillers ran too fast to queue; the test proves nothing";
  }
};

TEST_F(PriorityTest, HighPriorityRequestOvertakesQueuedDefaultOnes) {
  Probe probe;
  ASSERT_NO_FATAL_FAILURE(SendBehindFillers(60, /*priority=*/1, &probe));
  // It should run next; allow for fillers still on their way into the queue.
  EXPECT_GE(probe.finished_later, probe.waiting / 2)
      << probe.waiting << " fillers were waiting when the priority-1 request came";
}

TEST_F(PriorityTest, ExplicitDefaultPriorityKeepsItsPlaceInTheQueue) {
  // "priority": 0 is the default level, the same as no parameter: first come, first served.
  Probe probe;
  ASSERT_NO_FATAL_FAILURE(SendBehindFillers(40, /*priority=*/0, &probe));
  EXPECT_LE(probe.finished_later, 2u)
      << "a priority-0 request overtook " << probe.finished_later << " default-priority ones";
}

TEST_F(PriorityTest, AnyExplicitLevelOvertakesTheDefault) {
  // The default level sorts after every explicit one (as in Triton): level 5 is low, but not
  // as low as no priority at all.
  Probe probe;
  ASSERT_NO_FATAL_FAILURE(SendBehindFillers(60, /*priority=*/5, &probe));
  EXPECT_GE(probe.finished_later, probe.waiting / 2)
      << probe.waiting << " fillers were waiting when the priority-5 request came";
}

}  // namespace
}  // namespace moe::integration
