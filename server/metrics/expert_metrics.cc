#include "server/metrics/expert_metrics.h"

#include <span>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "server/metrics/load_statistics.h"

namespace moe::metrics {
namespace {

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  return family;
}

prometheus::ClientMetric Labelled(const std::string& model, int64_t layer) {
  prometheus::ClientMetric metric;
  metric.label = {{"layer", absl::StrCat(layer)}, {"model", model}};
  return metric;
}

prometheus::ClientMetric Labelled(const std::string& model, int64_t layer, int64_t expert) {
  prometheus::ClientMetric metric;
  metric.label = {
      {"expert", absl::StrCat(expert)}, {"layer", absl::StrCat(layer)}, {"model", model}};
  return metric;
}

void AddCounter(prometheus::MetricFamily& family, prometheus::ClientMetric metric, double value) {
  metric.counter.value = value;
  family.metric.push_back(std::move(metric));
}

void AddGauge(prometheus::MetricFamily& family, prometheus::ClientMetric metric, double value) {
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
}

}  // namespace

ExpertFamilies::ExpertFamilies()
    : layer_tokens(Family("moe_layer_tokens_total",
                          "Token-to-expert assignments in the MoE layer (rows x top-k).",
                          prometheus::MetricType::Counter)),
      layer_duration(Family("moe_layer_duration_seconds",
                            "Wall time of the layer's MoE block per forward pass.",
                            prometheus::MetricType::Histogram)),
      layer_imbalance(Family("moe_layer_load_imbalance",
                             "Largest expert's tokens over the mean per expert, in the window "
                             "(1 = balanced, E = one expert takes all).",
                             prometheus::MetricType::Gauge)),
      layer_entropy(Family("moe_layer_routing_entropy_nats",
                           "Mean entropy of the router's gate distribution per token, in the "
                           "window, in nats (0 = certain, ln(E) = uniform).",
                           prometheus::MetricType::Gauge)),
      layer_idle(Family("moe_layer_idle_experts", "Experts that got no token in the window.",
                        prometheus::MetricType::Gauge)),
      expert_tokens(Family("moe_expert_tokens_total", "Tokens routed to the expert.",
                           prometheus::MetricType::Counter)),
      expert_share(Family("moe_expert_load_share",
                          "The expert's share of the layer's assignments in the window.",
                          prometheus::MetricType::Gauge)),
      expert_seconds(Family("moe_expert_compute_seconds_total",
                            "Measured compute time of the expert over sampled forward passes.",
                            prometheus::MetricType::Counter)),
      expert_samples(Family("moe_expert_compute_samples_total",
                            "Sampled forward passes in which the expert had tokens.",
                            prometheus::MetricType::Counter)) {}

std::vector<prometheus::MetricFamily> ExpertFamilies::TakeNonEmpty() {
  std::vector<prometheus::MetricFamily> out;
  for (prometheus::MetricFamily* family :
       {&layer_tokens, &layer_duration, &layer_imbalance, &layer_entropy, &layer_idle,
        &expert_tokens, &expert_share, &expert_seconds, &expert_samples}) {
    if (!family->metric.empty()) out.push_back(std::move(*family));
  }
  return out;
}

const prometheus::Histogram::BucketBoundaries& ExpertMetrics::LayerDurationBuckets() {
  static const auto* const buckets = new prometheus::Histogram::BucketBoundaries{
      1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1};
  return *buckets;
}

absl::StatusOr<std::unique_ptr<ExpertMetrics>> ExpertMetrics::Create(
    std::string model, int64_t num_layers, int64_t num_experts,
    const ExpertMetricsOptions& options) {
  absl::StatusOr<ExpertLoadWindow> window =
      ExpertLoadWindow::Create(num_layers, num_experts, options.window, options.window_slots);
  if (!window.ok()) return window.status();
  return absl::WrapUnique(new ExpertMetrics(std::move(model), num_layers, num_experts,
                                            options.series, std::move(*window)));
}

ExpertMetrics::ExpertMetrics(std::string model, int64_t num_layers, int64_t num_experts,
                             ExpertSeries series, ExpertLoadWindow window)
    : model_(std::move(model)),
      num_layers_(num_layers),
      num_experts_(num_experts),
      series_(series),
      expert_tokens_(static_cast<size_t>(num_layers * num_experts), 0),
      expert_seconds_(static_cast<size_t>(num_layers * num_experts), 0.0),
      expert_samples_(static_cast<size_t>(num_layers * num_experts), 0),
      window_(std::move(window)) {
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    layer_duration_.push_back(std::make_unique<prometheus::Histogram>(LayerDurationBuckets()));
  }
}

void ExpertMetrics::Record(const BatchObservation& batch, absl::Time now) {
  const size_t cells = static_cast<size_t>(num_layers_ * num_experts_);
  if (batch.layer_seconds.size() == static_cast<size_t>(num_layers_)) {
    for (int64_t layer = 0; layer < num_layers_; ++layer) {
      layer_duration_[layer]->Observe(batch.layer_seconds[layer]);
    }
  }
  const bool have_tokens = batch.expert_tokens.size() == cells;
  const bool have_entropy = batch.entropy_sum.size() == static_cast<size_t>(num_layers_);
  const bool have_times = batch.expert_seconds.size() == cells;
  if (!have_tokens) return;
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < cells; ++i) expert_tokens_[i] += batch.expert_tokens[i];
  if (have_times) {
    for (size_t i = 0; i < cells; ++i) {
      if (batch.expert_tokens[i] == 0) continue;
      expert_seconds_[i] += batch.expert_seconds[i];
      ++expert_samples_[i];
    }
  }
  window_.Add(now, batch.expert_tokens,
              have_entropy ? batch.entropy_sum : std::span<const double>(), batch.rows);
}

void ExpertMetrics::Collect(absl::Time now, ExpertFamilies* families) const {
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    prometheus::ClientMetric metric = layer_duration_[layer]->Collect();
    metric.label = Labelled(model_, layer).label;
    families->layer_duration.metric.push_back(std::move(metric));
  }
  absl::MutexLock lock(&mu_);
  const ExpertLoadWindow::Totals window = window_.Sum(now);
  for (int64_t layer = 0; layer < num_layers_; ++layer) {
    const size_t begin = static_cast<size_t>(layer * num_experts_);
    const std::span<const int64_t> cumulative(expert_tokens_.data() + begin,
                                              static_cast<size_t>(num_experts_));
    int64_t layer_tokens = 0;
    for (int64_t tokens : cumulative) layer_tokens += tokens;
    AddCounter(families->layer_tokens, Labelled(model_, layer), static_cast<double>(layer_tokens));

    const std::span<const int64_t> recent(window.expert_tokens.data() + begin,
                                          static_cast<size_t>(num_experts_));
    const std::optional<double> imbalance = LoadImbalance(recent);
    // An empty window has no load to describe: the gauges are left out rather than reading
    // "every expert idle" while there is simply no traffic.
    if (imbalance.has_value()) {
      AddGauge(families->layer_imbalance, Labelled(model_, layer), *imbalance);
      AddGauge(families->layer_idle, Labelled(model_, layer),
               static_cast<double>(IdleExperts(recent)));
      if (window.entropy_rows > 0) {
        AddGauge(families->layer_entropy, Labelled(model_, layer),
                 window.entropy_sum[layer] / static_cast<double>(window.entropy_rows));
      }
    }
    if (series_ != ExpertSeries::kPerExpert) continue;
    const std::vector<double> shares = LoadShares(recent);
    for (int64_t expert = 0; expert < num_experts_; ++expert) {
      const size_t cell = begin + static_cast<size_t>(expert);
      AddCounter(families->expert_tokens, Labelled(model_, layer, expert),
                 static_cast<double>(expert_tokens_[cell]));
      AddCounter(families->expert_seconds, Labelled(model_, layer, expert), expert_seconds_[cell]);
      AddCounter(families->expert_samples, Labelled(model_, layer, expert),
                 static_cast<double>(expert_samples_[cell]));
      if (!shares.empty()) {
        AddGauge(families->expert_share, Labelled(model_, layer, expert), shares[expert]);
      }
    }
  }
}

}  // namespace moe::metrics
