// GenerationScheduler on a real decoder (the Mixtral reference checkpoint): admission limits,
// static against continuous batching, preemption under a tiny KV cache, cancellation of waiting
// and running sequences, drains, and every refusal at Submit.
#include "server/scheduler/generation_scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "server/engine/decoder/decoder_model.h"
#include "server/engine/moe_backend.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/decoder/fake_device_backend.h"

namespace moe::scheduler {
namespace {

constexpr char kFixture[] = MOE_SOURCE_DIR "/tests/fixtures/mixtral-tiny-bf16";

// Collects one sequence's output; Wait() returns once it finished.
class CollectingSink : public GenerationSink {
 public:
  void OnTokens(std::span<const int32_t> ids, std::span<const float>) override {
    absl::MutexLock lock(&mu_);
    if (tokens_.empty()) first_token_at_ = absl::Now();
    last_token_at_ = absl::Now();
    tokens_.insert(tokens_.end(), ids.begin(), ids.end());
    if (first_token_ != nullptr && !first_token_->HasBeenNotified()) first_token_->Notify();
  }
  void OnFinished(const absl::Status& status, const GenerationSummary& summary) override {
    {
      absl::MutexLock lock(&mu_);
      status_ = status;
      summary_ = summary;
      finished_at_ = absl::Now();
    }
    done_.Notify();
  }
  void NotifyOnFirstToken(absl::Notification* n) { first_token_ = n; }
  bool Wait(absl::Duration timeout = absl::Seconds(60)) {
    return done_.WaitForNotificationWithTimeout(timeout);
  }
  absl::Status status() const {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  std::vector<int32_t> tokens() const {
    absl::MutexLock lock(&mu_);
    return tokens_;
  }
  GenerationSummary summary() const {
    absl::MutexLock lock(&mu_);
    return summary_;
  }
  absl::Time first_token_at() const {
    absl::MutexLock lock(&mu_);
    return first_token_at_;
  }
  absl::Time last_token_at() const {
    absl::MutexLock lock(&mu_);
    return last_token_at_;
  }
  absl::Time finished_at() const {
    absl::MutexLock lock(&mu_);
    return finished_at_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<int32_t> tokens_;
  absl::Status status_;
  GenerationSummary summary_;
  absl::Time first_token_at_ = absl::InfiniteFuture();
  absl::Time last_token_at_ = absl::InfiniteFuture();
  absl::Time finished_at_ = absl::InfiniteFuture();
  absl::Notification done_;
  absl::Notification* first_token_ = nullptr;
};

// A CollectingSink that blocks the scheduler thread in the OnTokens that brings its `hold_at`-th
// token (the first by default) until Release().
class HoldingSink : public CollectingSink {
 public:
  explicit HoldingSink(size_t hold_at = 1) : hold_at_(hold_at) {}
  void OnTokens(std::span<const int32_t> ids, std::span<const float> logprobs) override {
    CollectingSink::OnTokens(ids, logprobs);
    if (!holding_.HasBeenNotified() && tokens().size() >= hold_at_) {
      holding_.Notify();
      released_.WaitForNotification();
    }
  }
  void WaitUntilHolding() { holding_.WaitForNotification(); }
  // Idempotent: the tests' cleanup releases again, in case a failure skipped the release.
  void Release() {
    if (!released_.HasBeenNotified()) released_.Notify();
  }

 private:
  const size_t hold_at_;
  absl::Notification holding_;
  absl::Notification released_;
};

// A CollectingSink whose OnFinished blocks its caller until Release().
class BlockingFinishSink : public CollectingSink {
 public:
  void OnFinished(const absl::Status& status, const GenerationSummary& summary) override {
    finishing_.Notify();
    released_.WaitForNotification();
    CollectingSink::OnFinished(status, summary);
  }
  void WaitUntilFinishing() { finishing_.WaitForNotification(); }
  void Release() {
    if (!released_.HasBeenNotified()) released_.Notify();
  }

 private:
  absl::Notification finishing_;
  absl::Notification released_;
};

class GenerationSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override { backend_ = engine::CreateCpuBackend(); }

  std::unique_ptr<GenerationScheduler> Make(GenerationOptions options) {
    absl::StatusOr<std::unique_ptr<engine::DecoderModel>> model =
        engine::DecoderModel::Load(kFixture, backend_.get());
    EXPECT_TRUE(model.ok()) << model.status();
    if (!model.ok()) return nullptr;
    if (options.kv_cache_bytes == 0) options.kv_cache_bytes = 1 << 22;
    options.model_name = "mix";
    absl::StatusOr<std::unique_ptr<GenerationScheduler>> scheduler =
        GenerationScheduler::Create(std::move(*model), options);
    EXPECT_TRUE(scheduler.ok()) << scheduler.status();
    return scheduler.ok() ? std::move(*scheduler) : nullptr;
  }

  static std::unique_ptr<GenerationRequest> Request(CollectingSink* sink, int64_t max_new,
                                                    std::vector<int32_t> prompt = {5, 6, 7}) {
    auto request = std::make_unique<GenerationRequest>();
    request->prompt = std::move(prompt);
    request->max_new_tokens = max_new;
    request->sink = sink;
    return request;
  }

  // Static batching admits a batch only once the previous one has ended. A holding sequence,
  // whose sink blocks the scheduler thread in its first OnTokens until the test has queued its
  // requests and cancelled it, makes the next batch out of exactly those requests however the
  // threads are timed. Returns its id.
  static SequenceId HoldStaticAdmission(GenerationScheduler& scheduler, HoldingSink* holder) {
    absl::StatusOr<SequenceId> id =
        scheduler.Submit(Request(holder, scheduler.max_model_len() - 2, {1, 2}));
    EXPECT_TRUE(id.ok()) << id.status();
    holder->WaitUntilHolding();
    return id.value_or(0);
  }
  static void ReleaseStaticAdmission(GenerationScheduler& scheduler, SequenceId id,
                                     HoldingSink* holder) {
    scheduler.Cancel(id);  // applied before the scheduler's next pass
    holder->Release();
    ASSERT_TRUE(holder->Wait());
    EXPECT_EQ(holder->status().code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(holder->tokens().size(), 1u);
  }

  std::unique_ptr<engine::MoEBackend> backend_;
};

TEST_F(GenerationSchedulerTest, GeneratesExactlyMaxNewTokensAndFreesEveryBlock) {
  auto scheduler = Make({});
  ASSERT_NE(scheduler, nullptr);
  CollectingSink sink;
  ASSERT_TRUE(scheduler->Submit(Request(&sink, 12)).ok());
  ASSERT_TRUE(sink.Wait());
  EXPECT_TRUE(sink.status().ok()) << sink.status();
  EXPECT_EQ(sink.tokens().size(), 12u);
  EXPECT_EQ(sink.summary().finish_reason, FinishReason::kLength);
  EXPECT_EQ(sink.summary().completion_tokens, 12);
  EXPECT_EQ(scheduler->kv_free_blocks(), scheduler->kv_total_blocks());
  EXPECT_EQ(scheduler->stats().generated_tokens, 12);
}

TEST_F(GenerationSchedulerTest, SubmitRefusesWhatCanNeverRun) {
  GenerationOptions options;
  options.kv_cache_bytes = 8 * 8192;  // a few blocks of 16 tokens
  options.max_model_len = 100;
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  CollectingSink sink;
  EXPECT_THAT(scheduler->Submit(Request(&sink, 200)).status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument));  // beyond max_model_len
  // An in-process caller's count too large to add to the prompt's (UBSan checks the sum).
  EXPECT_THAT(
      scheduler->Submit(Request(&sink, std::numeric_limits<int64_t>::max())).status(),
      testing::StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("beyond")));
  const int64_t too_many = scheduler->kv_total_blocks() * 16;
  if (too_many + 3 < 100) {
    EXPECT_THAT(scheduler->Submit(Request(&sink, too_many)).status(),
                testing::StatusIs(absl::StatusCode::kInvalidArgument));  // beyond the cache
  }
  EXPECT_THAT(scheduler->Submit(Request(&sink, 1, {})).status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument));  // empty prompt
}

TEST_F(GenerationSchedulerTest, QueueFullIsResourceExhausted) {
  GenerationOptions options;
  options.max_queue_requests = 2;
  options.max_running_sequences = 1;
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  std::vector<std::unique_ptr<CollectingSink>> sinks;
  int refused = 0;
  for (int i = 0; i < 20; ++i) {
    sinks.push_back(std::make_unique<CollectingSink>());
    absl::StatusOr<SequenceId> id = scheduler->Submit(Request(sinks.back().get(), 200));
    if (!id.ok()) {
      EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted);
      ++refused;
      sinks.pop_back();
    }
  }
  EXPECT_GT(refused, 0);
  for (auto& sink : sinks) ASSERT_TRUE(sink->Wait());
}

TEST_F(GenerationSchedulerTest, StaticBatchingPadsFinishedRowsAndEndsTheBatchTogether) {
  // b alone first: its tokens must not change for being padded in a batch.
  std::vector<int32_t> b_alone;
  {
    auto scheduler = Make({});
    ASSERT_NE(scheduler, nullptr);
    CollectingSink sink;
    ASSERT_TRUE(scheduler->Submit(Request(&sink, 5, {9, 10, 11})).ok());
    ASSERT_TRUE(sink.Wait());
    b_alone = sink.tokens();
  }
  GenerationOptions options;
  options.batching = GenerationBatching::kStatic;
  options.max_running_sequences = 2;
  // Sinks first: the scheduler, which may still call them, goes before them.
  HoldingSink holder;
  CollectingSink a, b, c;
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  const absl::Cleanup unblock = [&holder] { holder.Release(); };
  const SequenceId hold = HoldStaticAdmission(*scheduler, &holder);
  ASSERT_TRUE(scheduler->Submit(Request(&a, 60)).ok());
  ASSERT_TRUE(scheduler->Submit(Request(&b, 5, {9, 10, 11})).ok());
  ASSERT_TRUE(scheduler->Submit(Request(&c, 5)).ok());
  ReleaseStaticAdmission(*scheduler, hold, &holder);
  ASSERT_TRUE(a.Wait() && b.Wait() && c.Wait());
  EXPECT_TRUE(b.status().ok()) << b.status();
  EXPECT_EQ(b.tokens(), b_alone) << "padding leaked into the stream";
  EXPECT_EQ(b.summary().completion_tokens, 5);
  EXPECT_EQ(b.summary().finish_reason, FinishReason::kLength);
  // b's stream ended only when a's had produced its last token: finished together ...
  EXPECT_GE(b.finished_at(), a.last_token_at());
  // ... and its row was computed all the while: steps 6 to 60 of the batch, one padding token
  // each. c ran alone afterwards, unpadded.
  const GenerationStats stats = scheduler->stats();
  EXPECT_EQ(stats.padding_tokens, 55);
  EXPECT_EQ(stats.generated_tokens, 70 + static_cast<int64_t>(holder.tokens().size()));
  // Every pass's tokens: the holder's prompt (2); a's and b's prompts (6), then 59 steps of one
  // token each for both rows, b's 55 padding ones included; c's prompt and 4 decodes (7).
  EXPECT_EQ(stats.step_tokens, 2 + 6 + 59 * 2 + 7);
  EXPECT_EQ(stats.max_step_sequences, 2);
  EXPECT_GE(c.first_token_at(), a.finished_at());
  EXPECT_GE(c.first_token_at(), b.finished_at());
  EXPECT_EQ(c.tokens().size(), 5u);
  EXPECT_EQ(scheduler->kv_free_blocks(), scheduler->kv_total_blocks());
}

TEST_F(GenerationSchedulerTest, StaticBatchingStopsPaddingARowAtMaxModelLen) {
  GenerationOptions options;
  options.batching = GenerationBatching::kStatic;
  options.max_running_sequences = 2;
  options.max_model_len = 40;
  // Sinks first: the scheduler, which may still call them, goes before them.
  HoldingSink holder;
  CollectingSink a, b;
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  const absl::Cleanup unblock = [&holder] { holder.Release(); };
  const SequenceId hold = HoldStaticAdmission(*scheduler, &holder);
  ASSERT_TRUE(scheduler->Submit(Request(&a, 30)).ok());  // 3 + 30 tokens
  // 30 + 5 tokens: its row is padded from its last sampled token (the 35th) to the 40th, 6
  // steps of one token, not the 25 more a still needs.
  ASSERT_TRUE(scheduler->Submit(Request(&b, 5, std::vector<int32_t>(30, 7))).ok());
  ReleaseStaticAdmission(*scheduler, hold, &holder);
  ASSERT_TRUE(a.Wait() && b.Wait());
  EXPECT_TRUE(b.status().ok()) << b.status();
  EXPECT_EQ(b.summary().completion_tokens, 5);
  EXPECT_LT(b.finished_at(), a.last_token_at()) << "b left when its row reached 40 tokens";
  EXPECT_EQ(a.tokens().size(), 30u);
  EXPECT_EQ(scheduler->stats().padding_tokens, 6);
  EXPECT_EQ(scheduler->kv_free_blocks(), scheduler->kv_total_blocks());
}

TEST_F(GenerationSchedulerTest, StaticBatchEndsWhenOnlyPaddingRowsAreLeft) {
  GenerationOptions options;
  options.batching = GenerationBatching::kStatic;
  options.max_running_sequences = 2;
  // Sinks first: the scheduler, which may still call them, goes before them.
  HoldingSink holder;
  HoldingSink a(/*hold_at=*/8);
  CollectingSink b;
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  const absl::Cleanup unblock = [&holder, &a] {
    holder.Release();
    a.Release();
  };
  const SequenceId hold = HoldStaticAdmission(*scheduler, &holder);
  MOE_ASSERT_OK_AND_ASSIGN(const SequenceId a_id, scheduler->Submit(Request(&a, 60)));
  ASSERT_TRUE(scheduler->Submit(Request(&b, 5)).ok());
  ReleaseStaticAdmission(*scheduler, hold, &holder);
  // a holds the scheduler in the step of its 8th token; b finished at its 5th and has been a
  // padding row since: steps 6, 7 and 8 (whichever of the two rows that step handles first).
  a.WaitUntilHolding();
  scheduler->Cancel(a_id);  // applied before the scheduler's next pass
  a.Release();
  ASSERT_TRUE(a.Wait() && b.Wait());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(a.tokens().size(), 8u);
  EXPECT_TRUE(b.status().ok()) << b.status();
  EXPECT_EQ(b.summary().finish_reason, FinishReason::kLength);
  EXPECT_EQ(b.tokens().size(), 5u);
  // Nothing ran for b alone after a left.
  const GenerationStats stats = scheduler->stats();
  EXPECT_EQ(stats.padding_tokens, 3);
  EXPECT_EQ(stats.cancelled, 2);  // the holder and a
  EXPECT_EQ(scheduler->kv_free_blocks(), scheduler->kv_total_blocks());
}

TEST_F(GenerationSchedulerTest, StaticEarlyExitAdmitsNothingUntilTheBatchFinishes) {
  GenerationOptions options;
  options.batching = GenerationBatching::kStaticEarlyExit;
  options.max_running_sequences = 2;
  // Sinks first: the scheduler, which may still call them, goes before them.
  HoldingSink holder;
  CollectingSink a, b, c;
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  const absl::Cleanup unblock = [&holder] { holder.Release(); };
  const SequenceId hold = HoldStaticAdmission(*scheduler, &holder);
  ASSERT_TRUE(scheduler->Submit(Request(&a, 60)).ok());
  ASSERT_TRUE(scheduler->Submit(Request(&b, 5)).ok());
  ASSERT_TRUE(scheduler->Submit(Request(&c, 5)).ok());
  ReleaseStaticAdmission(*scheduler, hold, &holder);
  ASSERT_TRUE(a.Wait() && b.Wait() && c.Wait());
  // b left as soon as it finished ...
  EXPECT_LT(b.finished_at(), a.last_token_at());
  // ... but c could only start once a (60 tokens) had finished too: the first batch's steps
  // ran a and b together, so the largest step held 2 sequences, never 3 ...
  EXPECT_EQ(scheduler->stats().max_step_sequences, 2);
  EXPECT_EQ(scheduler->stats().padding_tokens, 0);
  // ... and c's first token came after a's last.
  EXPECT_GE(c.first_token_at(), a.finished_at());
  EXPECT_EQ(c.tokens().size(), 5u);
}

// A model whose steps run on a device gets a cache without host storage, and its device pool
// is allocated when the scheduler is made: a pool that does not fit fails Create.
TEST(GenerationSchedulerDeviceTest, CreateAllocatesTheDevicePoolAndFailsWhenItDoesNotFit) {
  testing::FakeDeviceRecord record;
  testing::FakeDeviceBackend backend(&record);
  GenerationOptions options;
  options.kv_cache_bytes = 1 << 22;
  options.model_name = "mix";
  {
    MOE_ASSERT_OK_AND_ASSIGN(auto model, engine::DecoderModel::Load(kFixture, &backend));
    MOE_ASSERT_OK_AND_ASSIGN(auto scheduler,
                             GenerationScheduler::Create(std::move(model), options));
    EXPECT_EQ(record.allocations, 1);
    ASSERT_NE(record.allocated_for, nullptr);
    EXPECT_EQ(record.allocated_for->storage(), engine::KvStorage::kNone);
    EXPECT_EQ(record.allocated_for->total_blocks(), scheduler->kv_total_blocks());
  }
  record.allocate_status = absl::ResourceExhaustedError("the KV pool does not fit");
  MOE_ASSERT_OK_AND_ASSIGN(auto model, engine::DecoderModel::Load(kFixture, &backend));
  EXPECT_THAT(GenerationScheduler::Create(std::move(model), options).status(),
              testing::StatusIs(absl::StatusCode::kResourceExhausted, ::testing::HasSubstr("fit")));
}

TEST(GenerationBatchingTest, NamesParseBackAndNothingElseParses) {
  for (GenerationBatching batching : {GenerationBatching::kContinuous, GenerationBatching::kStatic,
                                      GenerationBatching::kStaticEarlyExit}) {
    GenerationBatching parsed = GenerationBatching::kContinuous;
    EXPECT_TRUE(ParseGenerationBatching(GenerationBatchingName(batching), &parsed));
    EXPECT_EQ(parsed, batching);
  }
  GenerationBatching untouched = GenerationBatching::kStatic;
  for (const char* bad : {"", "Static", "dynamic", "static-"}) {
    EXPECT_FALSE(ParseGenerationBatching(bad, &untouched)) << bad;
  }
  EXPECT_EQ(untouched, GenerationBatching::kStatic);
}

TEST_F(GenerationSchedulerTest, ContinuousBatchingAdmitsAsPlacesFree) {
  GenerationOptions options;
  options.max_running_sequences = 2;
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  CollectingSink a, b, c;
  ASSERT_TRUE(scheduler->Submit(Request(&a, 200)).ok());
  ASSERT_TRUE(scheduler->Submit(Request(&b, 5)).ok());
  ASSERT_TRUE(scheduler->Submit(Request(&c, 5)).ok());
  ASSERT_TRUE(a.Wait() && b.Wait() && c.Wait());
  EXPECT_EQ(a.tokens().size(), 200u);
  // c took b's place while a was still generating (c runs 10 steps behind b, a 200).
  EXPECT_GE(c.first_token_at(), b.finished_at());
  EXPECT_LT(c.finished_at(), a.finished_at());
}

TEST_F(GenerationSchedulerTest, TinyCachePreemptsAndEverySequenceStillFinishesIdentically) {
  // Alone first, with plenty of cache.
  std::vector<std::vector<int32_t>> alone;
  {
    auto scheduler = Make({});
    ASSERT_NE(scheduler, nullptr);
    for (int i = 0; i < 6; ++i) {
      CollectingSink sink;
      ASSERT_TRUE(scheduler->Submit(Request(&sink, 40, {static_cast<int32_t>(10 + i), 3})).ok());
      ASSERT_TRUE(sink.Wait());
      alone.push_back(sink.tokens());
    }
  }
  GenerationOptions options;
  options.kv_cache_bytes = 6 * 8192;  // 6 blocks of 16 tokens: 96 tokens for 6 x 42
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  ASSERT_EQ(scheduler->kv_total_blocks(), 6);
  std::vector<std::unique_ptr<CollectingSink>> sinks;
  for (int i = 0; i < 6; ++i) {
    sinks.push_back(std::make_unique<CollectingSink>());
    ASSERT_TRUE(
        scheduler->Submit(Request(sinks.back().get(), 40, {static_cast<int32_t>(10 + i), 3})).ok());
  }
  int64_t preemptions = 0;
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(sinks[i]->Wait());
    EXPECT_TRUE(sinks[i]->status().ok());
    EXPECT_EQ(sinks[i]->tokens(), alone[i]) << "sequence " << i;
    preemptions += sinks[i]->summary().preemptions;
  }
  EXPECT_GT(preemptions, 0);
  EXPECT_EQ(scheduler->stats().preemptions, preemptions);
  EXPECT_EQ(scheduler->kv_free_blocks(), 6);
}

TEST_F(GenerationSchedulerTest, CancelStopsWaitingAndRunningSequences) {
  GenerationOptions options;
  options.max_running_sequences = 1;
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  CollectingSink running, waiting;
  absl::Notification started;
  running.NotifyOnFirstToken(&started);
  absl::StatusOr<SequenceId> running_id = scheduler->Submit(Request(&running, 400));
  absl::StatusOr<SequenceId> waiting_id = scheduler->Submit(Request(&waiting, 400));
  ASSERT_TRUE(running_id.ok() && waiting_id.ok());
  started.WaitForNotification();
  scheduler->Cancel(*waiting_id);  // finished at once, on this thread
  ASSERT_TRUE(waiting.Wait(absl::ZeroDuration()));
  EXPECT_EQ(waiting.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(waiting.tokens().empty());
  scheduler->Cancel(*running_id);
  ASSERT_TRUE(running.Wait());
  EXPECT_EQ(running.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(running.tokens().size(), 400u);
  EXPECT_EQ(scheduler->kv_free_blocks(), scheduler->kv_total_blocks());
  scheduler->Cancel(*running_id);  // a finished sequence: nothing happens
  EXPECT_EQ(scheduler->stats().cancelled, 2);
}

TEST_F(GenerationSchedulerTest, DrainFinishesWorkThenRefusesAndATimeoutAborts) {
  auto scheduler = Make({});
  ASSERT_NE(scheduler, nullptr);
  CollectingSink quick;
  ASSERT_TRUE(scheduler->Submit(Request(&quick, 4)).ok());
  scheduler->BeginDrain();
  CollectingSink late;
  EXPECT_THAT(scheduler->Submit(Request(&late, 4)).status(),
              testing::StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_TRUE(scheduler->FinishDrain(absl::Seconds(60)));
  EXPECT_TRUE(quick.status().ok());

  auto other = Make({});
  ASSERT_NE(other, nullptr);
  CollectingSink long_one;
  ASSERT_TRUE(other->Submit(Request(&long_one, 500)).ok());
  EXPECT_FALSE(other->FinishDrain(absl::ZeroDuration()));
  ASSERT_TRUE(long_one.Wait());
  EXPECT_EQ(long_one.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(GenerationSchedulerTest, DrainEndsOnlyOnceEverySinkHasHeardItsEnd) {
  GenerationOptions options;
  options.max_running_sequences = 1;
  // Sinks first: the scheduler, which may still call them, goes before them.
  HoldingSink running;
  BlockingFinishSink waiting;
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  const absl::Cleanup unblock = [&] {
    running.Release();
    waiting.Release();
  };
  MOE_ASSERT_OK_AND_ASSIGN(const SequenceId running_id, scheduler->Submit(Request(&running, 50)));
  running.WaitUntilHolding();
  MOE_ASSERT_OK_AND_ASSIGN(const SequenceId waiting_id, scheduler->Submit(Request(&waiting, 5)));
  // The waiting sequence is cancelled on a thread that then blocks in its sink's OnFinished.
  std::thread canceller([&] { scheduler->Cancel(waiting_id); });
  waiting.WaitUntilFinishing();
  scheduler->Cancel(running_id);
  running.Release();
  EXPECT_TRUE(running.Wait());
  // Nothing is queued or running any more, but one sink has not heard its end yet.
  std::atomic<bool> returned{false};
  bool drained = false;
  std::thread drainer([&] {
    drained = scheduler->FinishDrain(absl::Seconds(60));
    returned = true;
  });
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_FALSE(returned.load()) << "the drain ended while a sink was still being told its end";
  waiting.Release();
  canceller.join();
  drainer.join();
  EXPECT_TRUE(drained);
  EXPECT_EQ(waiting.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(running.status().code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace moe::scheduler
