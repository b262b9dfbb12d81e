// TLS and the checks Connect makes. moe-server has no TLS yet, so the TLS handshakes here are
// with the in-process fake KServe server, serving certificates that openssl makes for the test
// (a CA, a server certificate for "moe.test", a client certificate); those tests skip when no
// openssl command is installed.
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/security/server_credentials.h"
#include "gtest/gtest.h"
#include "moe/client/client.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/client/fake_kserve_server.h"

namespace moe::client {
namespace {

using ::moe::client::testing::FakeKServeServer;
using ::moe::testing::IsOk;
using ::moe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// --- Connect's checks (no server needed) ---

class ConnectOptionsTest : public ::testing::Test {
 protected:
  moe::testing::ScratchDir dir_;
};

TEST_F(ConnectOptionsTest, UnreadableTlsFilesAreInvalidArgumentNamingTheFile) {
  const std::string missing = dir_.File("missing.pem");
  EXPECT_THAT(Client::Connect({.tls = true, .tls_root_certs_file = missing}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("Connect: tls_root_certs_file '"), HasSubstr(missing),
                             HasSubstr("cannot be read"))));
  WriteFile(dir_.File("garbage.pem"), "not a certificate\n");
  EXPECT_THAT(Client::Connect({.tls = true, .tls_root_certs_file = dir_.File("garbage.pem")}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("holds no PEM certificate")));
  WriteFile(dir_.File("cert.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  EXPECT_THAT(Client::Connect({.tls = true,
                               .tls_client_cert_file = dir_.File("cert.pem"),
                               .tls_client_key_file = dir_.File("cert.pem")}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tls_client_key_file '" + dir_.File("cert.pem") +
                                 "' holds no PEM private key")));
  EXPECT_THAT(Client::Connect({.tls = true,
                               .tls_client_cert_file = dir_.File("cert.pem"),
                               .tls_client_key_file = missing}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tls_client_key_file")));
}

TEST_F(ConnectOptionsTest, RefusesInconsistentOptions) {
  EXPECT_THAT(Client::Connect({.target = ""}),
              StatusIs(absl::StatusCode::kInvalidArgument, "Connect: target is empty"));
  EXPECT_THAT(Client::Connect({.tls_root_certs_file = "/ca.pem"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tls_root_certs_file is set but tls is off")));
  EXPECT_THAT(Client::Connect({.tls_server_name = "moe.test"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tls_server_name is set but tls is off")));
  EXPECT_THAT(Client::Connect({.tls = true, .tls_client_cert_file = "/client.pem"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("both tls_client_cert_file and tls_client_key_file")));
  EXPECT_THAT(Client::Connect({.bearer_token = "two words"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bearer_token")));
  EXPECT_THAT(Client::Connect({.bearer_token = "line\nbreak"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bearer_token")));
  EXPECT_THAT(Client::Connect({.max_message_bytes = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_message_bytes")));
  EXPECT_THAT(Client::Connect({.timeout = absl::ZeroDuration()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("timeout is 0")));
  EXPECT_THAT(Client::Connect({.retry = {.max_attempts = 0}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("retry.max_attempts")));
  MOE_EXPECT_OK(Client::Connect({.target = "localhost:1", .bearer_token = "abc-DEF_123.~+/="}));
}

// --- TLS handshakes with the fake server ---

// Runs `command` in a shell, its output appended to `log`; false when it fails.
bool RunShell(const std::string& command, const std::string& log) {
  return std::system(absl::StrCat(command, " >>", log, " 2>&1").c_str()) == 0;
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::system("openssl version >/dev/null 2>&1") != 0) return;
    dir_ = new moe::testing::ScratchDir();
    const std::string d = dir_->path();
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string log = d + "/openssl.log";
    WriteFile(d + "/server.ext", "subjectAltName=DNS:moe.test\n");
    // Two CAs (the second to prove verification happens), a server certificate for "moe.test"
    // and a client certificate, both signed by the first CA.
    certificates_ok_ =
        RunShell(absl::StrCat("openssl req -x509 ", key, " -keyout ", d, "/ca.key -out ", d,
                              "/ca.pem -days 2 -subj /CN=moe-test-ca"),
                 log) &&
        RunShell(absl::StrCat("openssl req -x509 ", key, " -keyout ", d, "/other-ca.key -out ", d,
                              "/other-ca.pem -days 2 -subj /CN=other-ca"),
                 log) &&
        RunShell(absl::StrCat("openssl req ", key, " -keyout ", d, "/server.key -out ", d,
                              "/server.csr -subj /CN=moe.test"),
                 log) &&
        RunShell(absl::StrCat("openssl x509 -req -in ", d, "/server.csr -CA ", d, "/ca.pem -CAkey ",
                              d, "/ca.key -CAcreateserial -days 2 -extfile ", d,
                              "/server.ext -out ", d, "/server.pem"),
                 log) &&
        RunShell(absl::StrCat("openssl req ", key, " -keyout ", d, "/client.key -out ", d,
                              "/client.csr -subj /CN=moe-test-client"),
                 log) &&
        RunShell(absl::StrCat("openssl x509 -req -in ", d, "/client.csr -CA ", d, "/ca.pem -CAkey ",
                              d, "/ca.key -CAcreateserial -days 2 -out ", d, "/client.pem"),
                 log);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    if (dir_ == nullptr) GTEST_SKIP() << "no openssl command to make test certificates with";
    ASSERT_TRUE(certificates_ok_) << "openssl failed to make the test certificates:\n"
                                  << ReadFile(File("openssl.log"));
  }

  static std::string File(const std::string& name) { return dir_->File(name); }

  // A fake server with the "moe.test" certificate; client certificates signed by the test CA
  // required when `mutual`.
  static std::unique_ptr<FakeKServeServer> StartTlsServer(bool mutual) {
    grpc::SslServerCredentialsOptions ssl(
        mutual ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    ssl.pem_root_certs = ReadFile(File("ca.pem"));
    ssl.pem_key_cert_pairs.push_back({ReadFile(File("server.key")), ReadFile(File("server.pem"))});
    return FakeKServeServer::Start({.credentials = grpc::SslServerCredentials(ssl)});
  }

  static ConnectOptions TlsOptions(const FakeKServeServer& server) {
    return ConnectOptions{.target = server.address(),
                          .tls = true,
                          .tls_root_certs_file = File("ca.pem"),
                          .tls_server_name = "moe.test",
                          .timeout = absl::Seconds(20),
                          .retry = {.max_attempts = 1}};
  }

  inline static moe::testing::ScratchDir* dir_ = nullptr;
  inline static bool certificates_ok_ = false;
};

TEST_F(TlsTest, TalksTlsVerifyingTheServerUnderTheOverriddenName) {
  auto server = StartTlsServer(/*mutual=*/false);
  ASSERT_NE(server, nullptr);
  ConnectOptions options = TlsOptions(*server);
  options.bearer_token = "tls-token";
  auto client = Client::Connect(options);
  ASSERT_THAT(client, IsOk());
  auto live = (*client)->ServerLive();
  ASSERT_THAT(live, IsOk());
  EXPECT_TRUE(*live);
  EXPECT_THAT(server->authorizations(), ElementsAre("Bearer tls-token"));
}

TEST_F(TlsTest, RefusesACertificateForAnotherName) {
  auto server = StartTlsServer(/*mutual=*/false);
  ASSERT_NE(server, nullptr);
  ConnectOptions options = TlsOptions(*server);
  options.tls_server_name = "";  // checks "127.0.0.1", not in the certificate
  auto client = Client::Connect(options);
  ASSERT_THAT(client, IsOk());
  EXPECT_THAT((*client)->ServerLive(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(server->calls("ServerLive"), 0);
}

TEST_F(TlsTest, RefusesAServerSignedByAnotherCa) {
  auto server = StartTlsServer(/*mutual=*/false);
  ASSERT_NE(server, nullptr);
  ConnectOptions options = TlsOptions(*server);
  options.tls_root_certs_file = File("other-ca.pem");
  auto client = Client::Connect(options);
  ASSERT_THAT(client, IsOk());
  EXPECT_THAT((*client)->ServerLive(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(server->calls("ServerLive"), 0);
}

TEST_F(TlsTest, PresentsTheClientCertificateForMutualTls) {
  auto server = StartTlsServer(/*mutual=*/true);
  ASSERT_NE(server, nullptr);
  ConnectOptions options = TlsOptions(*server);
  options.tls_client_cert_file = File("client.pem");
  options.tls_client_key_file = File("client.key");
  auto client = Client::Connect(options);
  ASSERT_THAT(client, IsOk());
  EXPECT_THAT((*client)->ServerLive(), IsOk());
  EXPECT_EQ(server->calls("ServerLive"), 1);
}

TEST_F(TlsTest, WithoutAClientCertificateMutualTlsFails) {
  auto server = StartTlsServer(/*mutual=*/true);
  ASSERT_NE(server, nullptr);
  auto client = Client::Connect(TlsOptions(*server));
  ASSERT_THAT(client, IsOk());
  EXPECT_THAT((*client)->ServerLive(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(server->calls("ServerLive"), 0);
}

TEST_F(TlsTest, PlaintextClientCannotTalkToATlsServer) {
  auto server = StartTlsServer(/*mutual=*/false);
  ASSERT_NE(server, nullptr);
  auto client = Client::Connect(
      {.target = server->address(), .timeout = absl::Seconds(5), .retry = {.max_attempts = 1}});
  ASSERT_THAT(client, IsOk());
  EXPECT_THAT((*client)->ServerLive(), StatusIs(absl::StatusCode::kUnavailable));
}

}  // namespace
}  // namespace moe::client
