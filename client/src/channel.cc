#include "client/src/channel.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/src/retry.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace moe::client {
namespace {

// The text of a PEM file named by option `option`; INVALID_ARGUMENT when it cannot be read or
// holds no "-----BEGIN <something><marker>-----" line.
absl::StatusOr<std::string> ReadPem(const std::string& option, const std::string& path,
                                    const std::string& marker, const std::string& what) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::InvalidArgumentError(
        absl::StrCat(option, " '", path, "' cannot be read: ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) {
    return absl::InvalidArgumentError(absl::StrCat(option, " '", path, "' cannot be read"));
  }
  const std::string pem = text.str();
  const size_t begin = pem.find("-----BEGIN ");
  if (begin == std::string::npos ||
      pem.find(absl::StrCat(marker, "-----"), begin) == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(option, " '", path, "' holds no PEM ", what,
                                                   " (a '-----BEGIN ...", marker, "-----' block)"));
  }
  return pem;
}

int ClampedMillis(absl::Duration duration, int64_t low, int64_t high) {
  return static_cast<int>(std::clamp(absl::ToInt64Milliseconds(duration), low, high));
}

}  // namespace

absl::Status ValidateConnectOptions(const ConnectOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("target is empty");
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_bytes is ", options.max_message_bytes, "; it must be > 0"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "timeout is ", absl::FormatDuration(options.timeout), "; it must be > 0 (or infinite)"));
  }
  if (absl::Status status = ValidateRetryPolicy(options.retry); !status.ok()) return status;
  if (!options.tls) {
    for (const auto& [name, value] : {std::pair<const char*, const std::string&>{
                                          "tls_root_certs_file", options.tls_root_certs_file},
                                      {"tls_client_cert_file", options.tls_client_cert_file},
                                      {"tls_client_key_file", options.tls_client_key_file},
                                      {"tls_server_name", options.tls_server_name}}) {
      if (!value.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " is set but tls is off: turn tls on or leave it empty"));
      }
    }
  }
  if (options.tls_client_cert_file.empty() != options.tls_client_key_file.empty()) {
    return absl::InvalidArgumentError(
        "mutual TLS needs both tls_client_cert_file and tls_client_key_file");
  }
  for (char c : options.bearer_token) {
    // gRPC metadata values are printable ASCII; a token never holds spaces.
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(
          "bearer_token holds a space, control or non-ASCII character; gRPC metadata cannot "
          "carry it");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ConnectOptions& options) {
  if (absl::Status status = ValidateConnectOptions(options); !status.ok()) return status;

  grpc::ChannelArguments arguments;
  arguments.SetMaxSendMessageSize(options.max_message_bytes);
  arguments.SetMaxReceiveMessageSize(options.max_message_bytes);
  // A connection of this client's own, not shared with other channels to the same target.
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // gRPC waits 1 s, then up to 120 s, between reconnection attempts by default, failing calls at
  // once meanwhile: retries would be spent on a channel that is not trying. Reconnect on the
  // retry policy's scale instead.
  const int initial_ms = ClampedMillis(options.retry.initial_backoff, 10, 60'000);
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, initial_ms);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                   ClampedMillis(options.retry.max_backoff, initial_ms, 120'000));

  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (!options.tls) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_root_certs_file.empty()) {
      auto roots =
          ReadPem("tls_root_certs_file", options.tls_root_certs_file, "CERTIFICATE", "certificate");
      if (!roots.ok()) return roots.status();
      ssl.pem_root_certs = *std::move(roots);
    }
    if (!options.tls_client_cert_file.empty()) {
      auto chain = ReadPem("tls_client_cert_file", options.tls_client_cert_file, "CERTIFICATE",
                           "certificate");
      if (!chain.ok()) return chain.status();
      auto key =
          ReadPem("tls_client_key_file", options.tls_client_key_file, "PRIVATE KEY", "private key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *std::move(chain);
      ssl.pem_private_key = *std::move(key);
    }
    credentials = grpc::SslCredentials(ssl);
    if (credentials == nullptr) {
      return absl::InvalidArgumentError("gRPC refused the TLS credentials");
    }
    if (!options.tls_server_name.empty()) {
      arguments.SetSslTargetNameOverride(
          options.tls_server_name);  // GRPC_SSL_TARGET_NAME_OVERRIDE_ARG
    }
  }
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options.target, credentials, arguments);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("gRPC cannot make a channel to target '", options.target, "'"));
  }
  return channel;
}

void AddCallMetadata(const ConnectOptions& options, grpc::ClientContext& context) {
  if (!options.bearer_token.empty()) {
    context.AddMetadata("authorization", absl::StrCat("Bearer ", options.bearer_token));
  }
}

}  // namespace moe::client
