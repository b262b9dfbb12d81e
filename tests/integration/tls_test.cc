// gRPC over TLS (--tls-cert, --tls-key) and mutual TLS (--tls-client-ca): clients that trust
// the server's CA (and, for mutual TLS, present a certificate from the client CA) are served;
// every other client fails its handshake and gets UNAVAILABLE, and no plaintext is accepted.
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/integration_util.h"
#include "tests/integration/security_test_util.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/test_certificates.h"

namespace moe::integration {
namespace {

using ::testing::HasSubstr;

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto certificates = testing::MakeTestCertificates(scratch_);
    ASSERT_TRUE(certificates.ok()) << certificates.status();
    certs_ = *certificates;
  }

  // A server with the test CA's server certificate, plus `extra` flags; ready through a
  // client that trusts the CA (and presents the client certificate).
  void StartTlsServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--tls-cert", certs_.server_cert, "--tls-key",
                                     certs_.server_key};
    args.insert(args.end(), extra.begin(), extra.end());
    auto server = StartServerWithSecurity(
        args,
        {.credentials = TlsCredentials(certs_.ca_cert, certs_.client_cert, certs_.client_key)});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  grpc::Status LiveThrough(const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
    return ServerLive(ChannelTo(server_->address(), credentials), {}, absl::Seconds(5));
  }

  testing::ScratchDir scratch_;
  testing::TestCertificates certs_;
  std::unique_ptr<testing::ServerProcess> server_;
};

TEST_F(TlsTest, ClientTrustingTheCaIsServed) {
  ASSERT_NO_FATAL_FAILURE(StartTlsServer());
  EXPECT_THAT(LiveThrough(TlsCredentials(certs_.ca_cert)), GrpcOk());
  // Inference too, and the health service.
  auto stub = inference::GRPCInferenceService::NewStub(
      ChannelTo(server_->address(), TlsCredentials(certs_.ca_cert)));
  std::mt19937_64 rng(7);
  inference::ModelInferResponse response;
  EXPECT_THAT(
      Infer(*stub, MakeInferRequest(kDigits, UniformRows(rng, 2, kDigitsWidth), 2, kDigitsWidth),
            &response),
      GrpcOk());
  bool serving = false;
  EXPECT_THAT(
      HealthCheck(ChannelTo(server_->address(), TlsCredentials(certs_.ca_cert)), "", {}, &serving),
      GrpcOk());
  EXPECT_TRUE(serving);
  EXPECT_THAT(server_->ReadLog(), HasSubstr("tls=on"));
}

TEST_F(TlsTest, ClientNotTrustingTheCaIsRefused) {
  ASSERT_NO_FATAL_FAILURE(StartTlsServer());
  // gRPC's default roots (public CAs) and an unrelated private CA.
  EXPECT_THAT(LiveThrough(TlsCredentials("")),
              GrpcStatusIs(grpc::StatusCode::UNAVAILABLE, ::testing::_));
  EXPECT_THAT(LiveThrough(TlsCredentials(certs_.other_ca_cert)),
              GrpcStatusIs(grpc::StatusCode::UNAVAILABLE, ::testing::_));
}

TEST_F(TlsTest, PlaintextClientIsRefused) {
  ASSERT_NO_FATAL_FAILURE(StartTlsServer());
  EXPECT_THAT(LiveThrough(grpc::InsecureChannelCredentials()),
              GrpcStatusIs(grpc::StatusCode::UNAVAILABLE, ::testing::_));
  bool serving = true;
  EXPECT_THAT(HealthCheck(ChannelTo(server_->address(), grpc::InsecureChannelCredentials()), "", {},
                          &serving),
              GrpcStatusIs(grpc::StatusCode::UNAVAILABLE, ::testing::_));
}

TEST_F(TlsTest, MutualTlsServesAClientWithACertificateFromTheClientCa) {
  ASSERT_NO_FATAL_FAILURE(StartTlsServer({"--tls-client-ca", certs_.ca_cert}));
  EXPECT_THAT(LiveThrough(TlsCredentials(certs_.ca_cert, certs_.client_cert, certs_.client_key)),
              GrpcOk());
  EXPECT_THAT(server_->ReadLog(), HasSubstr("tls=mutual"));
}

TEST_F(TlsTest, MutualTlsRefusesAClientWithoutACertificate) {
  ASSERT_NO_FATAL_FAILURE(StartTlsServer({"--tls-client-ca", certs_.ca_cert}));
  EXPECT_THAT(LiveThrough(TlsCredentials(certs_.ca_cert)),
              GrpcStatusIs(grpc::StatusCode::UNAVAILABLE, ::testing::_));
  // Health checks are exempt from tokens, not from TLS.
  bool serving = true;
  EXPECT_THAT(
      HealthCheck(ChannelTo(server_->address(), TlsCredentials(certs_.ca_cert)), "", {}, &serving),
      GrpcStatusIs(grpc::StatusCode::UNAVAILABLE, ::testing::_));
}

TEST_F(TlsTest, MutualTlsRefusesAClientCertificateFromAnotherCa) {
  ASSERT_NO_FATAL_FAILURE(StartTlsServer({"--tls-client-ca", certs_.ca_cert}));
  EXPECT_THAT(LiveThrough(TlsCredentials(certs_.ca_cert, certs_.other_client_cert,
                                         certs_.other_client_key)),
              GrpcStatusIs(grpc::StatusCode::UNAVAILABLE, ::testing::_));
}

}  // namespace
}  // namespace moe::integration
