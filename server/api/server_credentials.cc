#include "server/api/server_credentials.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>

#include <string>
#include <utility>
#include <vector>

namespace moe::api {
namespace {

// Plaintext with an auth metadata processor. gRPC C++ 1.51's InsecureServerCredentials()
// aborts in SetAuthMetadataProcessor, but its C core runs the processor of insecure port
// credentials exactly as for TLS ones (the same server auth filter): this adds the port through
// the C API with the processor attached (gRPC issue #21589 asks for this in C++). The port hook
// of ServerCredentials is a private virtual (grpc::Server calls it), overridden here; later gRPC
// releases replaced it with a protected constructor taking the C credentials, which is where
// this class would hand them over instead.
class PlaintextCredentialsWithAuth final : public grpc::ServerCredentials {
 public:
  explicit PlaintextCredentialsWithAuth(std::shared_ptr<grpc::AuthMetadataProcessor> processor)
      : processor_(std::move(processor)) {}

  void SetAuthMetadataProcessor(
      const std::shared_ptr<grpc::AuthMetadataProcessor>& processor) override {
    processor_ = processor;
  }

 private:
  int AddPortToServer(const std::string& address, grpc_server* server) override {
    grpc_server_credentials* credentials = grpc_insecure_server_credentials_create();
    // The C core owns a reference to the processor until the port's credentials go.
    auto state = std::make_unique<std::shared_ptr<grpc::AuthMetadataProcessor>>(processor_);
    grpc_server_credentials_set_auth_metadata_processor(credentials,
                                                        {&Process, &Destroy, state.release()});
    const int port = grpc_server_add_http2_port(server, address.c_str(), credentials);
    grpc_server_credentials_release(credentials);
    return port;
  }

  static void Destroy(void* state) {
    std::unique_ptr<std::shared_ptr<grpc::AuthMetadataProcessor>> owned(
        static_cast<std::shared_ptr<grpc::AuthMetadataProcessor>*>(state));
  }

  static grpc::string_ref SliceRef(const grpc_slice& slice) {
    return grpc::string_ref(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)),
                            GRPC_SLICE_LENGTH(slice));
  }

  // The C processor: what gRPC's own C++ wrapper does for TLS credentials, minus the thread
  // pool (our processors do not block) and the AuthContext (plaintext carries no identity).
  static void Process(void* state, grpc_auth_context* /*context*/, const grpc_metadata* metadata,
                      size_t count, grpc_process_auth_metadata_done_cb done, void* user_data) {
    auto& processor = *static_cast<std::shared_ptr<grpc::AuthMetadataProcessor>*>(state);
    grpc::AuthMetadataProcessor::InputMetadata input;
    for (size_t i = 0; i < count; ++i) {
      input.emplace(SliceRef(metadata[i].key), SliceRef(metadata[i].value));
    }
    grpc::AuthMetadataProcessor::OutputMetadata consumed;
    grpc::AuthMetadataProcessor::OutputMetadata response;
    const grpc::Status status = processor == nullptr
                                    ? grpc::Status::OK
                                    : processor->Process(input, nullptr, &consumed, &response);
    // The slices point into `consumed`, which outlives `done` (it copies what it keeps).
    std::vector<grpc_metadata> consumed_metadata;
    for (const auto& [key, value] : consumed) {
      grpc_metadata entry{};
      entry.key = grpc_slice_from_static_buffer(key.data(), key.size());
      entry.value = grpc_slice_from_static_buffer(value.data(), value.size());
      consumed_metadata.push_back(entry);
    }
    done(user_data, consumed_metadata.empty() ? nullptr : consumed_metadata.data(),
         consumed_metadata.size(), nullptr, 0, static_cast<grpc_status_code>(status.error_code()),
         status.ok() ? nullptr : status.error_message().c_str());
  }

  std::shared_ptr<grpc::AuthMetadataProcessor> processor_;
};

}  // namespace

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const std::optional<TlsPem>& tls, std::shared_ptr<grpc::AuthMetadataProcessor> auth) {
  if (!tls.has_value()) {
    if (auth == nullptr) return grpc::InsecureServerCredentials();
    return std::make_shared<PlaintextCredentialsWithAuth>(std::move(auth));
  }
  grpc::SslServerCredentialsOptions options(
      tls->client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                             : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = tls->client_ca;
  options.pem_key_cert_pairs.push_back(
      {.private_key = tls->private_key, .cert_chain = tls->cert_chain});
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::SslServerCredentials(options);
  if (auth != nullptr) credentials->SetAuthMetadataProcessor(auth);
  return credentials;
}

}  // namespace moe::api
