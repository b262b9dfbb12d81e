// The credentials of the gRPC listening port: TLS (optionally requiring client certificates) or
// plaintext, either one with an optional grpc::AuthMetadataProcessor that every call passes in
// gRPC's auth filter, before any handler runs and before the request is parsed.
#pragma once

#include <memory>
#include <optional>

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/security/server_credentials.h>

#include "server/api/tls_files.h"

namespace moe::api {

// `tls`: nullopt serves plaintext. With a client CA, clients must present a certificate that
// chains to it (mutual TLS). `auth`: null accepts every call.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const std::optional<TlsPem>& tls, std::shared_ptr<grpc::AuthMetadataProcessor> auth);

}  // namespace moe::api
