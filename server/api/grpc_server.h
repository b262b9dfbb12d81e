// The gRPC server: KServe v2, moe.v1, grpc.health.v1 and reflection on one listening address,
// with the message size limit and the health status kept in step with the model registry.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/api/kserve_service.h"
#include "server/api/model_registry.h"
#include "server/api/moe_service.h"

namespace moe::api {

struct GrpcServerOptions {
  std::string address = "0.0.0.0:8001";  // HOST:PORT; port 0 picks a free one
  // Largest request message; a larger one gets RESOURCE_EXHAUSTED from gRPC.
  int64_t max_message_bytes = 64 << 20;
  std::string server_version;
  // Counts ModelInfer outcomes and latencies; null: no metrics. Must outlive the server.
  metrics::ServerMetrics* metrics = nullptr;
};

class GrpcServer {
 public:
  // Starts listening. Health answers NOT_SERVING until UpdateHealth() sees every model ready.
  // UNAVAILABLE when the address cannot be bound.
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
