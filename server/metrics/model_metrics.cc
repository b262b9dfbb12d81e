#include "server/metrics/model_metrics.h"

#include <cmath>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moe::metrics {
namespace {

int64_t TimingPeriod(double rate) {
  if (!(rate > 0.0)) return 0;
  if (rate >= 1.0) return 1;
  return std::max<int64_t>(1, std::llround(1.0 / rate));
}

}  // namespace

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* const buckets = new prometheus::Histogram::BucketBoundaries{
      1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return *buckets;
}

prometheus::Histogram::BucketBoundaries RowBuckets(int64_t max_rows) {
  prometheus::Histogram::BucketBoundaries buckets;
  int64_t bound = 1;
  buckets.push_back(1.0);
  while (bound < max_rows && bound < (int64_t{1} << 40)) {
    bound *= 2;
    buckets.push_back(static_cast<double>(bound));
  }
  return buckets;
}

ModelMetrics::ModelMetrics(std::string name, bool served, const MetricFamilies& families,
                           const ModelMetricsOptions& options)
    : name_(std::move(name)),
      served_(served),
      families_(families),
      options_(options),
      expert_timing_period_(served ? TimingPeriod(options.expert_timing_sample_rate) : 0) {
  for (size_t i = 0; i < kAllRequestOutcomes.size(); ++i) {
    outcomes_[i] = &families_.requests->Add(
        {{"model", name_}, {"outcome", std::string(OutcomeName(kAllRequestOutcomes[i]))}});
  }
  if (!served_) return;
  const prometheus::Labels labels = {{"model", name_}};
  request_duration_ = &families_.request_duration->Add(labels, LatencyBuckets());
  queue_duration_ = &families_.queue_duration->Add(labels, LatencyBuckets());
  compute_duration_ = &families_.compute_duration->Add(labels, LatencyBuckets());
  request_rows_ = &families_.request_rows->Add(labels, RowBuckets(options_.max_batch_rows));
  queued_ = &families_.queued->Add(labels);
  running_ = &families_.running->Add(labels);
  families_.queue_capacity->Add(labels).Set(static_cast<double>(options_.max_queue_requests));
  batches_ = &families_.batches->Add(labels);
  batch_rows_ = &families_.batch_rows->Add(labels, RowBuckets(options_.max_batch_rows));
  batch_duration_ = &families_.batch_duration->Add(labels, LatencyBuckets());
  families_.batch_capacity->Add(labels).Set(static_cast<double>(options_.max_batch_rows));
}

void ModelMetrics::EnableGeneration() {
  if (!served_ || time_to_first_token_ != nullptr) return;
  const prometheus::Labels labels = {{"model", name_}};
  time_to_first_token_ = &families_.time_to_first_token->Add(labels, LatencyBuckets());
  inter_token_latency_ = &families_.inter_token_latency->Add(labels, LatencyBuckets());
  generated_tokens_ = &families_.generated_tokens->Add(labels);
  preemptions_ = &families_.preemptions->Add(labels);
  kv_blocks_used_ = &families_.kv_blocks_used->Add(labels);
  kv_blocks_total_ = &families_.kv_blocks_total->Add(labels);
}

void ModelMetrics::RecordFirstToken(absl::Duration since_arrival) {
  if (time_to_first_token_ != nullptr) {
    time_to_first_token_->Observe(absl::ToDoubleSeconds(since_arrival));
  }
}

void ModelMetrics::RecordInterToken(absl::Duration since_previous) {
  if (inter_token_latency_ != nullptr) {
    inter_token_latency_->Observe(absl::ToDoubleSeconds(since_previous));
  }
}

void ModelMetrics::RecordGeneratedTokens(int64_t tokens) {
  if (generated_tokens_ != nullptr) generated_tokens_->Increment(static_cast<double>(tokens));
}

void ModelMetrics::RecordPreemption() {
  if (preemptions_ != nullptr) preemptions_->Increment();
}

void ModelMetrics::SetKvCacheBlocks(int64_t used, int64_t total) {
  if (kv_blocks_used_ == nullptr) return;
  kv_blocks_used_->Set(static_cast<double>(used));
  kv_blocks_total_->Set(static_cast<double>(total));
}

void ModelMetrics::RecordCall(absl::StatusCode code, absl::Duration latency) {
  const RequestOutcome outcome = OutcomeOf(code);
  outcomes_[static_cast<size_t>(outcome)]->Increment();
  if (outcome == RequestOutcome::kSuccess && request_duration_ != nullptr) {
    request_duration_->Observe(absl::ToDoubleSeconds(latency));
  }
}

void ModelMetrics::RecordAccepted(int64_t rows) {
  if (request_rows_ != nullptr) request_rows_->Observe(static_cast<double>(rows));
}

void ModelMetrics::SetQueued(int64_t requests) {
  if (queued_ != nullptr) queued_->Set(static_cast<double>(requests));
}

void ModelMetrics::SetRunning(int64_t requests) {
  if (running_ != nullptr) running_->Set(static_cast<double>(requests));
}

void ModelMetrics::RecordComputed(absl::Duration queue_time, absl::Duration compute_time) {
  if (queue_duration_ == nullptr) return;
  queue_duration_->Observe(absl::ToDoubleSeconds(queue_time));
  compute_duration_->Observe(absl::ToDoubleSeconds(compute_time));
}

void ModelMetrics::RecordQueueWait(absl::Duration queue_time) {
  if (queue_duration_ == nullptr) return;
  queue_duration_->Observe(absl::ToDoubleSeconds(queue_time));
}

void ModelMetrics::RecordBatch(const BatchObservation& batch) {
  if (batches_ == nullptr) return;
  batches_->Increment();
  batch_rows_->Observe(static_cast<double>(batch.rows));
  batch_duration_->Observe(batch.seconds);
  if (batch.failed) return;
  if (ExpertMetrics* experts = experts_.load(std::memory_order_acquire); experts != nullptr) {
    experts->Record(batch, absl::Now());
  }
}

bool ModelMetrics::SampleExpertTiming() {
  if (expert_timing_period_ == 0) return false;
  return passes_.fetch_add(1, std::memory_order_relaxed) % expert_timing_period_ == 0;
}

absl::Status ModelMetrics::SetLoaded(const LoadedModelInfo& info) {
  if (!served_) return absl::FailedPreconditionError("the unknown-model entry cannot be loaded");
  absl::MutexLock lock(&mu_);
  if (loaded_) {
    return absl::FailedPreconditionError(absl::StrCat("model '", name_, "' was already loaded"));
  }
  if (info.num_moe_layers > 0 && info.num_experts > 0) {
    absl::StatusOr<std::unique_ptr<ExpertMetrics>> experts =
        ExpertMetrics::Create(name_, info.num_moe_layers, info.num_experts, options_.experts);
    if (!experts.ok()) return experts.status();
    experts_owner_ = std::move(*experts);
    experts_.store(experts_owner_.get(), std::memory_order_release);
  }
  loaded_ = true;
  families_.model_info
      ->Add({{"model", name_},
             {"architecture", info.architecture},
             {"backend", info.backend},
             {"device", info.device},
             {"dtype", info.dtype},
             {"moe_layers", absl::StrCat(info.num_moe_layers)},
             {"experts", absl::StrCat(info.num_experts)},
             {"top_k", absl::StrCat(info.top_k)}})
      .Set(1);
  families_.load_duration->Add({{"model", name_}}).Set(absl::ToDoubleSeconds(info.load_time));
  families_.weight_bytes->Add({{"model", name_}}).Set(static_cast<double>(info.weight_bytes));
  return absl::OkStatus();
}

void ModelMetrics::CollectExperts(absl::Time now, ExpertFamilies* families) const {
  if (ExpertMetrics* experts = experts_.load(std::memory_order_acquire); experts != nullptr) {
    experts->Collect(now, families);
  }
}

}  // namespace moe::metrics
