// The channel a Client talks over, made from ConnectOptions: plaintext, or TLS with the PEM files
// read at once (optionally mutual TLS, optionally another name checked in the server's
// certificate), its own connection, message limits, and gRPC's reconnect back-off aligned with
// the retry policy.
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "moe/client/client.h"

namespace moe::client {

// INVALID_ARGUMENT naming the option: an empty target, a limit or timeout <= 0, a bad retry
// policy, TLS files or a server name without `tls`, a client certificate without its key (or
// the reverse), a bearer token with characters gRPC metadata cannot carry.
absl::Status ValidateConnectOptions(const ConnectOptions& options);

// Validates `options`, reads the TLS files (INVALID_ARGUMENT naming a file that cannot be read
// or holds no PEM block of the expected kind) and makes the channel. Connects lazily.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ConnectOptions& options);

// What every call carries: "authorization: Bearer <token>" when a token is set. Call
// credentials (grpc::AccessTokenCredentials) are not used because gRPC sends them only over
// TLS, and moe-server has no TLS yet; metadata on each ClientContext works on both.
void AddCallMetadata(const ConnectOptions& options, grpc::ClientContext& context);

}  // namespace moe::client
