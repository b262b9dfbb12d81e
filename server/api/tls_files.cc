#include "server/api/tls_files.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/api/secret_file.h"

namespace moe::api {
namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// OpenSSL's reason for the last failure on this thread ("" when none), and clears the queue.
std::string OpenSslReason() {
  const unsigned long error = ERR_peek_last_error();
  ERR_clear_error();
  if (error == 0) return "";
  const char* reason = ERR_reason_error_string(error);
  return reason != nullptr ? absl::StrCat(" (", reason, ")") : "";
}

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate of `pem` and how many there are; INVALID_ARGUMENT when there is none or
// one does not parse.
absl::StatusOr<X509Ptr> ParseCertificates(const std::string& pem, absl::string_view origin,
                                          int* count) {
  ERR_clear_error();
  BioPtr bio = MemoryBio(pem);
  if (bio == nullptr) return absl::InternalError("BIO_new_mem_buf failed (out of memory?)");
  X509Ptr first;
  *count = 0;
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    if (first == nullptr) first = std::move(cert);
    ++*count;
  }
  // Running out of PEM blocks ends the loop with "no start line"; anything else is an error.
  const unsigned long error = ERR_peek_last_error();
  const bool clean_end = ERR_GET_LIB(error) == ERR_LIB_PEM &&
                         ERR_GET_REASON(error) == PEM_R_NO_START_LINE && *count > 0;
  if (error != 0 && !clean_end) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": not a PEM certificate file", OpenSslReason()));
  }
  ERR_clear_error();
  if (*count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": no PEM certificate (-----BEGIN CERTIFICATE-----) in the file"));
  }
  return first;
}

// Refuses to prompt for a passphrase (OpenSSL's default would read the terminal).
int NoPassphrase(char* /*buffer*/, int /*size*/, int /*rwflag*/, void* /*user*/) { return -1; }

}  // namespace

absl::StatusOr<TlsPem> LoadTlsFiles(const TlsFiles& files) {
  TlsPem pem;
  const std::string cert_origin = absl::StrCat("--tls-cert ", files.cert_file);
  const std::string key_origin = absl::StrCat("--tls-key ", files.key_file);
  absl::StatusOr<std::string> cert_chain = ReadSecretFile("--tls-cert", files.cert_file);
  if (!cert_chain.ok()) return cert_chain.status();
  absl::StatusOr<std::string> private_key = ReadSecretFile("--tls-key", files.key_file);
  if (!private_key.ok()) return private_key.status();
  pem.cert_chain = *std::move(cert_chain);
  pem.private_key = *std::move(private_key);

  int count = 0;
  absl::StatusOr<X509Ptr> leaf = ParseCertificates(pem.cert_chain, cert_origin, &count);
  if (!leaf.ok()) return leaf.status();

  ERR_clear_error();
  BioPtr key_bio = MemoryBio(pem.private_key);
  if (key_bio == nullptr) return absl::InternalError("BIO_new_mem_buf failed (out of memory?)");
  PkeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_origin,
                     ": not a PEM private key, or an encrypted one (the key must not be "
                     "encrypted; keep it readable only by the server)",
                     OpenSslReason()));
  }
  if (X509_check_private_key(leaf->get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        key_origin, ": the key does not belong to the (first) certificate in ", cert_origin));
  }

  if (!files.client_ca_file.empty()) {
    absl::StatusOr<std::string> client_ca = ReadSecretFile("--tls-client-ca", files.client_ca_file);
    if (!client_ca.ok()) return client_ca.status();
    pem.client_ca = *std::move(client_ca);
    absl::StatusOr<X509Ptr> ca = ParseCertificates(
        pem.client_ca, absl::StrCat("--tls-client-ca ", files.client_ca_file), &count);
    if (!ca.ok()) return ca.status();
  }
  return pem;
}

}  // namespace moe::api
