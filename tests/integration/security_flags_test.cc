// The security flags on the command line: --help documents them; flags that do not go together
// are usage errors (exit 2); certificate, key and token files that cannot be read or hold the
// wrong thing stop the server (exit 1) with a message naming the file, before it listens; bad
// keepalive values are usage errors; --metrics-address moves the metrics endpoint.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/integration_util.h"
#include "tests/integration/security_test_util.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_certificates.h"

namespace moe::integration {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Nothing listened: the error came before the gRPC port and the metrics endpoint opened.
void ExpectStoppedBeforeListening(const Exited& exited) {
  EXPECT_THAT(exited.log, Not(HasSubstr("listening"))) << exited.log;
}

TEST(SecurityFlags, HelpListsThem) {
  testing::ScratchDir scratch;
  auto process = testing::ChildProcess::Spawn(ServerBinary(), {"--help"}, scratch.File("log"));
  ASSERT_TRUE(process.ok()) << process.status();
  auto exit_code = (*process)->WaitForExit(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  const std::string help = (*process)->ReadLog();
  EXPECT_EQ(*exit_code, 0) << help;
  for (const char* flag :
       {"tls-cert", "tls-key", "tls-client-ca", "auth-token-file", "metrics-address",
        "grpc-keepalive-time", "grpc-keepalive-timeout", "grpc-min-ping-interval",
        "grpc-max-ping-strikes", "grpc-max-connection-age", "grpc-max-connection-age-grace",
        "grpc-max-concurrent-streams"}) {
    EXPECT_THAT(help, HasSubstr(absl::StrCat("--", flag, " "))) << help;
  }
}

class SecurityFlagsWithFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    auto certificates = testing::MakeTestCertificates(scratch_);
    ASSERT_TRUE(certificates.ok()) << certificates.status();
    certs_ = *certificates;
  }
  testing::ScratchDir scratch_;
  testing::TestCertificates certs_;
};

TEST_F(SecurityFlagsWithFiles, CertificateAndKeyComeTogether) {
  const Exited cert_only = RunServerToExit({"--tls-cert", certs_.server_cert});
  EXPECT_EQ(cert_only.code, 2) << cert_only.log;
  EXPECT_THAT(cert_only.log, HasSubstr("--tls-cert needs --tls-key"));
  const Exited key_only = RunServerToExit({"--tls-key", certs_.server_key});
  EXPECT_EQ(key_only.code, 2) << key_only.log;
  EXPECT_THAT(key_only.log, HasSubstr("--tls-key needs --tls-cert"));
  const Exited ca_only = RunServerToExit({"--tls-client-ca", certs_.ca_cert});
  EXPECT_EQ(ca_only.code, 2) << ca_only.log;
  EXPECT_THAT(ca_only.log, HasSubstr("--tls-client-ca needs --tls-cert"));
  ExpectStoppedBeforeListening(ca_only);
}

TEST_F(SecurityFlagsWithFiles, UnreadableFilesAreNamed) {
  const std::string missing = scratch_.File("no-such-cert.pem");
  const Exited cert = RunServerToExit({"--tls-cert", missing, "--tls-key", certs_.server_key});
  EXPECT_EQ(cert.code, 1) << cert.log;
  EXPECT_THAT(cert.log, HasSubstr(absl::StrCat("--tls-cert ", missing)));
  ExpectStoppedBeforeListening(cert);

  const Exited key = RunServerToExit(
      {"--tls-cert", certs_.server_cert, "--tls-key", scratch_.File("no-such-key.pem")});
  EXPECT_EQ(key.code, 1) << key.log;
  EXPECT_THAT(key.log, HasSubstr("no-such-key.pem"));

  const Exited ca = RunServerToExit({"--tls-cert", certs_.server_cert, "--tls-key",
                                     certs_.server_key, "--tls-client-ca", scratch_.path()});
  EXPECT_EQ(ca.code, 1) << ca.log;
  EXPECT_THAT(ca.log, HasSubstr(absl::StrCat("--tls-client-ca ", scratch_.path())));
  EXPECT_THAT(ca.log, HasSubstr("directory"));

  const Exited tokens = RunServerToExit({"--auth-token-file", scratch_.File("no-such-tokens")});
  EXPECT_EQ(tokens.code, 1) << tokens.log;
  EXPECT_THAT(tokens.log, HasSubstr("no-such-tokens"));
  ExpectStoppedBeforeListening(tokens);
}

TEST_F(SecurityFlagsWithFiles, FilesHoldingTheWrongThingAreNamed) {
  const std::string garbage = scratch_.File("garbage.pem");
  testing::WriteTextFile(garbage, "this is not a certificate\n");
  const Exited cert = RunServerToExit({"--tls-cert", garbage, "--tls-key", certs_.server_key});
  EXPECT_EQ(cert.code, 1) << cert.log;
  EXPECT_THAT(cert.log, HasSubstr(absl::StrCat("--tls-cert ", garbage)));
  ExpectStoppedBeforeListening(cert);

  // A certificate where the key should be.
  const Exited key_file =
      RunServerToExit({"--tls-cert", certs_.server_cert, "--tls-key", certs_.server_cert});
  EXPECT_EQ(key_file.code, 1) << key_file.log;
  EXPECT_THAT(key_file.log, HasSubstr(absl::StrCat("--tls-key ", certs_.server_cert)));

  // The client's key with the server's certificate.
  const Exited mismatch =
      RunServerToExit({"--tls-cert", certs_.server_cert, "--tls-key", certs_.client_key});
  EXPECT_EQ(mismatch.code, 1) << mismatch.log;
  EXPECT_THAT(mismatch.log, HasSubstr("does not belong"));
  EXPECT_THAT(mismatch.log, HasSubstr(certs_.client_key));
  EXPECT_THAT(mismatch.log, HasSubstr(certs_.server_cert));

  const Exited ca = RunServerToExit({"--tls-cert", certs_.server_cert, "--tls-key",
                                     certs_.server_key, "--tls-client-ca", garbage});
  EXPECT_EQ(ca.code, 1) << ca.log;
  EXPECT_THAT(ca.log, HasSubstr(absl::StrCat("--tls-client-ca ", garbage)));
}

TEST_F(SecurityFlagsWithFiles, TokenFileWithoutTokensIsRefused) {
  const std::string empty = scratch_.File("empty-tokens");
  testing::WriteTextFile(empty, "# no tokens yet\n\n   \n");
  const Exited exited = RunServerToExit({"--auth-token-file", empty});
  EXPECT_EQ(exited.code, 1) << exited.log;
  EXPECT_THAT(exited.log, HasSubstr(absl::StrCat("--auth-token-file ", empty)));
  EXPECT_THAT(exited.log, HasSubstr("no token"));
  ExpectStoppedBeforeListening(exited);

  const std::string spaced = scratch_.File("spaced-tokens");
  testing::WriteTextFile(spaced, "good-token\ntwo words\n");
  const Exited bad_line = RunServerToExit({"--auth-token-file", spaced});
  EXPECT_EQ(bad_line.code, 1) << bad_line.log;
  EXPECT_THAT(bad_line.log, HasSubstr("line 2"));
}

TEST(SecurityFlags, BadConnectionLimitsAreUsageErrors) {
  const Exited streams = RunServerToExit({"--grpc-max-concurrent-streams", "0"});
  EXPECT_EQ(streams.code, 2) << streams.log;
  EXPECT_THAT(streams.log, HasSubstr("--grpc-max-concurrent-streams"));
  const Exited keepalive = RunServerToExit({"--grpc-keepalive-time", "0s"});
  EXPECT_EQ(keepalive.code, 2) << keepalive.log;
  EXPECT_THAT(keepalive.log, HasSubstr("--grpc-keepalive-time"));
  const Exited strikes = RunServerToExit({"--grpc-max-ping-strikes", "-1"});
  EXPECT_EQ(strikes.code, 2) << strikes.log;
  EXPECT_THAT(strikes.log, HasSubstr("--grpc-max-ping-strikes"));
  ExpectStoppedBeforeListening(strikes);
}

// Whether a TCP connection to `ip`:`port` is accepted.
bool Connects(const char* ip, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, ip, &address.sin_addr);
  const bool connected = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return connected;
}

TEST(SecurityFlags, MetricsAddressMovesTheMetricsEndpoint) {
  // gRPC on 127.0.0.1, metrics on 127.0.0.2 (another loopback address) only.
  auto server = StartServer({"--metrics-address", "127.0.0.2"});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->metrics_port();
  EXPECT_THAT((*server)->ReadLog(),
              HasSubstr(absl::StrCat("url=http://127.0.0.2:", port, "/metrics")));
  EXPECT_TRUE(Connects("127.0.0.2", port));
  EXPECT_FALSE(Connects("127.0.0.1", port));
}

TEST(SecurityFlags, MetricsAddressThatIsNotLocalStopsTheServer) {
  const Exited exited = RunServerToExit({"--metrics-address", "192.0.2.1"});  // TEST-NET-1
  EXPECT_EQ(exited.code, 1) << exited.log;
  EXPECT_THAT(exited.log, HasSubstr("192.0.2.1"));
  EXPECT_THAT(exited.log, HasSubstr("--metrics-address"));
}

}  // namespace
}  // namespace moe::integration
