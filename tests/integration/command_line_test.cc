// moe-server's command line: --help documents every flag, and a server that cannot load what
// it was asked to serve says so and exits instead of serving.
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/server_process.h"

namespace moe::integration {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(CommandLine, HelpExitsZeroAndListsEveryFlag) {
  testing::ScratchDir scratch;
  auto process = testing::ChildProcess::Spawn(ServerBinary(), {"--help"}, scratch.File("log"));
  ASSERT_TRUE(process.ok()) << process.status();
  auto exit_code = (*process)->WaitForExit(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  const std::string help = (*process)->ReadLog();
  EXPECT_EQ(*exit_code, 0) << help;
  for (const char* flag : {"address", "model", "backend", "max-batch-tokens", "max-queue-delay-us",
                           "max-queue", "drain-timeout", "max-message-bytes"}) {
    EXPECT_THAT(help, HasSubstr(absl::StrCat("--", flag))) << help;
  }
}

TEST(CommandLine, MissingModelDirectoryExitsNonZeroNamingIt) {
  testing::ScratchDir scratch;
  const std::string missing = scratch.File("no-such-model-dir");
  const auto port = testing::PickFreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  auto process =
      testing::ChildProcess::Spawn(ServerBinary(),
                                   {"--address", absl::StrCat("127.0.0.1:", *port), "--backend",
                                    "cpu", "--model", absl::StrCat("broken=", missing)},
                                   scratch.File("log"));
  ASSERT_TRUE(process.ok()) << process.status();
  auto exit_code = (*process)->WaitForExit(absl::Seconds(60));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << (*process)->LogTail();
  EXPECT_NE(*exit_code, 0) << (*process)->LogTail();
  EXPECT_GT(*exit_code, 0) << "killed by a signal rather than exiting:\n" << (*process)->LogTail();
  EXPECT_THAT((*process)->ReadLog(), HasSubstr("no-such-model-dir"));
}

TEST(CommandLine, UnknownBackendExitsNonZero) {
  testing::ScratchDir scratch;
  const auto port = testing::PickFreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  auto process = testing::ChildProcess::Spawn(
      ServerBinary(), {"--address", absl::StrCat("127.0.0.1:", *port), "--backend", "tpu"},
      scratch.File("log"));
  ASSERT_TRUE(process.ok()) << process.status();
  auto exit_code = (*process)->WaitForExit(absl::Seconds(60));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << (*process)->LogTail();
  EXPECT_GT(*exit_code, 0) << (*process)->LogTail();
  EXPECT_THAT((*process)->ReadLog(), HasSubstr("tpu"));
}

TEST(CommandLine, LogsTheAddressItListensOn) {
  auto server = StartServer();
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_THAT((*server)->ReadLog(), HasSubstr(absl::StrCat("address=", (*server)->address())));
}

TEST(CommandLine, IdleOpenMPWorkersDoNotSpinUnlessTheUserSaysSo) {
  // The server inherits this test's environment: without OMP_WAIT_POLICY it must choose
  // PASSIVE itself; with one, the user's choice stands.
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  auto server = StartServer();
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_THAT((*server)->ReadLog(),
              HasSubstr(absl::StrCat("omp_wait_policy=", policy != nullptr ? policy : "PASSIVE")));
}

}  // namespace
}  // namespace moe::integration
