// moe-server's command line: --help documents every flag, and a server that cannot load what
// it was asked to serve says so and exits instead of serving.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/fixtures.h"
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
  for (const char* flag :
       {"address", "model", "backend", "max-batch-tokens", "max-queue-delay-us", "max-queue",
        "drain-timeout", "max-message-bytes", "metrics-port", "expert-timing-sample-rate",
        "metrics-window", "metrics-expert-series", "kv-cache-bytes", "kv-cache-memory-fraction",
        "kv-block-tokens", "max-model-len", "max-running-sequences", "generation-batching"}) {
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

// Runs the server with `args` (plus a free --address) until it exits; returns its exit code
// and log.
struct Exited {
  int code = -1;
  std::string log;
};
Exited RunToExit(std::vector<std::string> args) {
  testing::ScratchDir scratch;
  const auto port = testing::PickFreeLoopbackPort();
  EXPECT_TRUE(port.ok()) << port.status();
  args.insert(args.begin(), {"--address", absl::StrCat("127.0.0.1:", port.value_or(1))});
  auto process = testing::ChildProcess::Spawn(ServerBinary(), args, scratch.File("log"));
  EXPECT_TRUE(process.ok()) << process.status();
  if (!process.ok()) return {};
  auto exit_code = (*process)->WaitForExit(absl::Seconds(60));
  EXPECT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << (*process)->LogTail();
  return {exit_code.value_or(-1), (*process)->ReadLog()};
}

TEST(CommandLine, BadMetricsFlagsAreUsageErrors) {
  const Exited series = RunToExit({"--metrics-expert-series", "per_token"});
  EXPECT_EQ(series.code, 2) << series.log;
  EXPECT_THAT(series.log, HasSubstr("per_expert or per_layer"));
  const Exited rate = RunToExit({"--expert-timing-sample-rate", "1.5"});
  EXPECT_EQ(rate.code, 2) << rate.log;
  EXPECT_THAT(rate.log, HasSubstr("--expert-timing-sample-rate 1.5"));
  const Exited window = RunToExit({"--metrics-window", "0s"});
  EXPECT_EQ(window.code, 2) << window.log;
  EXPECT_THAT(window.log, HasSubstr("window"));
  const Exited port = RunToExit({"--metrics-port", "70000"});
  EXPECT_EQ(port.code, 2) << port.log;
  EXPECT_THAT(port.log, HasSubstr("70000"));
}

TEST(CommandLine, BadGenerationFlagsAreUsageErrors) {
  const Exited batching = RunToExit({"--generation-batching", "dynamic"});
  EXPECT_EQ(batching.code, 2) << batching.log;
  EXPECT_THAT(batching.log, HasSubstr("'continuous', 'static' or 'static-early-exit', got "
                                      "'dynamic'"));
  const Exited running = RunToExit({"--max-running-sequences", "0"});
  EXPECT_EQ(running.code, 2) << running.log;
  EXPECT_THAT(running.log, HasSubstr("--max-running-sequences"));
  const Exited length = RunToExit({"--max-model-len", "-1"});
  EXPECT_EQ(length.code, 2) << length.log;
  EXPECT_THAT(length.log, HasSubstr("--max-model-len"));
  for (const char* fraction : {"-0.1", "0.99", "nan"}) {
    const Exited exited = RunToExit({"--kv-cache-memory-fraction", fraction});
    EXPECT_EQ(exited.code, 2) << fraction << ": " << exited.log;
    EXPECT_THAT(exited.log, HasSubstr("--kv-cache-memory-fraction")) << fraction;
  }
}

// MemAvailable of /proc/meminfo, in bytes (0 when unreadable).
uint64_t HostMemAvailable() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib << 10;
  }
  return 0;
}

TEST(CommandLine, KvCacheMemoryFractionSizesThePoolFromAvailableMemory) {
  const std::vector<std::string> folders = testing::FixtureFolders();
  ASSERT_FALSE(folders.empty()) << "no fixture folders under " << testing::FixturesRoot();
  auto server = StartServer({"--backend", "cpu", "--model", "lm=" + folders.front(),
                             "--kv-cache-memory-fraction", "0.001"});
  ASSERT_TRUE(server.ok()) << server.status();
  const uint64_t available = HostMemAvailable();
  ASSERT_GT(available, 0u);
  const std::string log = (*server)->ReadLog();
  std::smatch match;
  const std::regex bytes_field("kv_cache_bytes=([0-9]+)");
  ASSERT_TRUE(std::regex_search(log, match, bytes_field)) << log;
  const double bytes = std::stod(match[1].str());
  // A thousandth of what the host had free when the model loaded; free memory moves a little
  // between then and now, and other processes run.
  EXPECT_GT(bytes, 0.0005 * static_cast<double>(available)) << log;
  EXPECT_LT(bytes, 0.002 * static_cast<double>(available)) << log;
  EXPECT_THAT(log, Not(HasSubstr("kv_cache_blocks=0 ")));
}

TEST(CommandLine, BusyMetricsPortExitsNamingIt) {
  // Hold a listening socket on a loopback port; the server must not serve without metrics.
  const int holder = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(holder, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(holder, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(holder, 1), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(holder, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const int busy = ntohs(address.sin_port);
  const Exited exited = RunToExit({"--metrics-port", absl::StrCat(busy), "--backend", "cpu"});
  close(holder);
  EXPECT_EQ(exited.code, 1) << exited.log;
  EXPECT_THAT(exited.log, HasSubstr(absl::StrCat("127.0.0.1:", busy)));
  EXPECT_THAT(exited.log, HasSubstr("--metrics-port"));
}

TEST(CommandLine, MetricsPortZeroServesWithoutMetrics) {
  auto server = StartServer({"--metrics-port", "0"});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_THAT((*server)->ReadLog(), HasSubstr("metrics=off"));
  EXPECT_THAT((*server)->ReadLog(), Not(HasSubstr("metrics_listening")));
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
