// The TLS material of the gRPC port: PEM files read and checked with OpenSSL at start-up, so
// that a bad file stops the server with a message naming it, instead of the port failing every
// handshake later.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace moe::api {

struct TlsFiles {
  std::string cert_file;       // --tls-cert: the server's certificate chain, leaf first
  std::string key_file;        // --tls-key: the leaf's private key, not encrypted
  std::string client_ca_file;  // --tls-client-ca: CA certificates that client certificates
                               // must chain to; empty: clients are not asked for one
};

struct TlsPem {
  std::string cert_chain;
  std::string private_key;
  std::string client_ca;  // empty: no client certificates
};

// Reads the files and checks that each holds what it should: at least one certificate, a
// private key that is not encrypted and belongs to the first certificate, at least one CA
// certificate. Errors name the flag and the file: NOT_FOUND / PERMISSION_DENIED /
// FAILED_PRECONDITION when it cannot be read, INVALID_ARGUMENT for its contents.
absl::StatusOr<TlsPem> LoadTlsFiles(const TlsFiles& files);

}  // namespace moe::api
