#include "server/scheduler/batch_scheduler.h"

#include <atomic>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_model.h"
#include "tests/testing/status_matchers.h"

namespace moe::scheduler {
namespace {

using ::moe::testing::FakeModel;
using ::moe::testing::StatusIs;
using ::testing::HasSubstr;

// The outcome of one request, filled by its completion.
struct Outcome {
  absl::Notification done;
  absl::Status status;
  InferenceResult result;
};

class BatchSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override { live_before_ = InferenceRequest::LiveCount(); }
  void TearDown() override {
    scheduler_.reset();
    EXPECT_EQ(InferenceRequest::LiveCount(), live_before_)
        << "every request object must be released whatever its outcome";
  }

  void Start(SchedulerOptions options) {
    auto model = std::make_unique<FakeModel>();
    model_ = model.get();
    absl::StatusOr<std::unique_ptr<BatchScheduler>> scheduler =
        BatchScheduler::Create(std::move(model), options);
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    scheduler_ = std::move(*scheduler);
  }

  // Rows whose first value is `tag + r` so every row of every request differs.
  static std::vector<float> Rows(int64_t rows, float tag) {
    std::vector<float> input(rows * FakeModel::kInputWidth);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < FakeModel::kInputWidth; ++c) {
        input[r * FakeModel::kInputWidth + c] = tag + r + 0.25f * c;
      }
    }
    return input;
  }

  absl::StatusOr<RequestTicket> Submit(Outcome* outcome, int64_t rows, float tag,
                                       absl::Time deadline = absl::InfiniteFuture(),
                                       int64_t priority = 0, bool routing = false) {
    auto request =
        std::make_unique<InferenceRequest>(Rows(rows, tag), rows, routing, deadline, priority,
                                           [outcome](absl::Status status, InferenceResult result) {
                                             outcome->status = std::move(status);
                                             outcome->result = std::move(result);
                                             outcome->done.Notify();
                                           });
    return scheduler_->Submit(std::move(request));
  }

  // One request running in a held batch (model_ blocked in Run), one more queued behind it.
  void RunOneQueueOne(Outcome* running, Outcome* queued) {
    model_->Hold();
    ASSERT_TRUE(Submit(running, 1, 1).ok());
    model_->AwaitBatchesStarted(1);
    ASSERT_TRUE(Submit(queued, 1, 2).ok());
  }

  // Releases the held batch once `queued` has completed: shutdown paths complete abandoned
  // requests before they wait for the running batch.
  std::thread ReleaseOnceCompleted(Outcome* queued) {
    return std::thread([this, queued] {
      queued->done.WaitForNotificationWithTimeout(absl::Seconds(30));
      model_->Release();
    });
  }

  int64_t live_before_ = 0;
  FakeModel* model_ = nullptr;
  std::unique_ptr<BatchScheduler> scheduler_;
};

TEST_F(BatchSchedulerTest, RequestsQueuedWhileABatchRunsShareTheNextBatch) {
  Start({.max_batch_rows = 64});
  model_->Hold();
  Outcome first;
  ASSERT_TRUE(Submit(&first, 1, 100).ok());
  model_->AwaitBatchesStarted(1);
  std::vector<Outcome> rest(5);
  const int64_t sizes[] = {1, 3, 2, 5, 1};
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Submit(&rest[i], sizes[i], 10.0f * i).ok());
  model_->Release();
  first.done.WaitForNotification();
  for (auto& outcome : rest) outcome.done.WaitForNotification();
  EXPECT_THAT(model_->batch_sizes(), ::testing::ElementsAre(1, 12));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(rest[i].status.ok()) << rest[i].status;
    EXPECT_EQ(rest[i].result.batch_rows, 12);
    EXPECT_EQ(rest[i].result.batch_requests, 5);
  }
}

TEST_F(BatchSchedulerTest, EachRequestGetsExactlyItsOwnRowsBack) {
  Start({.max_batch_rows = 16});
  model_->Hold();
  Outcome blocker;
  ASSERT_TRUE(Submit(&blocker, 1, -1).ok());
  model_->AwaitBatchesStarted(1);
  const int64_t sizes[] = {3, 1, 4, 1, 5, 9, 2, 6};
  std::vector<Outcome> outcomes(8);
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(Submit(&outcomes[i], sizes[i], 100.0f * (i + 1), absl::InfiniteFuture(), 0,
                       /*routing=*/i % 2 == 0)
                    .ok());
  }
  model_->Release();
  for (int i = 0; i < 8; ++i) {
    outcomes[i].done.WaitForNotification();
    ASSERT_TRUE(outcomes[i].status.ok()) << outcomes[i].status;
    const std::vector<float> input = Rows(sizes[i], 100.0f * (i + 1));
    const InferenceResult& result = outcomes[i].result;
    ASSERT_EQ(result.output.size(), static_cast<size_t>(sizes[i] * FakeModel::kOutputWidth));
    for (int64_t r = 0; r < sizes[i]; ++r) {
      const std::vector<float> expected = FakeModel::Expected(&input[r * FakeModel::kInputWidth]);
      for (int64_t c = 0; c < FakeModel::kOutputWidth; ++c) {
        EXPECT_EQ(result.output[r * FakeModel::kOutputWidth + c], expected[c])
            << "request " << i << " row " << r << " column " << c;
      }
    }
    if (i % 2 == 0) {
      ASSERT_EQ(result.topk_ids.size(),
                static_cast<size_t>(sizes[i] * FakeModel::kLayers * FakeModel::kTopK));
      for (int64_t r = 0; r < sizes[i]; ++r) {
        EXPECT_EQ(result.topk_ids[r * FakeModel::kLayers * FakeModel::kTopK + 1],
                  FakeModel::ExpectedExpert(&input[r * FakeModel::kInputWidth], 0, 1));
      }
    } else {
      EXPECT_TRUE(result.topk_ids.empty()) << "routing only when asked for";
    }
  }
  // 3+1+4+1+5 = 14 rows fit in 16; the 9-row request starts the next batch (9+2), then 6.
  EXPECT_THAT(model_->batch_sizes(), ::testing::ElementsAre(1, 14, 11, 6));
}

TEST_F(BatchSchedulerTest, QueueFullReturnsResourceExhausted) {
  Start({.max_batch_rows = 1, .max_queue_requests = 2});
  model_->Hold();
  Outcome running, a, b, refused;
  ASSERT_TRUE(Submit(&running, 1, 1).ok());
  model_->AwaitBatchesStarted(1);
  ASSERT_TRUE(Submit(&a, 1, 2).ok());
  ASSERT_TRUE(Submit(&b, 1, 3).ok());
  EXPECT_THAT(Submit(&refused, 1, 4).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("--max-queue")));
  model_->Release();
  a.done.WaitForNotification();
  b.done.WaitForNotification();
  EXPECT_TRUE(a.status.ok());
  EXPECT_EQ(scheduler_->stats().rejected_full, 1);
}

TEST_F(BatchSchedulerTest, RequestLargerThanABatchIsRefused) {
  Start({.max_batch_rows = 4});
  Outcome outcome;
  EXPECT_THAT(Submit(&outcome, 5, 0).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 4 rows")));
}

TEST_F(BatchSchedulerTest, DeadlinePassedInTheQueueIsNeverComputed) {
  Start({.max_batch_rows = 8});
  model_->Hold();
  Outcome running, late, on_time;
  ASSERT_TRUE(Submit(&running, 1, 1).ok());
  model_->AwaitBatchesStarted(1);
  ASSERT_TRUE(Submit(&late, 1, 777, absl::Now() + absl::Milliseconds(20)).ok());
  ASSERT_TRUE(Submit(&on_time, 1, 5).ok());
  absl::SleepFor(absl::Milliseconds(60));
  model_->Release();
  late.done.WaitForNotification();
  on_time.done.WaitForNotification();
  EXPECT_THAT(late.status, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_TRUE(on_time.status.ok());
  EXPECT_THAT(model_->seen_first_values(), ::testing::Not(::testing::Contains(777.0f)));
  EXPECT_EQ(scheduler_->stats().expired, 1);
}

TEST_F(BatchSchedulerTest, CancelFreesTheQueuedPlaceAtOnce) {
  Start({.max_batch_rows = 1, .max_queue_requests = 1});
  model_->Hold();
  Outcome running, cancelled, next;
  ASSERT_TRUE(Submit(&running, 1, 1).ok());
  model_->AwaitBatchesStarted(1);
  absl::StatusOr<RequestTicket> ticket = Submit(&cancelled, 1, 555);
  ASSERT_TRUE(ticket.ok());
  EXPECT_THAT(Submit(&next, 1, 3).status(), StatusIs(absl::StatusCode::kResourceExhausted));
  scheduler_->Cancel(*ticket);
  ASSERT_TRUE(cancelled.done.HasBeenNotified()) << "cancellation completes the request at once";
  EXPECT_THAT(cancelled.status, StatusIs(absl::StatusCode::kCancelled));
  ASSERT_TRUE(Submit(&next, 1, 3).ok()) << "the cancelled request's place is free";
  model_->Release();
  next.done.WaitForNotification();
  EXPECT_TRUE(next.status.ok());
  EXPECT_THAT(model_->seen_first_values(), ::testing::Not(::testing::Contains(555.0f)));
}

TEST_F(BatchSchedulerTest, HigherPriorityRunsFirst) {
  Start({.max_batch_rows = 1});
  model_->Hold();
  Outcome running, normal, urgent;
  ASSERT_TRUE(Submit(&running, 1, 1).ok());
  model_->AwaitBatchesStarted(1);
  ASSERT_TRUE(Submit(&normal, 1, 20).ok());
  ASSERT_TRUE(Submit(&urgent, 1, 30, absl::InfiniteFuture(), /*priority=*/1).ok());
  model_->Release();
  normal.done.WaitForNotification();
  urgent.done.WaitForNotification();
  EXPECT_THAT(model_->seen_first_values(), ::testing::ElementsAre(1.0f, 30.0f, 20.0f));
}

TEST_F(BatchSchedulerTest, EngineFailureFailsThatBatchWithInternalAndServingGoesOn) {
  Start({.max_batch_rows = 8});
  model_->Hold();
  Outcome running, failing_a, failing_b, after;
  ASSERT_TRUE(Submit(&running, 1, 1).ok());
  model_->AwaitBatchesStarted(1);
  ASSERT_TRUE(Submit(&failing_a, 2, 10).ok());
  ASSERT_TRUE(Submit(&failing_b, 1, 20).ok());
  model_->FailBatchNumber(2);
  model_->Release();
  running.done.WaitForNotification();
  EXPECT_TRUE(running.status.ok());
  failing_a.done.WaitForNotification();
  failing_b.done.WaitForNotification();
  EXPECT_THAT(failing_a.status,
              StatusIs(absl::StatusCode::kInternal, HasSubstr("injected engine failure")));
  EXPECT_THAT(failing_b.status, StatusIs(absl::StatusCode::kInternal));
  ASSERT_TRUE(Submit(&after, 1, 30).ok());
  after.done.WaitForNotification();
  EXPECT_TRUE(after.status.ok()) << after.status;
  EXPECT_EQ(scheduler_->stats().failed, 2);
}

TEST_F(BatchSchedulerTest, DrainFinishesQueuedWorkAndRefusesNewWork) {
  Start({.max_batch_rows = 1});
  model_->Hold();
  std::vector<Outcome> outcomes(4);
  ASSERT_TRUE(Submit(&outcomes[0], 1, 1).ok());
  model_->AwaitBatchesStarted(1);
  for (int i = 1; i < 4; ++i) ASSERT_TRUE(Submit(&outcomes[i], 1, i + 1).ok());
  scheduler_->BeginDrain();
  Outcome refused;
  EXPECT_THAT(Submit(&refused, 1, 9).status(), StatusIs(absl::StatusCode::kUnavailable));
  model_->Release();
  EXPECT_TRUE(scheduler_->FinishDrain(absl::Seconds(30)));
  for (auto& outcome : outcomes) {
    ASSERT_TRUE(outcome.done.HasBeenNotified());
    EXPECT_TRUE(outcome.status.ok()) << outcome.status;
  }
}

TEST_F(BatchSchedulerTest, DrainTimeoutFailsWhatIsStillQueuedWithUnavailable) {
  Start({.max_batch_rows = 1});
  Outcome running, queued;
  ASSERT_NO_FATAL_FAILURE(RunOneQueueOne(&running, &queued));
  std::thread releaser = ReleaseOnceCompleted(&queued);
  EXPECT_FALSE(scheduler_->FinishDrain(absl::Milliseconds(20)));
  releaser.join();
  EXPECT_THAT(queued.status, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("drain")));
  EXPECT_TRUE(running.status.ok()) << "the running batch still finishes";
}

TEST_F(BatchSchedulerTest, QueueDelayHoldsWorkBackToFillABatch) {
  Start({.max_batch_rows = 4, .max_queue_delay = absl::Seconds(5)});
  std::vector<Outcome> outcomes(4);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(Submit(&outcomes[i], 1, i).ok());
  for (auto& outcome : outcomes) outcome.done.WaitForNotification();
  EXPECT_THAT(model_->batch_sizes(), ::testing::ElementsAre(4))
      << "with a long delay the scheduler waits until the batch is full";
}

TEST_F(BatchSchedulerTest, QueueDelayIsABoundNotAWaitForAFullBatch) {
  Start({.max_batch_rows = 64, .max_queue_delay = absl::Milliseconds(30)});
  Outcome outcome;
  const absl::Time start = absl::Now();
  ASSERT_TRUE(Submit(&outcome, 1, 0).ok());
  outcome.done.WaitForNotification();
  EXPECT_TRUE(outcome.status.ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(25));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(BatchSchedulerTest, QueueDelayEndsOnceAsManyRowsAsRecentBatchesAreQueued) {
  Start({.max_batch_rows = 64, .max_queue_delay = absl::Seconds(2)});
  // No history yet: the first pair waits for a full batch, i.e. the whole delay.
  std::vector<Outcome> first(2), second(2);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(Submit(&first[i], 1, i).ok());
  for (auto& outcome : first) outcome.done.WaitForNotification();
  // The last batch held 2 rows: two queued rows end the hold at once.
  const absl::Time start = absl::Now();
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(Submit(&second[i], 1, 10 + i).ok());
  for (auto& outcome : second) outcome.done.WaitForNotification();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << "the hold should end when 2 rows queue";
  EXPECT_THAT(model_->batch_sizes(), ::testing::ElementsAre(2, 2));
}

TEST_F(BatchSchedulerTest, DestroyingTheSchedulerCompletesQueuedRequests) {
  Start({.max_batch_rows = 1});
  Outcome running, queued;
  ASSERT_NO_FATAL_FAILURE(RunOneQueueOne(&running, &queued));
  std::thread releaser = ReleaseOnceCompleted(&queued);
  scheduler_.reset();
  releaser.join();
  EXPECT_TRUE(queued.done.HasBeenNotified());
  EXPECT_THAT(queued.status, StatusIs(absl::StatusCode::kUnavailable));
}

}  // namespace
}  // namespace moe::scheduler
