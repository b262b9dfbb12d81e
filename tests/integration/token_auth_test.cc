// Bearer tokens (--auth-token-file): every call needs 'authorization: Bearer <token>' with a
// token from the file, or gets UNAUTHENTICATED saying what was wrong, before any handler runs;
// health checks need none (probes), reflection needs one; tokens work over TLS with gRPC's own
// call credentials.
#include <memory>
#include <random>
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
using ::testing::Not;

constexpr char kToken[] = "s3cret-token-for-tests_0123456789";
constexpr char kSecondToken[] = "another.token~with+b64/chars==";
constexpr char kReflectionMethod[] =
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

// A ServerReflectionRequest with list_services = "*" (field 7, a string).
std::string ListServicesRequest() { return std::string("\x3a\x01*", 3); }

class TokenAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    token_file_ = scratch_.File("tokens");
    testing::WriteTextFile(token_file_, absl::StrCat("# tokens of the test clients\n\n  ", kToken,
                                                     "  \n# rotated in:\n", kSecondToken, "\n"));
  }

  void StartPlaintextServer() {
    auto server = StartServerWithSecurity({"--auth-token-file", token_file_},
                                          {.metadata = BearerToken(kToken)});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  grpc::Status Live(const Metadata& metadata) {
    return ServerLive(server_->channel(), metadata, absl::Seconds(10));
  }

  testing::ScratchDir scratch_;
  std::string token_file_;
  std::unique_ptr<testing::ServerProcess> server_;
};

TEST_F(TokenAuthTest, CallWithoutTokenIsUnauthenticated) {
  ASSERT_NO_FATAL_FAILURE(StartPlaintextServer());
  EXPECT_THAT(Live({}),
              GrpcStatusIs(grpc::StatusCode::UNAUTHENTICATED, HasSubstr("missing bearer token")));
  // Inference too: it never reaches the model.
  std::mt19937_64 rng(11);
  auto stub = NewStub(*server_);
  inference::ModelInferResponse response;
  EXPECT_THAT(
      Infer(*stub, MakeInferRequest(kDigits, UniformRows(rng, 1, kDigitsWidth), 1, kDigitsWidth),
            &response),
      GrpcStatusIs(grpc::StatusCode::UNAUTHENTICATED, HasSubstr("missing bearer token")));
  // The KServe handler, which counts every ModelInfer it sees, never saw it.
  auto metrics = ScrapeMetrics(server_->metrics_port());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_THAT(*metrics, HasSubstr("moe_requests_total"));
  EXPECT_THAT(*metrics, Not(::testing::ContainsRegex("moe_requests_total\\{[^}]*\\} [1-9]")));
  EXPECT_THAT(server_->ReadLog(), HasSubstr("auth=bearer"));
}

TEST_F(TokenAuthTest, WrongTokenIsUnauthenticated) {
  ASSERT_NO_FATAL_FAILURE(StartPlaintextServer());
  EXPECT_THAT(Live(BearerToken("not-a-token")),
              GrpcStatusIs(grpc::StatusCode::UNAUTHENTICATED, HasSubstr("not accepted")));
  // A prefix or an extension of a good token is just as wrong.
  EXPECT_THAT(Live(BearerToken(std::string(kToken).substr(0, 10))),
              GrpcStatusIs(grpc::StatusCode::UNAUTHENTICATED, HasSubstr("not accepted")));
  EXPECT_THAT(Live(BearerToken(absl::StrCat(kToken, "x"))),
              GrpcStatusIs(grpc::StatusCode::UNAUTHENTICATED, HasSubstr("not accepted")));
  // Another scheme, or the bare token, is malformed.
  EXPECT_THAT(Live({{"authorization", absl::StrCat("Basic ", kToken)}}),
              GrpcStatusIs(grpc::StatusCode::UNAUTHENTICATED, HasSubstr("malformed")));
  EXPECT_THAT(Live({{"authorization", kToken}}),
              GrpcStatusIs(grpc::StatusCode::UNAUTHENTICATED, HasSubstr("malformed")));
  // The message never echoes what was sent.
  EXPECT_THAT(Live(BearerToken("not-a-token")).error_message(), Not(HasSubstr("not-a-token")));
}

TEST_F(TokenAuthTest, EveryTokenOfTheFileIsAccepted) {
  ASSERT_NO_FATAL_FAILURE(StartPlaintextServer());
  EXPECT_THAT(Live(BearerToken(kToken)), GrpcOk());
  EXPECT_THAT(Live(BearerToken(kSecondToken)), GrpcOk());
  // The scheme is case-insensitive (RFC 6750).
  EXPECT_THAT(Live({{"authorization", absl::StrCat("bearer ", kToken)}}), GrpcOk());
  std::mt19937_64 rng(12);
  auto stub = NewStub(*server_);
  grpc::ClientContext context;
  context.AddMetadata("authorization", absl::StrCat("Bearer ", kSecondToken));
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  inference::ModelInferResponse response;
  EXPECT_THAT(
      stub->ModelInfer(
          &context, MakeInferRequest(kDigits, UniformRows(rng, 3, kDigitsWidth), 3, kDigitsWidth),
          &response),
      GrpcOk());
  auto logits = OutputFloats(response, "logits");
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(logits->size(), static_cast<size_t>(3 * kDigitsOutputs));
  // Counted, unlike refused calls (CallWithoutTokenIsUnauthenticated).
  auto metrics = ScrapeMetrics(server_->metrics_port());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_THAT(*metrics, ::testing::ContainsRegex("moe_requests_total\\{[^}]*\\} 1"));
}

TEST_F(TokenAuthTest, HealthCheckNeedsNoToken) {
  ASSERT_NO_FATAL_FAILURE(StartPlaintextServer());
  bool serving = false;
  EXPECT_THAT(HealthCheck(server_->channel(), "", {}, &serving), GrpcOk());
  EXPECT_TRUE(serving);
  EXPECT_THAT(HealthCheck(server_->channel(), kDigits, {}, &serving), GrpcOk());
  EXPECT_TRUE(serving);
  // A token does no harm there either.
  EXPECT_THAT(HealthCheck(server_->channel(), "", BearerToken(kToken), &serving), GrpcOk());
}

TEST_F(TokenAuthTest, ReflectionNeedsTheToken) {
  ASSERT_NO_FATAL_FAILURE(StartPlaintextServer());
  std::string services;
  EXPECT_THAT(
      RawUnaryCall(server_->channel(), kReflectionMethod, ListServicesRequest(), {}, &services),
      GrpcStatusIs(grpc::StatusCode::UNAUTHENTICATED, HasSubstr("missing bearer token")));
  EXPECT_THAT(RawUnaryCall(server_->channel(), kReflectionMethod, ListServicesRequest(),
                           BearerToken(kToken), &services),
              GrpcOk());
  EXPECT_THAT(services, HasSubstr("inference.GRPCInferenceService"));
}

TEST_F(TokenAuthTest, TokensWorkOverTls) {
  auto certificates = testing::MakeTestCertificates(scratch_);
  ASSERT_TRUE(certificates.ok()) << certificates.status();
  // Over TLS, gRPC's own call credentials send the token (they refuse plaintext channels).
  const auto with_token = grpc::CompositeChannelCredentials(TlsCredentials(certificates->ca_cert),
                                                            grpc::AccessTokenCredentials(kToken));
  auto server =
      StartServerWithSecurity({"--tls-cert", certificates->server_cert, "--tls-key",
                               certificates->server_key, "--auth-token-file", token_file_},
                              {.credentials = with_token});
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = *std::move(server);
  EXPECT_THAT(Live({}), GrpcOk());
  const auto tls_only = ChannelTo(server_->address(), TlsCredentials(certificates->ca_cert));
  EXPECT_THAT(ServerLive(tls_only),
              GrpcStatusIs(grpc::StatusCode::UNAUTHENTICATED, HasSubstr("missing bearer token")));
  EXPECT_THAT(ServerLive(tls_only, BearerToken("wrong")),
              GrpcStatusIs(grpc::StatusCode::UNAUTHENTICATED, HasSubstr("not accepted")));
  EXPECT_THAT(ServerLive(tls_only, BearerToken(kSecondToken)), GrpcOk());
  bool serving = false;
  EXPECT_THAT(HealthCheck(tls_only, "", {}, &serving), GrpcOk());
  EXPECT_TRUE(serving);
}

}  // namespace
}  // namespace moe::integration
