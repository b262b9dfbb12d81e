// The /metrics endpoint over a real socket: what it serves, and the errors it starts with.
#include "server/metrics/metrics_endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics/thread_stack_floor.h"
#include "tests/testing/http_get.h"
#include "tests/testing/status_matchers.h"

namespace moe::metrics {
namespace {

using ::moe::testing::StatusIs;
using ::testing::HasSubstr;

// A listening loopback socket on a free port, closed by the destructor.
class HeldPort {
 public:
  HeldPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(listen(fd_, 1), 0);
    socklen_t length = sizeof(address);
    EXPECT_EQ(getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length), 0);
    port_ = ntohs(address.sin_port);
  }
  ~HeldPort() { close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

int FreePort() {
  HeldPort held;
  return held.port();  // closed again when `held` goes
}

std::string HttpGet(int port, const std::string& path) {
  return testing::HttpGet(port, path).value_or("request failed");
}

TEST(MetricsEndpointTest, ServesTheRegistryAndScrapeTimeSeries) {
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ServerMetrics> metrics,
                           ServerMetrics::Create({"digits"}, {}));
  metrics->ForModel("digits")->RecordCall(absl::StatusCode::kOk, absl::Milliseconds(2));
  LoadedModelInfo info;
  info.num_moe_layers = 1;
  info.num_experts = 2;
  MOE_ASSERT_OK(metrics->ForModel("digits")->SetLoaded(info));
  const int port = FreePort();
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsEndpoint> endpoint,
                           MetricsEndpoint::Start("127.0.0.1", port, *metrics));
  EXPECT_EQ(endpoint->address(), absl::StrCat("127.0.0.1:", port));
  const std::string answer = HttpGet(port, "/metrics");
  EXPECT_THAT(answer, HasSubstr("200 OK"));
  EXPECT_THAT(answer, HasSubstr("moe_requests_total{model=\"digits\",outcome=\"success\"} 1"));
  EXPECT_THAT(answer, HasSubstr("moe_layer_tokens_total{layer=\"0\",model=\"digits\"} 0"));
  EXPECT_THAT(HttpGet(port, "/other"), HasSubstr("404"));
}

// CivetWeb asks for 100 KiB stacks; the process-wide floor raises that, and leaves larger
// requests alone.
TEST(ThreadStackFloorTest, SmallRequestsAreRaisedLargeOnesKept) {
  pthread_attr_t attr;
  ASSERT_EQ(pthread_attr_init(&attr), 0);
  size_t size = 0;
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 100 * 1024), 0);
  ASSERT_EQ(pthread_attr_getstacksize(&attr, &size), 0);
  EXPECT_EQ(size, kMinimumThreadStack);
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 8 * kMinimumThreadStack), 0);
  ASSERT_EQ(pthread_attr_getstacksize(&attr, &size), 0);
  EXPECT_EQ(size, 8 * kMinimumThreadStack);
  pthread_attr_destroy(&attr);
}

TEST(MetricsEndpointTest, BusyPortIsUnavailableNamingTheAddress) {
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ServerMetrics> metrics,
                           ServerMetrics::Create({"m"}, {}));
  HeldPort held;
  EXPECT_THAT(
      MetricsEndpoint::Start("127.0.0.1", held.port(), *metrics).status(),
      StatusIs(absl::StatusCode::kUnavailable, HasSubstr(absl::StrCat("127.0.0.1:", held.port()))));
}

TEST(MetricsEndpointTest, PortOutOfRangeIsInvalid) {
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ServerMetrics> metrics,
                           ServerMetrics::Create({"m"}, {}));
  EXPECT_THAT(MetricsEndpoint::Start("127.0.0.1", 0, *metrics).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("port 0")));
  EXPECT_THAT(MetricsEndpoint::Start("127.0.0.1", 65536, *metrics).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("65536")));
}

}  // namespace
}  // namespace moe::metrics
