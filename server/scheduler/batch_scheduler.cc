#include "server/scheduler/batch_scheduler.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/logging.h"

namespace moe::scheduler {

absl::StatusOr<std::unique_ptr<BatchScheduler>> BatchScheduler::Create(
    std::unique_ptr<engine::ServableModel> model, const SchedulerOptions& options,
    metrics::ModelMetrics* metrics) {
  if (model == nullptr) return absl::InvalidArgumentError("batch scheduler: no model");
  if (options.max_batch_rows < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max batch rows must be at least 1, got ", options.max_batch_rows));
  }
  if (options.max_queue_requests < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max queued requests must be at least 1, got ", options.max_queue_requests));
  }
  if (options.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("max queue delay must not be negative");
  }
  std::unique_ptr<BatchScheduler> scheduler(new BatchScheduler(std::move(model), options, metrics));
  scheduler->thread_ = std::thread([s = scheduler.get()] { s->Loop(); });
  return scheduler;
}

BatchScheduler::BatchScheduler(std::unique_ptr<engine::ServableModel> model,
                               const SchedulerOptions& options, metrics::ModelMetrics* metrics)
    : model_(std::move(model)),
      options_(options),
      metrics_(metrics),
      queue_(options.max_queue_requests) {
  const engine::ModelDescription& d = model_->description();
  if (metrics_ != nullptr && d.num_moe_layers > 0 && d.num_experts > 0) {
    const auto cells = static_cast<size_t>(d.num_moe_layers * d.num_experts);
    batch_expert_tokens_.resize(cells);
    batch_expert_seconds_.resize(cells);
    batch_layer_seconds_.resize(static_cast<size_t>(d.num_moe_layers));
    batch_entropy_sum_.resize(static_cast<size_t>(d.num_moe_layers));
  }
}

BatchScheduler::~BatchScheduler() {
  if (thread_.joinable()) FinishDrain(absl::ZeroDuration());
}

absl::StatusOr<RequestTicket> BatchScheduler::Submit(std::unique_ptr<InferenceRequest> request) {
  if (request->num_rows() < 1 ||
      request->input().size() !=
          static_cast<size_t>(request->num_rows()) * static_cast<size_t>(model().input_width)) {
    return absl::InvalidArgumentError(absl::StrCat("request holds ", request->input().size(),
                                                   " values for ", request->num_rows(),
                                                   " rows of width ", model().input_width));
  }
  if (request->num_rows() > options_.max_batch_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request has ", request->num_rows(), " rows; model '", model().name, "' takes at most ",
        options_.max_batch_rows, " rows per request (--max-batch-tokens)"));
  }
  absl::MutexLock lock(&mu_);
  if (draining_) {
    return absl::UnavailableError("server is shutting down and accepts no new requests");
  }
  request->set_enqueue_time(absl::Now());
  const int64_t rows = request->num_rows();
  absl::StatusOr<RequestTicket> ticket = queue_.Push(std::move(request));
  if (!ticket.ok()) {
    ++stats_.rejected_full;
    return ticket;
  }
  if (metrics_ != nullptr) metrics_->RecordAccepted(rows);
  PublishQueueDepth();
  return ticket;
}

void BatchScheduler::Cancel(const RequestTicket& ticket) {
  std::unique_ptr<InferenceRequest> request;
  {
    absl::MutexLock lock(&mu_);
    request = queue_.Remove(ticket);
    if (request == nullptr) return;
    ++stats_.cancelled;
    PublishQueueDepth();
  }
  request->Complete(absl::CancelledError("request cancelled by the client"), {});
}

void BatchScheduler::BeginDrain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool BatchScheduler::FinishDrain(absl::Duration timeout) {
  std::vector<std::unique_ptr<InferenceRequest>> abandoned;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    stopping_ = true;
    auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return queue_.empty() && !batch_running_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&drained), timeout);
    abandoned = queue_.TakeAll();
    stats_.aborted += static_cast<int64_t>(abandoned.size());
    PublishQueueDepth();
  }
  for (auto& request : abandoned) {
    request->Complete(absl::UnavailableError("server shut down before this request ran "
                                             "(--drain-timeout passed)"),
                      {});
  }
  if (thread_.joinable()) thread_.join();
  return abandoned.empty();
}

SchedulerStats BatchScheduler::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

int64_t BatchScheduler::queued_requests() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

void BatchScheduler::PublishQueueDepth() const {
  if (metrics_ != nullptr) metrics_->SetQueued(queue_.size());
}

bool BatchScheduler::WorkReady() const { return !queue_.empty() || stopping_; }

int64_t BatchScheduler::FillTargetRows() const {
  int64_t target = 0;
  for (int64_t rows : recent_batch_rows_) target = std::max(target, rows);
  // Before any batch has run: a full batch.
  return target == 0 ? options_.max_batch_rows : std::min(target, options_.max_batch_rows);
}

bool BatchScheduler::NextBatch(std::vector<std::unique_ptr<InferenceRequest>>* batch,
                               std::vector<std::unique_ptr<InferenceRequest>>* expired) {
  absl::MutexLock lock(&mu_);
  while (true) {
    mu_.Await(absl::Condition(this, &BatchScheduler::WorkReady));
    if (queue_.empty()) return false;  // stopping, and nothing left to run
    const int64_t fill_target = FillTargetRows();
    if (options_.max_queue_delay > absl::ZeroDuration() && !draining_ &&
        queue_.queued_rows() < fill_target) {
      // Hold back until as many rows are queued as recent batches held (the clients those
      // batches answered are likely on their way back), never past the delay measured from
      // the oldest arrival.
      auto filled_or_stopping = [this, fill_target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return queue_.queued_rows() >= fill_target || draining_ || stopping_;
      };
      mu_.AwaitWithDeadline(absl::Condition(&filled_or_stopping),
                            queue_.OldestEnqueueTime() + options_.max_queue_delay);
      if (queue_.empty()) continue;  // everything was cancelled meanwhile
    }
    queue_.TakeBatch(options_.max_batch_rows, absl::Now(), batch, expired);
    int64_t rows = 0;
    for (const auto& request : *batch) rows += request->num_rows();
    if (rows > 0) {
      recent_batch_rows_[recent_batch_next_] = rows;
      recent_batch_next_ = (recent_batch_next_ + 1) % recent_batch_rows_.size();
    }
    stats_.expired += static_cast<int64_t>(expired->size());
    batch_running_ = !batch->empty();
    PublishQueueDepth();
    return true;
  }
}

void BatchScheduler::Loop() {
  std::vector<std::unique_ptr<InferenceRequest>> batch;
  std::vector<std::unique_ptr<InferenceRequest>> expired;
  while (NextBatch(&batch, &expired)) {
    for (auto& request : expired) {
      request->Complete(absl::DeadlineExceededError(
                            "deadline passed while the request was queued; it was not computed"),
                        {});
    }
    expired.clear();
    if (!batch.empty()) RunBatch(batch);
    batch.clear();  // releases the requests before the next wait
    absl::MutexLock lock(&mu_);
    batch_running_ = false;
  }
}

void BatchScheduler::RequestStatistics(engine::ModelRunOutputs* outputs) {
  if (metrics_ == nullptr || batch_expert_tokens_.empty()) return;
  outputs->expert_token_counts = batch_expert_tokens_.data();
  outputs->layer_seconds = batch_layer_seconds_.data();
  outputs->gate_entropy_sum = batch_entropy_sum_.data();
  if (metrics_->SampleExpertTiming()) outputs->expert_seconds = batch_expert_seconds_.data();
}

void BatchScheduler::ReportBatch(int64_t rows, int64_t requests, absl::Duration duration,
                                 bool failed, const engine::ModelRunOutputs& outputs) {
  if (metrics_ == nullptr) return;
  metrics_->SetRunning(0);
  metrics::BatchObservation observation;
  observation.rows = rows;
  observation.requests = requests;
  observation.seconds = absl::ToDoubleSeconds(duration);
  observation.failed = failed;
  if (!failed && outputs.expert_token_counts != nullptr) {
    observation.expert_tokens = batch_expert_tokens_;
    observation.layer_seconds = batch_layer_seconds_;
    observation.entropy_sum = batch_entropy_sum_;
    if (outputs.expert_seconds != nullptr) observation.expert_seconds = batch_expert_seconds_;
  }
  metrics_->RecordBatch(observation);
}

void BatchScheduler::RunBatch(std::vector<std::unique_ptr<InferenceRequest>>& batch) {
  const engine::ModelDescription& model = model_->description();
  const int64_t in_width = model.input_width;
  const int64_t out_width = model.output_width;
  const int64_t routing_width = model.num_moe_layers * model.top_k;

  int64_t rows = 0;
  bool any_routing = false;
  for (const auto& request : batch) {
    rows += request->num_rows();
    any_routing = any_routing || request->want_routing();
  }

  if (metrics_ != nullptr) metrics_->SetRunning(static_cast<int64_t>(batch.size()));
  const absl::Time start = absl::Now();
  absl::Status status;
  engine::ModelRunOutputs outputs;
  try {
    batch_input_.resize(static_cast<size_t>(rows * in_width));
    batch_output_.resize(static_cast<size_t>(rows * out_width));
    int64_t offset = 0;
    for (const auto& request : batch) {
      std::memcpy(batch_input_.data() + offset * in_width, request->input().data(),
                  request->input().size() * sizeof(float));
      offset += request->num_rows();
    }
    outputs.output = batch_output_.data();
    RequestStatistics(&outputs);
    if (any_routing) {
      batch_topk_ids_.resize(static_cast<size_t>(rows * routing_width));
      batch_topk_weights_.resize(static_cast<size_t>(rows * routing_width));
      outputs.topk_ids = batch_topk_ids_.data();
      outputs.topk_weights = batch_topk_weights_.data();
    }
    status = model_->Run(batch_input_.data(), rows, outputs);
  } catch (const std::bad_alloc&) {
    status =
        absl::ResourceExhaustedError(absl::StrCat("out of memory for a batch of ", rows, " rows"));
  }
  const absl::Time end = absl::Now();

  if (!status.ok()) {
    common::LogError("batch failed", {{"model", model.name},
                                      {"rows", absl::StrCat(rows)},
                                      {"requests", absl::StrCat(batch.size())},
                                      {"error", status.ToString()}});
    const absl::Status failure = absl::InternalError(
        absl::StrCat("engine failure on a batch of ", rows, " rows (", batch.size(),
                     " requests) of model '", model.name, "': ", status.message()));
    for (auto& request : batch) request->Complete(failure, {});
    ReportBatch(rows, static_cast<int64_t>(batch.size()), end - start, /*failed=*/true, outputs);
    absl::MutexLock lock(&mu_);
    ++stats_.batches;
    stats_.failed += static_cast<int64_t>(batch.size());
    return;
  }

  int64_t offset = 0;
  for (auto& request : batch) {
    const int64_t n = request->num_rows();
    InferenceResult result;
    try {
      result.output.assign(batch_output_.begin() + offset * out_width,
                           batch_output_.begin() + (offset + n) * out_width);
      if (request->want_routing()) {
        result.topk_ids.assign(batch_topk_ids_.begin() + offset * routing_width,
                               batch_topk_ids_.begin() + (offset + n) * routing_width);
        result.topk_weights.assign(batch_topk_weights_.begin() + offset * routing_width,
                                   batch_topk_weights_.begin() + (offset + n) * routing_width);
      }
    } catch (const std::bad_alloc&) {
      request->Complete(absl::ResourceExhaustedError("out of memory for this request's result"),
                        {});
      offset += n;
      continue;
    }
    result.queue_time = start - request->enqueue_time();
    result.compute_time = end - start;
    result.batch_rows = rows;
    result.batch_requests = static_cast<int64_t>(batch.size());
    if (metrics_ != nullptr) metrics_->RecordComputed(result.queue_time, result.compute_time);
    request->Complete(absl::OkStatus(), std::move(result));
    offset += n;
  }
  ReportBatch(rows, static_cast<int64_t>(batch.size()), end - start, /*failed=*/false, outputs);
  absl::MutexLock lock(&mu_);
  ++stats_.batches;
  stats_.rows += rows;
  stats_.completed += static_cast<int64_t>(batch.size());
  stats_.max_batch_rows_seen = std::max(stats_.max_batch_rows_seen, rows);
  stats_.max_batch_requests_seen =
      std::max(stats_.max_batch_requests_seen, static_cast<int64_t>(batch.size()));
}

}  // namespace moe::scheduler
