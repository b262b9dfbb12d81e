#include "server/api/bearer_token_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "server/api/grpc_status.h"
#include "server/api/secret_file.h"

namespace moe::api {
namespace {

constexpr char kAuthorizationKey[] = "authorization";
constexpr char kPathKey[] = ":path";
// Kubernetes' gRPC probes and load balancers' health checks carry no credentials.
constexpr absl::string_view kExemptServices[] = {"/grpc.health.v1.Health/"};

bool IsTokenCharacter(char c) {
  return absl::ascii_isgraph(static_cast<unsigned char>(c));  // printable, not a space
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ParseTokens(absl::string_view text,
                                                     absl::string_view origin) {
  std::vector<std::string> tokens;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text), '\n')) {
    ++line_number;
    const absl::string_view token = absl::StripAsciiWhitespace(line);
    if (token.empty() || token.front() == '#') continue;
    for (char c : token) {
      if (!IsTokenCharacter(c)) {
        return absl::InvalidArgumentError(absl::StrCat(
            origin, ": line ", line_number,
            " holds whitespace or a control character inside the token (one token per line; "
            "lines starting with '#' are comments)"));
      }
    }
    tokens.emplace_back(token);
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin,
                     ": no token in the file (one token per line; blank lines and lines "
                     "starting with '#' are ignored)"));
  }
  return tokens;
}

absl::StatusOr<std::vector<std::string>> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadSecretFile("--auth-token-file", path);
  if (!text.ok()) return text.status();
  return ParseTokens(*text, absl::StrCat("--auth-token-file ", path));
}

absl::StatusOr<std::shared_ptr<BearerTokenAuthenticator>> BearerTokenAuthenticator::Create(
    const std::vector<std::string>& tokens) {
  if (tokens.empty()) return absl::InvalidArgumentError("no bearer token given");
  std::vector<Digest> digests;
  for (const std::string& token : tokens) {
    if (token.empty()) return absl::InvalidArgumentError("empty bearer token");
    Digest digest;
    unsigned int length = 0;
    if (EVP_Digest(token.data(), token.size(), digest.data(), &length, EVP_sha256(), nullptr) !=
            1 ||
        length != digest.size()) {
      return absl::InternalError("SHA-256 of a bearer token failed (OpenSSL)");
    }
    digests.push_back(digest);
  }
  return std::shared_ptr<BearerTokenAuthenticator>(
      new BearerTokenAuthenticator(std::move(digests)));
}

bool BearerTokenAuthenticator::IsExempt(absl::string_view path) {
  for (absl::string_view prefix : kExemptServices) {
    if (absl::StartsWith(path, prefix)) return true;
  }
  return false;
}

absl::Status BearerTokenAuthenticator::Check(absl::string_view path,
                                             const absl::string_view* authorization) const {
  if (IsExempt(path)) return absl::OkStatus();
  if (authorization == nullptr) {
    return absl::UnauthenticatedError(
        "missing bearer token: send metadata 'authorization: Bearer <token>'");
  }
  // RFC 6750: the scheme is case-insensitive, then one or more spaces, then the token.
  constexpr absl::string_view kScheme = "bearer ";
  if (!absl::StartsWithIgnoreCase(*authorization, kScheme)) {
    return absl::UnauthenticatedError(
        "malformed authorization metadata: expected 'authorization: Bearer <token>'");
  }
  const absl::string_view token =
      absl::StripAsciiWhitespace(absl::string_view(*authorization).substr(kScheme.size()));
  Digest presented;
  unsigned int length = 0;
  if (token.empty() || EVP_Digest(token.data(), token.size(), presented.data(), &length,
                                  EVP_sha256(), nullptr) != 1) {
    return absl::UnauthenticatedError(
        "malformed authorization metadata: expected 'authorization: Bearer <token>'");
  }
  // Every digest is compared, in constant time, whatever matched before.
  bool accepted = false;
  for (const Digest& digest : digests_) {
    accepted |= CRYPTO_memcmp(digest.data(), presented.data(), digest.size()) == 0;
  }
  if (!accepted) return absl::UnauthenticatedError("bearer token not accepted");
  return absl::OkStatus();
}

grpc::Status BearerTokenAuthenticator::Process(const InputMetadata& auth_metadata,
                                               grpc::AuthContext* /*context*/,
                                               OutputMetadata* consumed_auth_metadata,
                                               OutputMetadata* /*response_metadata*/) {
  absl::string_view path;
  if (auto it = auth_metadata.find(kPathKey); it != auth_metadata.end()) {
    path = absl::string_view(it->second.data(), it->second.size());
  }
  absl::string_view authorization_value;
  const absl::string_view* authorization = nullptr;
  if (auto it = auth_metadata.find(kAuthorizationKey); it != auth_metadata.end()) {
    authorization_value = absl::string_view(it->second.data(), it->second.size());
    authorization = &authorization_value;
  }
  const absl::Status checked = Check(path, authorization);
  if (checked.ok() && authorization != nullptr) {
    consumed_auth_metadata->emplace(kAuthorizationKey, std::string(authorization_value));
  }
  return ToGrpcStatus(checked);
}

}  // namespace moe::api
