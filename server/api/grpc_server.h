// The gRPC server: KServe v2, moe.v1, grpc.health.v1 and reflection on one listening address,
// with the message size limit and the health status kept in step with the model registry;
// plaintext or TLS (optionally mutual), optionally bearer tokens, keepalive and HTTP/2 limits.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/api/kserve_service.h"
#include "server/api/model_registry.h"
#include "server/api/moe_service.h"
#include "server/api/tls_files.h"

namespace moe::api {

// Keepalive and HTTP/2 limits of every connection (gRPC channel arguments). Defaults are gRPC's
// own except where noted.
struct GrpcConnectionOptions {
  // A connection with calls in flight (or, here, without: clients may ping idle connections
  // too) that has been silent this long gets a ping; no ack within keepalive_timeout closes it.
  absl::Duration keepalive_time = absl::Hours(2);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  // A client ping less than this after the previous one, with no data sent in between, is a
  // strike; more than max_ping_strikes of them close the connection (GOAWAY ENHANCE_YOUR_CALM
  // "too_many_pings"). gRPC's default interval is 5 minutes, which punishes common client
  // keepalive settings (30 s); 10 s still stops ping floods. 0 strikes: never close.
  absl::Duration min_ping_interval = absl::Seconds(10);
  int max_ping_strikes = 2;
  // Connections older than this get a GOAWAY (clients reconnect, e.g. to new replicas); calls
  // in flight then have max_connection_age_grace to finish. Infinite: never.
  absl::Duration max_connection_age = absl::InfiniteDuration();
  absl::Duration max_connection_age_grace = absl::Seconds(30);
  // Calls in flight per connection; a client's further calls wait in the client until one
  // ends. gRPC's default is unlimited.
  int max_concurrent_streams = 100;
};

// INVALID_ARGUMENT naming the flag of the first bad value.
absl::Status ValidateConnectionOptions(const GrpcConnectionOptions& options);

struct GrpcServerOptions {
  std::string address = "0.0.0.0:8001";  // HOST:PORT; port 0 picks a free one
  // Largest request message; a larger one gets RESOURCE_EXHAUSTED from gRPC.
  int64_t max_message_bytes = 64 << 20;
  std::string server_version;
  // Counts ModelInfer outcomes and latencies; null: no metrics. Must outlive the server.
  metrics::ServerMetrics* metrics = nullptr;
  // TLS material (see LoadTlsFiles); nullopt: plaintext.
  std::optional<TlsPem> tls;
  // Bearer tokens every call must carry (health checks excepted; see bearer_token_auth.h);
  // empty: no token is asked for.
  std::vector<std::string> auth_tokens;
  GrpcConnectionOptions connection;
};

class GrpcServer {
 public:
  // Starts listening. Health answers NOT_SERVING until UpdateHealth() sees every model ready.
  // UNAVAILABLE when the address cannot be bound; INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const GrpcServerOptions& options,
                                                           ModelRegistry* registry);
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // The port actually bound (differs from the address's when that asked for port 0).
  int port() const { return port_; }
  const std::string& address() const { return address_; }

  // Sets grpc.health.v1 statuses from the registry: "" and each model name SERVING when ready.
  void UpdateHealth();
  // Stops the server: in-flight calls get until `deadline` to finish, then are cancelled.
  void Shutdown(absl::Time deadline);

 private:
  GrpcServer(ModelRegistry* registry, const GrpcServerOptions& options);

  ModelRegistry* const registry_;
  KServeService kserve_service_;
  MoEService moe_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  bool shut_down_ = false;
};

}  // namespace moe::api
