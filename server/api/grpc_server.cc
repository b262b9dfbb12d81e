#include "server/api/grpc_server.h"

#include <grpc/grpc.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/api/bearer_token_auth.h"
#include "server/api/server_credentials.h"

namespace moe::api {
namespace {

// A duration as a gRPC millisecond argument: INT_MAX (gRPC's "infinite") when it is longer.
int Milliseconds(absl::Duration duration) {
  if (duration >= absl::Milliseconds(std::numeric_limits<int>::max())) {
    return std::numeric_limits<int>::max();
  }
  return static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(duration)));
}

void ApplyConnectionOptions(const GrpcConnectionOptions& options, grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, Milliseconds(options.keepalive_time));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                              Milliseconds(options.keepalive_timeout));
  // Clients may keep idle connections alive too, at the same minimum interval; without this a
  // ping on a connection with no call in flight is a strike unless two hours apart.
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // The server's own keepalive pings do not stop after two without data.
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                              Milliseconds(options.min_ping_interval));
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, options.max_ping_strikes);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                              Milliseconds(options.max_connection_age));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                              Milliseconds(options.max_connection_age_grace));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
}

}  // namespace

absl::Status ValidateConnectionOptions(const GrpcConnectionOptions& options) {
  auto positive = [](absl::Duration d, const char* flag) {
    return d > absl::ZeroDuration()
               ? absl::OkStatus()
               : absl::InvalidArgumentError(
                     absl::StrCat(flag, " must be positive, got ", absl::FormatDuration(d)));
  };
  auto not_negative = [](absl::Duration d, const char* flag) {
    return d >= absl::ZeroDuration()
               ? absl::OkStatus()
               : absl::InvalidArgumentError(
                     absl::StrCat(flag, " must not be negative, got ", absl::FormatDuration(d)));
  };
  for (absl::Status status :
       {positive(options.keepalive_time, "--grpc-keepalive-time"),
        positive(options.keepalive_timeout, "--grpc-keepalive-timeout"),
        not_negative(options.min_ping_interval, "--grpc-min-ping-interval"),
        positive(options.max_connection_age, "--grpc-max-connection-age"),
        not_negative(options.max_connection_age_grace, "--grpc-max-connection-age-grace")}) {
    if (!status.ok()) return status;
  }
  if (options.max_ping_strikes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--grpc-max-ping-strikes must not be negative, got ", options.max_ping_strikes));
  }
  if (options.max_concurrent_streams < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--grpc-max-concurrent-streams must be at least 1, got ", options.max_concurrent_streams));
  }
  return absl::OkStatus();
}

GrpcServer::GrpcServer(ModelRegistry* registry, const GrpcServerOptions& options)
    : registry_(registry),
      kserve_service_(registry, {.server_version = options.server_version}, options.metrics),
      moe_service_(registry, options.metrics) {}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(const GrpcServerOptions& options,
                                                              ModelRegistry* registry) {
  if (options.max_message_bytes < 1 ||
      options.max_message_bytes > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("--max-message-bytes must be between 1 and ",
                                                   std::numeric_limits<int>::max(), ", got ",
                                                   options.max_message_bytes));
  }
  if (absl::Status valid = ValidateConnectionOptions(options.connection); !valid.ok()) {
    return valid;
  }
  std::shared_ptr<grpc::AuthMetadataProcessor> authenticator;
  if (!options.auth_tokens.empty()) {
    absl::StatusOr<std::shared_ptr<BearerTokenAuthenticator>> created =
        BearerTokenAuthenticator::Create(options.auth_tokens);
    if (!created.ok()) return created.status();
    authenticator = *std::move(created);
  }
  std::unique_ptr<GrpcServer> server(new GrpcServer(registry, options));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Token checks run in gRPC's auth filter, before any handler (reflection's included) and
  // before the request message is parsed; see server_credentials.h.
  builder.AddListeningPort(options.address, MakeServerCredentials(options.tls, authenticator),
                           &server->port_);
  builder.RegisterService(&server->kserve_service_);
  builder.RegisterService(&server->moe_service_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  // gRPC sets SO_REUSEPORT by default, so a second server on a busy port would start and
  // silently take half the connections; a busy port must be an error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  ApplyConnectionOptions(options.connection, &builder);
  // Responses are not capped: they echo the request id and their size follows the request's.
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.address,
                     " (address in use, not local, or malformed; --address takes HOST:PORT",
                     options.tls.has_value() ? "; or TLS material gRPC refused" : "", ")"));
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
