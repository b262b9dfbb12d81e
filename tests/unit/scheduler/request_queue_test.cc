#include "server/scheduler/request_queue.h"

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace moe::scheduler {
namespace {

using ::moe::testing::StatusIs;

std::unique_ptr<InferenceRequest> MakeRequest(int64_t rows, int64_t priority = 0,
                                              absl::Time deadline = absl::InfiniteFuture(),
                                              float tag = 0) {
  return std::make_unique<InferenceRequest>(std::vector<float>(rows, tag), rows, false, deadline,
                                            priority, nullptr);
}

float TagOf(const InferenceRequest& request) { return request.input()[0]; }

TEST(RequestQueueTest, FullQueueReturnsResourceExhausted) {
  RequestQueue queue(2);
  ASSERT_TRUE(queue.Push(MakeRequest(1)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(1)).ok());
  EXPECT_THAT(queue.Push(MakeRequest(1)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::HasSubstr("full")));
  EXPECT_EQ(queue.size(), 2);
}

TEST(RequestQueueTest, RemoveFreesThePlaceAndItsRows) {
  RequestQueue queue(1);
  absl::StatusOr<RequestTicket> ticket = queue.Push(MakeRequest(3));
  ASSERT_TRUE(ticket.ok());
  EXPECT_EQ(queue.queued_rows(), 3);
  EXPECT_NE(queue.Remove(*ticket), nullptr);
  EXPECT_EQ(queue.Remove(*ticket), nullptr) << "a request is removed once";
  EXPECT_EQ(queue.queued_rows(), 0);
  EXPECT_TRUE(queue.Push(MakeRequest(1)).ok());
}

TEST(RequestQueueTest, BatchTakesArrivalOrderUpToTheRowBudget) {
  RequestQueue queue(10);
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(queue.Push(MakeRequest(2, 0, absl::InfiniteFuture(), i)).ok());
  std::vector<std::unique_ptr<InferenceRequest>> batch, expired;
  queue.TakeBatch(5, absl::Now(), &batch, &expired);
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(TagOf(*batch[0]), 0);
  EXPECT_EQ(TagOf(*batch[1]), 1);
  EXPECT_TRUE(expired.empty());
  EXPECT_EQ(queue.queued_rows(), 4);
}

TEST(RequestQueueTest, LargeRequestAtTheHeadIsNotOvertaken) {
  RequestQueue queue(10);
  ASSERT_TRUE(queue.Push(MakeRequest(3, 0, absl::InfiniteFuture(), 0)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(4, 0, absl::InfiniteFuture(), 1)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(1, 0, absl::InfiniteFuture(), 2)).ok());
  std::vector<std::unique_ptr<InferenceRequest>> batch, expired;
  queue.TakeBatch(4, absl::Now(), &batch, &expired);
  ASSERT_EQ(batch.size(), 1u) << "the 4-row request must go next, not the 1-row one behind it";
  EXPECT_EQ(TagOf(*batch[0]), 0);
}

TEST(RequestQueueTest, ExplicitPriorityGoesBeforeDefaultAndLowerLevelFirst) {
  RequestQueue queue(10);
  ASSERT_TRUE(queue.Push(MakeRequest(1, 0, absl::InfiniteFuture(), 0)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(1, 2, absl::InfiniteFuture(), 1)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(1, 1, absl::InfiniteFuture(), 2)).ok());
  std::vector<std::unique_ptr<InferenceRequest>> batch, expired;
  queue.TakeBatch(10, absl::Now(), &batch, &expired);
  ASSERT_EQ(batch.size(), 3u);
  EXPECT_EQ(TagOf(*batch[0]), 2);
  EXPECT_EQ(TagOf(*batch[1]), 1);
  EXPECT_EQ(TagOf(*batch[2]), 0);
}

TEST(RequestQueueTest, ExpiredRequestsAreSetAsideWithoutCostingRows) {
  RequestQueue queue(10);
  const absl::Time now = absl::Now();
  ASSERT_TRUE(queue.Push(MakeRequest(2, 0, now - absl::Milliseconds(1), 0)).ok());
  ASSERT_TRUE(queue.Push(MakeRequest(2, 0, now + absl::Hours(1), 1)).ok());
  std::vector<std::unique_ptr<InferenceRequest>> batch, expired;
  queue.TakeBatch(2, now, &batch, &expired);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(TagOf(*expired[0]), 0);
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(TagOf(*batch[0]), 1);
  EXPECT_TRUE(queue.empty());
}

}  // namespace
}  // namespace moe::scheduler
