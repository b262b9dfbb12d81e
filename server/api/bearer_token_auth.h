// Bearer-token authentication of gRPC calls: the tokens of --auth-token-file, and the check every
// call passes in gRPC's auth filter before any handler runs (see server_credentials.h for how
// it is attached to plaintext and TLS ports alike).
#pragma once

#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/security/auth_metadata_processor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::api {

// The tokens of a token file: one per line, surrounding whitespace trimmed, blank lines and
// lines starting with '#' ignored. Errors name `path`: unreadable, a token with whitespace or
// control characters inside (line number given), or no token at all.
absl::StatusOr<std::vector<std::string>> ReadTokenFile(const std::string& path);
// The same for text already read; `origin` names it in errors.
absl::StatusOr<std::vector<std::string>> ParseTokens(absl::string_view text,
                                                     absl::string_view origin);

// Accepts a call when its `authorization` metadata is `Bearer <token>` with one of the tokens,
// and every call to grpc.health.v1.Health (probes carry no credentials); else UNAUTHENTICATED,
// saying whether the token was missing, malformed or not accepted. Tokens are kept as SHA-256
// digests and compared in constant time against all of them, so neither the time taken nor its
// dependence on length tells how close a guess was. The accepted `authorization` entry is
// consumed: handlers never see it.
class BearerTokenAuthenticator final : public grpc::AuthMetadataProcessor {
 public:
  // INVALID_ARGUMENT when `tokens` is empty or holds an empty token.
  static absl::StatusOr<std::shared_ptr<BearerTokenAuthenticator>> Create(
      const std::vector<std::string>& tokens);

  // Methods of these services need no token.
  static bool IsExempt(absl::string_view path);

  // OK or UNAUTHENTICATED for a call to `path` ("/package.Service/Method") that carried
  // `authorization` (null when it carried none).
  absl::Status Check(absl::string_view path, const absl::string_view* authorization) const;

  // grpc::AuthMetadataProcessor. Cheap and non-blocking: run on gRPC's own thread.
  bool IsBlocking() const override { return false; }
  // `context` is not used (and may be null).
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  using Digest = std::array<unsigned char, 32>;
  explicit BearerTokenAuthenticator(std::vector<Digest> digests) : digests_(std::move(digests)) {}

  std::vector<Digest> digests_;
};

}  // namespace moe::api
