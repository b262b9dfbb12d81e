// One model's expert and layer metrics: cumulative per-expert token counters, measured
// per-expert compute time, per-layer duration histograms, and the sliding window behind the
// load gauges (share, imbalance, idle experts, routing entropy).
//
// These are kept here rather than as prometheus-cpp counters because a batch updates
// layers x experts of them at once: one mutex and plain additions on the scheduler thread,
// while the gauges (and the window sums behind them) are computed only when Prometheus scrapes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "server/metrics/batch_observation.h"
#include "server/metrics/expert_load_window.h"

namespace moe::metrics {

enum class ExpertSeries {
  kPerExpert,  // moe_expert_* families, one series per (layer, expert)
  kPerLayer,   // per-layer families only (bounded series for very large models)
};

// The families of every model's expert metrics, filled model by model at one scrape, so that
// each family appears once in the exposition whatever the number of models.
struct ExpertFamilies {
  ExpertFamilies();
  std::vector<prometheus::MetricFamily> TakeNonEmpty();

  prometheus::MetricFamily layer_tokens;
  prometheus::MetricFamily layer_duration;
  prometheus::MetricFamily layer_imbalance;
  prometheus::MetricFamily layer_entropy;
  prometheus::MetricFamily layer_idle;
  prometheus::MetricFamily expert_tokens;
  prometheus::MetricFamily expert_share;
  prometheus::MetricFamily expert_seconds;
  prometheus::MetricFamily expert_samples;
};

struct ExpertMetricsOptions {
  ExpertSeries series = ExpertSeries::kPerExpert;
  absl::Duration window = absl::Seconds(60);
  int window_slots = 12;
};

class ExpertMetrics {
 public:
  // INVALID_ARGUMENT for non-positive shapes or a window too short for its slots.
  static absl::StatusOr<std::unique_ptr<ExpertMetrics>> Create(std::string model,
                                                               int64_t num_layers,
                                                               int64_t num_experts,
                                                               const ExpertMetricsOptions& options);

  // Adds one successful forward pass seen at `now`. Spans of the wrong size are ignored (a
  // model without routing outputs reports none).
  void Record(const BatchObservation& batch, absl::Time now);

  // Appends this model's series to `families`, with the window ending at `now`.
  void Collect(absl::Time now, ExpertFamilies* families) const;

  // Upper bounds of the layer duration histogram, in seconds.
  static const prometheus::Histogram::BucketBoundaries& LayerDurationBuckets();

 private:
  ExpertMetrics(std::string model, int64_t num_layers, int64_t num_experts, ExpertSeries series,
                ExpertLoadWindow window);

  const std::string model_;
  const int64_t num_layers_;
  const int64_t num_experts_;
  const ExpertSeries series_;
  // Histograms lock themselves; one per layer, created once.
  std::vector<std::unique_ptr<prometheus::Histogram>> layer_duration_;

  mutable absl::Mutex mu_;
  std::vector<int64_t> expert_tokens_ ABSL_GUARDED_BY(mu_);   // [layers, experts], cumulative
  std::vector<double> expert_seconds_ ABSL_GUARDED_BY(mu_);   // [layers, experts], cumulative
  std::vector<int64_t> expert_samples_ ABSL_GUARDED_BY(mu_);  // [layers, experts], cumulative
  ExpertLoadWindow window_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe::metrics
