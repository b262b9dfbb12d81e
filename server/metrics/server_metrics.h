// The process's metrics: one prometheus-cpp registry for request, queue and batch metrics, plus
// the series computed when Prometheus scrapes (expert and layer figures of every model, device
// memory). main creates it once, hands each model's handle to that model's scheduler and the
// gRPC layer, and exposes it with MetricsEndpoint.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/registry.h"
#include "server/metrics/model_metrics.h"

namespace moe::metrics {

// The compute device's memory, read at each scrape.
struct DeviceMemory {
  std::string backend;  // "cpu" / "cuda"
  std::string device;   // the backend's device description
  uint64_t used_bytes = 0;
  uint64_t total_bytes = 0;
};
using DeviceMemoryReader = std::function<absl::StatusOr<DeviceMemory>()>;

// Label value of requests that name a model the server does not serve.
inline constexpr char kUnknownModelLabel[] = "(unknown)";

class ServerMetrics {
 public:
  // One handle per name in `model_names` (the models this process serves) plus the
  // "(unknown)" entry. INVALID_ARGUMENT for a bad sample rate or window.
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Create(
      const std::vector<std::string>& model_names, const ModelMetricsOptions& options);
  ~ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The handle of a served model, or the "(unknown)" one. Never null; lock-free (the map does
  // not change after Create).
  ModelMetrics* ForModel(std::string_view name) const;

  // Called at every scrape for the moe_device_memory_* gauges; a failed read leaves them out.
  // Replacing it (with nullptr too) waits for a scrape that is calling the old one.
  void SetDeviceMemoryReader(DeviceMemoryReader reader);

  // What an endpoint exposes: the registry and the scrape-time collector.
  std::vector<std::weak_ptr<prometheus::Collectable>> Collectables() const;

  // The text exposition of everything, as /metrics serves it.
  std::string SerializeText() const;

 private:
  class ScrapeCollector;
  ServerMetrics();

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ScrapeCollector> scrape_collector_;
  MetricFamilies families_;
  absl::flat_hash_map<std::string, std::unique_ptr<ModelMetrics>> models_;
  std::unique_ptr<ModelMetrics> unknown_model_;
};

}  // namespace moe::metrics
