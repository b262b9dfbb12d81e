// Continuous batching for one model: gRPC threads submit requests; one scheduler thread forms
// a batch at every iteration from whatever is queued (up to a row budget), runs the model,
// and hands each request its own rows back. Requests that arrive while a batch runs join the
// next one. The scheduler owns the model: no other thread runs it.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/engine/servable_model.h"
#include "server/metrics/model_metrics.h"
#include "server/scheduler/inference_request.h"
#include "server/scheduler/request_queue.h"

namespace moe::scheduler {

struct SchedulerOptions {
  // Most rows in one batch (--max-batch-tokens). A request with more rows is refused.
  int64_t max_batch_rows = 256;
  // How long the scheduler may hold queued work back hoping to fill a batch
  // (--max-queue-delay-us), counted from the oldest queued arrival. The hold ends early once
  // as many rows are queued as the largest of the last few batches held (under steady load,
  // the clients just answered coming back). Zero: run whatever is queued at once.
  absl::Duration max_queue_delay = absl::ZeroDuration();
  // Most requests waiting (--max-queue); beyond it Submit answers RESOURCE_EXHAUSTED.
  int64_t max_queue_requests = 1024;
};

// Counters since start, for tests, logs and the metrics layer.
struct SchedulerStats {
  int64_t batches = 0;
  int64_t rows = 0;
  int64_t max_batch_rows_seen = 0;
  int64_t max_batch_requests_seen = 0;
  int64_t completed = 0;      // answered with results
  int64_t failed = 0;         // engine failures (INTERNAL)
  int64_t expired = 0;        // deadline passed while queued (never computed)
  int64_t cancelled = 0;      // taken out of the queue by the caller
  int64_t rejected_full = 0;  // queue full at submission
  int64_t aborted = 0;        // still queued when the drain timed out
};

class BatchScheduler {
 public:
  // Starts the scheduler thread. INVALID_ARGUMENT for options that cannot work. `metrics`, when
  // not null, receives the queue, batch, request-timing and expert figures of this model and
  // must outlive the scheduler.
  static absl::StatusOr<std::unique_ptr<BatchScheduler>> Create(
      std::unique_ptr<engine::ServableModel> model, const SchedulerOptions& options,
      metrics::ModelMetrics* metrics = nullptr);

  // Fails whatever is still queued with UNAVAILABLE, lets a running batch finish, joins.
  ~BatchScheduler();
  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  const engine::ModelDescription& model() const { return model_->description(); }
  const SchedulerOptions& options() const { return options_; }

  // Accepts `request` (its completion will run exactly once, on the scheduler thread) or
  // refuses it without running its completion: RESOURCE_EXHAUSTED when the queue is full,
  // UNAVAILABLE while draining, INVALID_ARGUMENT when it has more rows than a batch holds.
  absl::StatusOr<RequestTicket> Submit(std::unique_ptr<InferenceRequest> request);

  // Takes a still-queued request out and completes it with CANCELLED, freeing its place at
  // once. No effect once its batch has started (it then completes normally).
  void Cancel(const RequestTicket& ticket);

  // Stops accepting new requests; queued and running work still completes.
  void BeginDrain();
  // Waits up to `timeout` for the queue to empty and the running batch to finish. Whatever is
  // still queued then is failed with UNAVAILABLE. Returns true when nothing had to be failed.
  bool FinishDrain(absl::Duration timeout);

  SchedulerStats stats() const;
  int64_t queued_requests() const;

 private:
  BatchScheduler(std::unique_ptr<engine::ServableModel> model, const SchedulerOptions& options,
                 metrics::ModelMetrics* metrics);

  void Loop();
  // Blocks until there is work to run (or the thread should exit) and takes the next batch.
  // Returns false when the thread should exit.
  bool NextBatch(std::vector<std::unique_ptr<InferenceRequest>>* batch,
                 std::vector<std::unique_ptr<InferenceRequest>>* expired);
  void RunBatch(std::vector<std::unique_ptr<InferenceRequest>>& batch);
  bool WorkReady() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rows worth waiting for when a queue delay is set.
  int64_t FillTargetRows() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells the metrics how many requests wait, after every change of the queue.
  void PublishQueueDepth() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Points `outputs` at the statistics buffers the metrics want for this pass.
  void RequestStatistics(engine::ModelRunOutputs* outputs);
  // Hands a finished pass's figures to the metrics.
  void ReportBatch(int64_t rows, int64_t requests, absl::Duration duration, bool failed,
                   const engine::ModelRunOutputs& outputs);

  const std::unique_ptr<engine::ServableModel> model_;
  const SchedulerOptions options_;
  metrics::ModelMetrics* const metrics_;  // null: no metrics

  mutable absl::Mutex mu_;
  RequestQueue queue_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;  // thread exits once the queue is empty
  bool batch_running_ ABSL_GUARDED_BY(mu_) = false;
  SchedulerStats stats_ ABSL_GUARDED_BY(mu_);
  // Rows of the last few batches (0 = none yet), a ring.
  std::array<int64_t, 8> recent_batch_rows_ ABSL_GUARDED_BY(mu_) = {};
  size_t recent_batch_next_ ABSL_GUARDED_BY(mu_) = 0;

  // Batch buffers, reused across iterations; touched by the scheduler thread only.
  std::vector<float> batch_input_;
  std::vector<float> batch_output_;
  std::vector<int32_t> batch_topk_ids_;
  std::vector<float> batch_topk_weights_;
  // Per-pass statistics for the metrics ([layers, experts] / [layers]), sized once.
  std::vector<int64_t> batch_expert_tokens_;
  std::vector<double> batch_layer_seconds_;
  std::vector<double> batch_entropy_sum_;
  std::vector<double> batch_expert_seconds_;

  std::thread thread_;
};

}  // namespace moe::scheduler
