#include "server/metrics/metrics_endpoint.h"

#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "server/metrics/thread_stack_floor.h"

namespace moe::metrics {

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& host, int port, const ServerMetrics& metrics) {
  if (port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics port ", port, " is not between 1 and 65535"));
  }
  if (host.empty()) {
    return absl::InvalidArgumentError("metrics address: empty host (--metrics-address)");
  }
  // CivetWeb wants IPv6 hosts in brackets, as gRPC does; --metrics-address may omit them.
  const bool bare_ipv6 = host.find(':') != std::string::npos && host.front() != '[';
  const std::string address =
      absl::StrCat(bare_ipv6 ? "[" : "", host, bare_ipv6 ? "]" : "", ":", port);
  // CivetWeb's threads need the floor (thread_stack_floor.cc); calling it keeps it linked in.
  if (ThreadStackFloor() < kMinimumThreadStack) {
    return absl::InternalError("thread stack floor is not in effect");
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    // Two threads: Prometheus scrapes one request at a time; the second keeps a slow client
    // from holding the endpoint.
    exposer = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what(),
                     " (is the port in use, or the host not a local address? choose another with "
                     "--metrics-port or --metrics-address)"));
  }
  for (const std::weak_ptr<prometheus::Collectable>& collectable : metrics.Collectables()) {
    exposer->RegisterCollectable(collectable);
  }
  return std::unique_ptr<MetricsEndpoint>(new MetricsEndpoint(std::move(exposer), address));
}

MetricsEndpoint::MetricsEndpoint(std::unique_ptr<prometheus::Exposer> exposer, std::string address)
    : exposer_(std::move(exposer)), address_(std::move(address)) {}

MetricsEndpoint::~MetricsEndpoint() = default;

}  // namespace moe::metrics
