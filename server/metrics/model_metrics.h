// One served model's metrics handle: request outcomes and latencies (recorded by the gRPC
// layer), queue, batch and expert figures (recorded by the model's scheduler), and what was
// loaded (set once by main). Every method is thread-safe and cheap: prometheus-cpp metrics are
// atomics, and the per-expert figures take one uncontended mutex per batch.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "server/metrics/batch_observation.h"
#include "server/metrics/expert_metrics.h"
#include "server/metrics/request_outcome.h"

namespace moe::metrics {

// The registry's families that every model adds its series to; owned by ServerMetrics.
struct MetricFamilies {
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  prometheus::Family<prometheus::Histogram>* request_duration = nullptr;
  prometheus::Family<prometheus::Histogram>* queue_duration = nullptr;
  prometheus::Family<prometheus::Histogram>* compute_duration = nullptr;
  prometheus::Family<prometheus::Histogram>* request_rows = nullptr;
  prometheus::Family<prometheus::Gauge>* queued = nullptr;
  prometheus::Family<prometheus::Gauge>* running = nullptr;
  prometheus::Family<prometheus::Gauge>* queue_capacity = nullptr;
  prometheus::Family<prometheus::Counter>* batches = nullptr;
  prometheus::Family<prometheus::Histogram>* batch_rows = nullptr;
  prometheus::Family<prometheus::Histogram>* batch_duration = nullptr;
  prometheus::Family<prometheus::Gauge>* batch_capacity = nullptr;
  prometheus::Family<prometheus::Gauge>* model_info = nullptr;
  prometheus::Family<prometheus::Gauge>* load_duration = nullptr;
  prometheus::Family<prometheus::Gauge>* weight_bytes = nullptr;
  // Generation (decoder language models only).
  prometheus::Family<prometheus::Histogram>* time_to_first_token = nullptr;
  prometheus::Family<prometheus::Histogram>* inter_token_latency = nullptr;
  prometheus::Family<prometheus::Counter>* generated_tokens = nullptr;
  prometheus::Family<prometheus::Counter>* preemptions = nullptr;
  prometheus::Family<prometheus::Gauge>* kv_blocks_used = nullptr;
  prometheus::Family<prometheus::Gauge>* kv_blocks_total = nullptr;
};

// What main knows once a model has loaded.
struct LoadedModelInfo {
  std::string architecture;
  std::string backend;
  std::string device;
  std::string dtype;
  int64_t num_moe_layers = 0;
  int64_t num_experts = 0;
  int top_k = 0;
  uint64_t weight_bytes = 0;
  absl::Duration load_time;
};

struct ModelMetricsOptions {
  int64_t max_batch_rows = 256;       // --max-batch-tokens: capacity gauge, row histogram range
  int64_t max_queue_requests = 1024;  // --max-queue: capacity gauge
  // Fraction of forward passes whose experts are timed one by one (0 = never, 1 = every pass).
  double expert_timing_sample_rate = 0.01;
  ExpertMetricsOptions experts;
};

class ModelMetrics {
 public:
  // `served`: false for the "(unknown)" entry that counts requests naming no served model;
  // it only has outcome counters.
  ModelMetrics(std::string name, bool served, const MetricFamilies& families,
               const ModelMetricsOptions& options);
  ModelMetrics(const ModelMetrics&) = delete;
  ModelMetrics& operator=(const ModelMetrics&) = delete;

  const std::string& name() const { return name_; }

  // --- gRPC layer
  // A ModelInfer call finished with `code`; `latency` (arrival to response) is observed for
  // successful calls.
  void RecordCall(absl::StatusCode code, absl::Duration latency);

  // --- scheduler
  void RecordAccepted(int64_t rows);
  void SetQueued(int64_t requests);
  void SetRunning(int64_t requests);
  void RecordComputed(absl::Duration queue_time, absl::Duration compute_time);
  // A generated sequence joined the running batch for the first time, `queue_time` after it
  // was accepted (the same series as RecordComputed's queue time).
  void RecordQueueWait(absl::Duration queue_time);
  void RecordBatch(const BatchObservation& batch);
  // Whether the next forward pass should time its experts one by one (every Nth pass, N from
  // the sample rate). Called once per pass.
  bool SampleExpertTiming();
  // A decoder language model: adds its generation series (time to first token, inter-token
  // latency, generated tokens, preemptions, KV-cache blocks). Once, before the scheduler that
  // records them starts.
  void EnableGeneration();
  // Generation (no effect before EnableGeneration).
  void RecordFirstToken(absl::Duration since_arrival);
  void RecordInterToken(absl::Duration since_previous);
  void RecordGeneratedTokens(int64_t tokens);
  void RecordPreemption();
  void SetKvCacheBlocks(int64_t used, int64_t total);

  // --- main
  // The model has loaded: sets the info, load time and weight gauges and starts the expert
  // metrics. INVALID_ARGUMENT for a shape the expert metrics cannot hold; at most once.
  absl::Status SetLoaded(const LoadedModelInfo& info);
  // For the scrape: this model's expert families (nothing before SetLoaded).
  void CollectExperts(absl::Time now, ExpertFamilies* families) const;

 private:
  const std::string name_;
  const bool served_;
  const MetricFamilies families_;
  const ModelMetricsOptions options_;
  const int64_t expert_timing_period_;  // 0: never
  std::atomic<int64_t> passes_{0};

  std::array<prometheus::Counter*, kAllRequestOutcomes.size()> outcomes_{};
  prometheus::Histogram* request_duration_ = nullptr;
  prometheus::Histogram* queue_duration_ = nullptr;
  prometheus::Histogram* compute_duration_ = nullptr;
  prometheus::Histogram* request_rows_ = nullptr;
  prometheus::Gauge* queued_ = nullptr;
  prometheus::Gauge* running_ = nullptr;
  prometheus::Counter* batches_ = nullptr;
  prometheus::Histogram* batch_rows_ = nullptr;
  prometheus::Histogram* batch_duration_ = nullptr;
  prometheus::Histogram* time_to_first_token_ = nullptr;
  prometheus::Histogram* inter_token_latency_ = nullptr;
  prometheus::Counter* generated_tokens_ = nullptr;
  prometheus::Counter* preemptions_ = nullptr;
  prometheus::Gauge* kv_blocks_used_ = nullptr;
  prometheus::Gauge* kv_blocks_total_ = nullptr;

  mutable absl::Mutex mu_;
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<ExpertMetrics> experts_owner_ ABSL_GUARDED_BY(mu_);
  // Set once under mu_, then read without it by the scheduler thread.
  std::atomic<ExpertMetrics*> experts_{nullptr};
};

// Upper bounds of the latency histograms (request, queue, compute, batch), in seconds.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets();
// 1, 2, 4, ... up to the first power of two >= max_rows.
prometheus::Histogram::BucketBoundaries RowBuckets(int64_t max_rows);

}  // namespace moe::metrics
