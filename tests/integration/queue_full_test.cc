// Back-pressure: past --max-queue queued requests the server answers RESOURCE_EXHAUSTED at once
// instead of queueing without bound, and serves again as soon as the queue has room.
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

using ::testing::Ge;
using ::testing::HasSubstr;

class QueueFullTest : public SharedServerTest<QueueFullTest> {
 public:
  // One row per batch and room for two queued requests: a burst of one-row requests overflows.
  static std::vector<std::string> ServerArgs() {
    std::vector<std::string> args = SyntheticModelFlag();
    for (const char* flag : {"--max-queue", "2", "--max-batch-tokens", "1"}) args.push_back(flag);
    return args;
  }
};

TEST_F(QueueFullTest, QueueFullReturnsResourceExhausted) {
  std::mt19937_64 rng(testing::FreshSeed());
  constexpr int kCalls = 48;
  AsyncCalls calls(stub());
  for (int i = 0; i < kCalls; ++i) {
    calls.Start(
        MakeInferRequest(kSynthetic, UniformRows(rng, 1, kSyntheticWidth), 1, kSyntheticWidth));
  }
  ASSERT_TRUE(calls.WaitAll(absl::Seconds(120)));
  int ok = 0, exhausted = 0;
  for (size_t i = 0; i < calls.size(); ++i) {
    const grpc::Status& status = calls.status(i);
    if (status.ok()) {
      ++ok;
    } else if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++exhausted;
      EXPECT_THAT(status.error_message(), HasSubstr("queue")) << Describe(status);
    } else {
      ADD_FAILURE() << "call " << i << ": " << Describe(status);
    }
  }
  EXPECT_GT(exhausted, 0) << "no call was refused with " << kCalls
                          << " one-row calls at once and --max-queue 2";
  // At least the queue's worth were accepted (a burst can fill it before the first is taken).
  EXPECT_GE(ok, 2);
}

TEST_F(QueueFullTest, ServesAgainOnceTheBurstIsOver) {
  std::mt19937_64 rng(testing::FreshSeed());
  {
    AsyncCalls calls(stub());
    for (int i = 0; i < 32; ++i) {
      calls.Start(
          MakeInferRequest(kSynthetic, UniformRows(rng, 1, kSyntheticWidth), 1, kSyntheticWidth));
    }
    ASSERT_TRUE(calls.WaitAll(absl::Seconds(120)));
  }
  // Sequential calls never find the queue full.
  for (int i = 0; i < 5; ++i) {
    inference::ModelInferResponse response;
    EXPECT_THAT(Infer(stub(),
                      MakeInferRequest(kSynthetic, UniformRows(rng, 1, kSyntheticWidth), 1,
                                       kSyntheticWidth),
                      &response),
                GrpcOk());
  }
}

}  // namespace
}  // namespace moe::integration
