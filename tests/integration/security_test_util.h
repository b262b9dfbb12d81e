// Shared by the security integration tests (TLS, tokens, transport limits, their flags):
// starting moe-server with client credentials, single calls with metadata, TLS channel
// credentials from PEM files, and running the server to its exit.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "tests/testing/server_process.h"

namespace moe::integration {

using Metadata = std::vector<std::pair<std::string, std::string>>;

// {"authorization", "Bearer <token>"}.
Metadata BearerToken(const std::string& token);

// Starts moe-server (--backend cpu) with `args`, probing readiness through `security`.
absl::StatusOr<std::unique_ptr<testing::ServerProcess>> StartServerWithSecurity(
    std::vector<std::string> args, testing::ClientSecurity security);

// TLS channel credentials trusting the CA certificates in `root_file` ("" : gRPC's default
// roots), presenting `cert_file` / `key_file` when given.
std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(const std::string& root_file,
                                                         const std::string& cert_file = "",
                                                         const std::string& key_file = "");

// A fresh channel of its own (no subchannel shared with other channels).
std::shared_ptr<grpc::Channel> ChannelTo(
    const std::string& address, const std::shared_ptr<grpc::ChannelCredentials>& credentials);

// KServe ServerLive with `metadata`.
grpc::Status ServerLive(const std::shared_ptr<grpc::Channel>& channel,
                        const Metadata& metadata = {}, absl::Duration timeout = absl::Seconds(10));

// grpc.health.v1.Health/Check of `service` with `metadata`; `*serving` says whether SERVING.
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         const Metadata& metadata, bool* serving);

// One request message and one response on `method` with serialized bytes (for services this
// repository has no stubs of, e.g. reflection).
grpc::Status RawUnaryCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                          const std::string& request, const Metadata& metadata,
                          std::string* response, absl::Duration timeout = absl::Seconds(10));

// The body of GET /metrics on 127.0.0.1:`port` (plain HTTP/1.0).
absl::StatusOr<std::string> ScrapeMetrics(int port);

// Runs moe-server with `args` (plus a free --address) until it exits.
struct Exited {
  int code = -1;
  std::string log;
};
Exited RunServerToExit(std::vector<std::string> args);

}  // namespace moe::integration
