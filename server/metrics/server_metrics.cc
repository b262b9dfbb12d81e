#include "server/metrics/server_metrics.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/text_serializer.h"

namespace moe::metrics {

// Builds the families that are computed at scrape time rather than stored in the registry.
class ServerMetrics::ScrapeCollector final : public prometheus::Collectable {
 public:
  explicit ScrapeCollector(const ServerMetrics* metrics) : metrics_(metrics) {}

  void SetReader(DeviceMemoryReader reader) {
    absl::MutexLock lock(&mu_);
    reader_ = std::move(reader);
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    const absl::Time now = absl::Now();
    ExpertFamilies experts;
    for (const auto& [name, model] : metrics_->models_) model->CollectExperts(now, &experts);
    std::vector<prometheus::MetricFamily> families = experts.TakeNonEmpty();
    AppendDeviceMemory(&families);
    return families;
  }

 private:
  void AppendDeviceMemory(std::vector<prometheus::MetricFamily>* families) const {
    absl::StatusOr<DeviceMemory> memory;
    {
      // Called under the lock, so that SetReader (nullptr when the backend goes) waits for a
      // call in flight: a copy called after the unlock could read a destroyed backend.
      absl::MutexLock lock(&mu_);
      if (!reader_) return;
      memory = reader_();
    }
    if (!memory.ok()) return;
    const std::vector<prometheus::ClientMetric::Label> labels = {{"backend", memory->backend},
                                                                 {"device", memory->device}};
    for (const auto& [name, help, value] :
         {std::tuple{"moe_device_memory_used_bytes",
                     "Memory in use on the compute device (GPU: all processes; CPU: this "
                     "process's resident memory).",
                     memory->used_bytes},
          std::tuple{"moe_device_memory_total_bytes",
                     "Memory of the compute device (GPU: device memory; CPU: the machine's).",
                     memory->total_bytes}}) {
      prometheus::MetricFamily family;
      family.name = name;
      family.help = help;
      family.type = prometheus::MetricType::Gauge;
      prometheus::ClientMetric metric;
      metric.label = labels;
      metric.gauge.value = static_cast<double>(value);
      family.metric.push_back(std::move(metric));
      families->push_back(std::move(family));
    }
  }

  const ServerMetrics* const metrics_;
  mutable absl::Mutex mu_;
  DeviceMemoryReader reader_ ABSL_GUARDED_BY(mu_);
};

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      scrape_collector_(std::make_shared<ScrapeCollector>(this)) {}

ServerMetrics::~ServerMetrics() = default;

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Create(
    const std::vector<std::string>& model_names, const ModelMetricsOptions& options) {
  if (!(options.expert_timing_sample_rate >= 0.0 && options.expert_timing_sample_rate <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("expert timing sample rate ",
                                                   options.expert_timing_sample_rate,
                                                   " is not between 0 and 1"));
  }
  if (options.experts.window_slots < 1 ||
      options.experts.window < absl::Milliseconds(options.experts.window_slots)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics window ", absl::FormatDuration(options.experts.window),
        " is too short (at least 1ms per slot, ", options.experts.window_slots, " slots)"));
  }
  std::unique_ptr<ServerMetrics> metrics(new ServerMetrics());
  prometheus::Registry& r = *metrics->registry_;
  MetricFamilies& f = metrics->families_;
  f.requests = &prometheus::BuildCounter()
                    .Name("moe_requests_total")
                    .Help("ModelInfer calls by model and outcome.")
                    .Register(r);
  f.request_duration = &prometheus::BuildHistogram()
                            .Name("moe_request_duration_seconds")
                            .Help("Successful calls: arrival at the server to response ready.")
                            .Register(r);
  f.queue_duration = &prometheus::BuildHistogram()
                          .Name("moe_request_queue_duration_seconds")
                          .Help(
                              "Computed requests: accepted to their batch's start. Generations: "
                              "accepted to joining the running batch.")
                          .Register(r);
  f.compute_duration = &prometheus::BuildHistogram()
                            .Name("moe_request_compute_duration_seconds")
                            .Help("Computed requests: the forward pass of their batch.")
                            .Register(r);
  f.request_rows = &prometheus::BuildHistogram()
                        .Name("moe_request_rows")
                        .Help("Rows (tokens) per accepted request.")
                        .Register(r);
  f.queued = &prometheus::BuildGauge()
                  .Name("moe_requests_queued")
                  .Help("Requests waiting for a batch.")
                  .Register(r);
  f.running = &prometheus::BuildGauge()
                   .Name("moe_requests_running")
                   .Help("Requests in the batch being computed.")
                   .Register(r);
  f.queue_capacity = &prometheus::BuildGauge()
                          .Name("moe_queue_capacity_requests")
                          .Help("Most requests that may wait (--max-queue).")
                          .Register(r);
  f.batches = &prometheus::BuildCounter()
                   .Name("moe_batches_total")
                   .Help("Forward passes run, failed ones included.")
                   .Register(r);
  f.batch_rows = &prometheus::BuildHistogram()
                      .Name("moe_batch_rows")
                      .Help("Rows (tokens) per forward pass.")
                      .Register(r);
  f.batch_duration = &prometheus::BuildHistogram()
                          .Name("moe_batch_duration_seconds")
                          .Help("Time of one forward pass.")
                          .Register(r);
  f.batch_capacity = &prometheus::BuildGauge()
                          .Name("moe_batch_capacity_rows")
                          .Help("Most rows in one forward pass (--max-batch-tokens).")
                          .Register(r);
  f.model_info = &prometheus::BuildGauge()
                      .Name("moe_model_info")
                      .Help("A served model: architecture, backend, device and shape (value 1).")
                      .Register(r);
  f.load_duration = &prometheus::BuildGauge()
                         .Name("moe_model_load_duration_seconds")
                         .Help("Time to load and prepare the model's weights.")
                         .Register(r);
  f.weight_bytes = &prometheus::BuildGauge()
                        .Name("moe_model_weight_bytes")
                        .Help("Bytes of the model's weights as loaded.")
                        .Register(r);
  f.time_to_first_token =
      &prometheus::BuildHistogram()
           .Name("moe_time_to_first_token_seconds")
           .Help("Generation: arrival of a sequence to its first generated token.")
           .Register(r);
  f.inter_token_latency = &prometheus::BuildHistogram()
                               .Name("moe_inter_token_latency_seconds")
                               .Help("Generation: time between two tokens of one sequence.")
                               .Register(r);
  f.generated_tokens = &prometheus::BuildCounter()
                            .Name("moe_generated_tokens_total")
                            .Help("Generation: tokens generated.")
                            .Register(r);
  f.preemptions = &prometheus::BuildCounter()
                       .Name("moe_preemptions_total")
                       .Help(
                           "Generation: sequences preempted (KV blocks freed, recomputed "
                           "later) because the KV cache ran out.")
                       .Register(r);
  f.kv_blocks_used = &prometheus::BuildGauge()
                          .Name("moe_kv_cache_blocks_used")
                          .Help("Generation: KV-cache blocks held by sequences.")
                          .Register(r);
  f.kv_blocks_total = &prometheus::BuildGauge()
                           .Name("moe_kv_cache_blocks_total")
                           .Help("Generation: KV-cache blocks in the pool (--kv-cache-bytes).")
                           .Register(r);
  prometheus::BuildGauge()
      .Name("moe_expert_timing_sample_ratio")
      .Help(
          "Fraction of forward passes whose experts are timed one by one "
          "(--expert-timing-sample-rate).")
      .Register(r)
      .Add({})
      .Set(options.expert_timing_sample_rate);

  for (const std::string& name : model_names) {
    if (metrics->models_.contains(name)) continue;
    metrics->models_.emplace(name,
                             std::make_unique<ModelMetrics>(name, /*served=*/true, f, options));
  }
  metrics->unknown_model_ =
      std::make_unique<ModelMetrics>(kUnknownModelLabel, /*served=*/false, f, options);
  return metrics;
}

ModelMetrics* ServerMetrics::ForModel(std::string_view name) const {
  auto it = models_.find(absl::string_view(name.data(), name.size()));
  return it != models_.end() ? it->second.get() : unknown_model_.get();
}

void ServerMetrics::SetDeviceMemoryReader(DeviceMemoryReader reader) {
  scrape_collector_->SetReader(std::move(reader));
}

std::vector<std::weak_ptr<prometheus::Collectable>> ServerMetrics::Collectables() const {
  return {registry_, scrape_collector_};
}

std::string ServerMetrics::SerializeText() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (prometheus::MetricFamily& family : scrape_collector_->Collect()) {
    families.push_back(std::move(family));
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace moe::metrics
