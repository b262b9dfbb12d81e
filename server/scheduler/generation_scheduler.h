// Iteration-level continuous batching for one decoder language model (Orca, vLLM): every
// forward pass runs one decode token for each running sequence plus prompt chunks of sequences
// still prefilling or just admitted, bounded by a token budget and by free KV-cache blocks.
// New sequences join at the next pass, finished ones leave (and free their blocks) at once, and
// when blocks run out the newest sequence is preempted: its blocks freed, recomputed later.
// One thread per model runs it; gRPC threads only submit and cancel. Policy: step_planner.h.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/engine/decoder/decoder_model.h"
#include "server/engine/decoder/kv_cache.h"
#include "server/metrics/model_metrics.h"
#include "server/scheduler/generation_request.h"

namespace moe::scheduler {

// How sequences share forward passes. Continuous is what serving uses; the static policies are
// the baselines the generation benchmark compares it with.
enum class GenerationBatching {
  // Iteration-level: sequences join at the next pass and leave as soon as they finish.
  kContinuous,
  // Classic static batching, as a fixed [batch, length] tensor runs: a batch is admitted only
  // when the previous one has ended, every sequence keeps its row (a padding token computed
  // and discarded at each pass, nothing more streamed) until the longest has finished, and all
  // of the batch's streams end together.
  kStatic,
  // Static admission, but a sequence leaves (stream ended, blocks freed) as soon as it finishes.
  kStaticEarlyExit,
};

// "continuous", "static", "static-early-exit"; false for anything else.
bool ParseGenerationBatching(std::string_view text, GenerationBatching* batching);
std::string_view GenerationBatchingName(GenerationBatching batching);

struct GenerationOptions {
  std::string model_name;               // for logs and errors
  int64_t max_batch_tokens = 512;       // tokens in one forward pass (--max-batch-tokens)
  int64_t max_running_sequences = 256;  // sequences holding KV blocks at once
  int64_t max_queue_requests = 1024;    // waiting sequences (--max-queue)
  int64_t max_model_len = 0;            // prompt + generated, at most; 0: the model's context
  uint64_t kv_cache_bytes = 0;          // the KV-cache pool (--kv-cache-bytes)
  int64_t kv_block_tokens = 16;
  // Static batches hold at most max_running_sequences sequences.
  GenerationBatching batching = GenerationBatching::kContinuous;
};

struct GenerationStats {
  int64_t steps = 0;
  int64_t step_tokens = 0;  // tokens run through the model
  int64_t max_step_sequences = 0;
  int64_t generated_tokens = 0;
  int64_t padding_tokens = 0;  // static batching: rows of finished sequences, computed, discarded
  int64_t completed = 0;       // finished with a finish reason
  int64_t cancelled = 0;
  int64_t failed = 0;
  int64_t rejected_full = 0;
  int64_t preemptions = 0;
  int64_t aborted = 0;  // still running or waiting when a drain timed out
};

// A submitted sequence's handle, for Cancel.
using SequenceId = uint64_t;

class GenerationScheduler {
 public:
  // Makes the KV cache (INVALID_ARGUMENT when kv_cache_bytes holds no block or options cannot
  // work) and starts the thread. `metrics` may be null; it must outlive the scheduler.
  static absl::StatusOr<std::unique_ptr<GenerationScheduler>> Create(
      std::unique_ptr<engine::DecoderModel> model, const GenerationOptions& options,
      metrics::ModelMetrics* metrics = nullptr);

  // Fails whatever still runs or waits with UNAVAILABLE and joins the thread.
  ~GenerationScheduler();
  GenerationScheduler(const GenerationScheduler&) = delete;
  GenerationScheduler& operator=(const GenerationScheduler&) = delete;

  const engine::DecoderModel& model() const { return *model_; }
  const GenerationOptions& options() const { return options_; }
  // Prompt plus generated tokens one sequence may reach.
  int64_t max_model_len() const { return max_model_len_; }
  int64_t kv_total_blocks() const { return kv_total_blocks_; }

  // Accepts the request (its sink then gets OnFinished exactly once) or refuses it without
  // calling the sink: RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE while draining,
  // INVALID_ARGUMENT when it is longer than max_model_len or than the whole KV cache holds.
  absl::StatusOr<SequenceId> Submit(std::unique_ptr<GenerationRequest> request);

  // Stops the sequence and frees its KV blocks: at once while it waits, at the end of the
  // forward pass in flight while it runs. Its sink gets OnFinished(CANCELLED). No effect once
  // it has finished.
  void Cancel(SequenceId id);

  void BeginDrain();
  // Waits up to `timeout` for every sequence to finish; fails the rest with UNAVAILABLE.
  // True when none had to be failed.
  bool FinishDrain(absl::Duration timeout);

  GenerationStats stats() const;
  int64_t waiting_sequences() const;
  int64_t running_sequences() const;
  int64_t kv_free_blocks() const;

 private:
  struct Sequence;
  // A sequence taken out of the scheduler, to be finished outside the lock.
  struct Ending {
    std::unique_ptr<Sequence> sequence;
    absl::Status status;
    FinishReason reason;
  };

  GenerationScheduler(std::unique_ptr<engine::DecoderModel> model,
                      std::unique_ptr<engine::KvCache> cache, const GenerationOptions& options,
                      int64_t max_model_len, metrics::ModelMetrics* metrics);

  void Loop();
  // Waits for work, applies cancellations, plans the next pass and moves sequences between
  // the waiting queue and the running set accordingly. False when the thread should exit.
  // Sequences it ends (cancelled, or padding rows it cannot keep) go to `ended`.
  bool PlanNextStep(std::vector<Sequence*>* step, std::vector<int64_t>* step_tokens,
                    std::vector<Ending>* ended);
  void RunStep(const std::vector<Sequence*>& step, const std::vector<int64_t>& step_tokens);
  // Samples the next token of a sequence whose pending tokens have all run and hands it to the
  // sink; says whether (and why) the sequence is done.
  FinishReason SampleNext(Sequence& sequence, const float* logits);
  // Static batching: a finished sequence keeps its row, its last sampled token the first
  // padding step's input. After each padding step, appends the next input, or says it cannot
  // (the row would pass max_model_len).
  bool PadNext(Sequence& sequence);
  // Static batching: once every running sequence has finished, the batch ends together.
  void EndBatchIfDone();
  // Ends a sequence: releases its blocks, tells the sink, forgets it.
  void Finish(std::unique_ptr<Sequence> sequence, const absl::Status& status, FinishReason reason);
  void FinishRunning(Sequence* sequence, const absl::Status& status, FinishReason reason);
  // Fails a running sequence (a padding row's sequence finishes with its own reason instead).
  void FailRunning(Sequence* sequence, const absl::Status& failure);
  // Aborting: every sequence, waiting or running, fails with UNAVAILABLE.
  void AbortAll();
  void PublishGauges() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool WorkReady() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::unique_ptr<engine::DecoderModel> model_;
  const std::unique_ptr<engine::KvCache> cache_;
  const GenerationOptions options_;
  const int64_t max_model_len_;
  const int64_t kv_total_blocks_;
  metrics::ModelMetrics* const metrics_;

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Sequence>> waiting_ ABSL_GUARDED_BY(mu_);
  // Running sequences in admission order. Touched under mu_ by the scheduler thread only
  // (read by the gauges and Cancel).
  std::vector<std::unique_ptr<Sequence>> running_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<SequenceId> cancel_running_ ABSL_GUARDED_BY(mu_);
  SequenceId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool step_running_ ABSL_GUARDED_BY(mu_) = false;
  // Sequences taken out of waiting_ or running_ whose sink has not heard their end yet (Finish
  // runs outside mu_): a drain is not over until they have.
  int64_t finishing_ ABSL_GUARDED_BY(mu_) = 0;
  // Set when a drain times out or the scheduler is destroyed: the thread fails every sequence
  // with UNAVAILABLE and exits.
  bool aborting_ ABSL_GUARDED_BY(mu_) = false;
  GenerationStats stats_ ABSL_GUARDED_BY(mu_);
  int64_t kv_free_blocks_ ABSL_GUARDED_BY(mu_) = 0;

  // Per-pass buffers, reused; scheduler thread only.
  std::vector<float> logits_;
  std::vector<int64_t> expert_tokens_;
  std::vector<double> layer_seconds_;
  std::vector<double> entropy_sum_;
  std::vector<double> expert_seconds_;

  std::thread thread_;
};

}  // namespace moe::scheduler
