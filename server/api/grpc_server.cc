#include "server/api/grpc_server.h"

#include <grpc/grpc.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe::api {

GrpcServer::GrpcServer(ModelRegistry* registry, const GrpcServerOptions& options)
    : registry_(registry),
      kserve_service_(registry, {.server_version = options.server_version}, options.metrics),
      moe_service_(registry) {}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(const GrpcServerOptions& options,
                                                              ModelRegistry* registry) {
  if (options.max_message_bytes < 1 ||
      options.max_message_bytes > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("--max-message-bytes must be between 1 and ",
                                                   std::numeric_limits<int>::max(), ", got ",
                                                   options.max_message_bytes));
  }
  std::unique_ptr<GrpcServer> server(new GrpcServer(registry, options));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.address, grpc::InsecureServerCredentials(), &server->port_);
  builder.RegisterService(&server->kserve_service_);
  builder.RegisterService(&server->moe_service_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  // gRPC sets SO_REUSEPORT by default, so a second server on a busy port would start and
  // silently take half the connections; a busy port must be an error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Responses are not capped: they echo the request id and their size follows the request's.
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.address,
                     " (address in use, not local, or malformed; --address takes HOST:PORT)"));
  }
  const size_t colon = options.address.rfind(':');
  server->address_ = absl::StrCat(options.address.substr(0, colon), ":", server->port_);
  server->UpdateHealth();
  return server;
}

GrpcServer::~GrpcServer() {
  if (!shut_down_) Shutdown(absl::Now());
}

void GrpcServer::UpdateHealth() {
  if (server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus("", registry_->AllReady());
  for (const std::string& name : registry_->Names()) {
    health->SetServingStatus(name, registry_->IsReady(name));
  }
}

void GrpcServer::Shutdown(absl::Time deadline) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->Shutdown();  // every service NOT_SERVING from now on
  }
  server_->Shutdown(absl::ToChronoTime(deadline));
  server_->Wait();
}

}  // namespace moe::api
