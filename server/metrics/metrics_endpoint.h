// The HTTP endpoint Prometheus scrapes: prometheus-cpp's Exposer (CivetWeb) serving
// ServerMetrics at /metrics.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/metrics/server_metrics.h"

namespace prometheus {
class Exposer;
}

namespace moe::metrics {

class MetricsEndpoint {
 public:
  // Listens on `host`:`port` (port 1..65535) and serves `metrics` at /metrics. `host` is a
  // local IPv4 address or name ("0.0.0.0" for all, "127.0.0.1", "localhost"). An IPv6 address
  // ("::1" or "[::1]") is passed on in brackets, but binds only where CivetWeb was built with
  // IPv6 support, which Debian 12's prometheus-cpp was not.
  // UNAVAILABLE when the address cannot be bound (in use, not local), INVALID_ARGUMENT for a
  // bad port or an empty host. `metrics` must outlive the endpoint.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const std::string& host, int port,
                                                                const ServerMetrics& metrics);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // "HOST:PORT" as bound.
  const std::string& address() const { return address_; }

 private:
  MetricsEndpoint(std::unique_ptr<prometheus::Exposer> exposer, std::string address);

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
};

}  // namespace moe::metrics
