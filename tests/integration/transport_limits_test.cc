// Keepalive and HTTP/2 limits protect well-behaved clients from misbehaving ones: a client
// flooding pings gets its connection closed (GOAWAY "too_many_pings") while another client
// goes on being served, and a client opening far more concurrent calls than
// --grpc-max-concurrent-streams gets only that many into the server at a time, so another
// client's calls still wait behind a few of them, not behind all.
#include <algorithm>
#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/async_calls.h"
#include "tests/integration/integration_util.h"
#include "tests/integration/security_test_util.h"
#include "tests/testing/random.h"

namespace moe::integration {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;

// A channel that pings as often as it can, with or without calls and data: what gRPC's
// ping-abuse policy is for. (gRPC 1.51's client sends at most one ping a second whatever it is
// told; above the server's default --grpc-min-ping-interval of 10 s, that is a flood.)
std::shared_ptr<grpc::Channel> PingFloodingChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, 1);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

TEST(TransportLimitsTest, PingFloodClosesTheFloodersConnectionOnly) {
  // The defaults: pings less than 10 s apart are strikes; the third strike closes.
  auto started = StartServer();
  ASSERT_TRUE(started.ok()) << started.status();
  testing::ServerProcess& server = **started;
  const auto good = server.NewChannel();
  ASSERT_THAT(ServerLive(good), GrpcOk());

  // The flooder holds a health Watch stream open: it lasts as long as its connection does.
  const auto flooder = PingFloodingChannel(server.address());
  auto health = grpc::health::v1::Health::NewStub(flooder);
  grpc::ClientContext watch_context;
  watch_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  grpc::health::v1::HealthCheckRequest request;
  auto watch = health->Watch(&watch_context, request);
  grpc::health::v1::HealthCheckResponse update;
  ASSERT_TRUE(watch->Read(&update)) << "the flooder's Watch got no first answer";

  // Meanwhile another client calls and calls.
  std::atomic<bool> stop{false};
  std::atomic<int> good_ok{0};
  std::atomic<int> good_failed{0};
  std::string first_failure;
  std::thread good_client([&] {
    while (!stop.load()) {
      const grpc::Status status = ServerLive(good);
      if (status.ok()) {
        ++good_ok;
      } else if (good_failed++ == 0) {
        first_failure = Describe(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });

  const absl::Time flood_start = absl::Now();
  while (watch->Read(&update)) {
  }
  const grpc::Status watch_status = watch->Finish();
  const absl::Duration flood_lasted = absl::Now() - flood_start;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the good client goes on
  stop = true;
  good_client.join();

  // gRPC 1.51's client turns the GOAWAY (ENHANCE_YOUR_CALM, "too_many_pings") into this.
  EXPECT_THAT(watch_status,
              GrpcStatusIs(grpc::StatusCode::UNAVAILABLE,
                           AnyOf(HasSubstr("Too many pings"), HasSubstr("too_many_pings"))))
      << "after " << absl::FormatDuration(flood_lasted);
  EXPECT_LT(flood_lasted, absl::Seconds(10)) << "the ping flood was tolerated too long";
  EXPECT_EQ(good_failed.load(), 0) << "first failure: " << first_failure;
  EXPECT_GT(good_ok.load(), 0);
  EXPECT_THAT(ServerLive(good), GrpcOk());
  EXPECT_TRUE(server.Running());
}

TEST(TransportLimitsTest, StreamFloodDoesNotStarveAnotherClient) {
  // Every request is a batch of its own (milliseconds of compute), run one after the other.
  constexpr int kStreams = 4;
  constexpr int kFloodCalls = 300;
  auto started = StartServer(
      OneRequestPerBatchArgs({"--grpc-max-concurrent-streams", absl::StrCat(kStreams)}));
  ASSERT_TRUE(started.ok()) << started.status();
  testing::ServerProcess& server = **started;
  std::mt19937_64 rng(testing::FreshSeed());

  auto good = inference::GRPCInferenceService::NewStub(server.NewChannel());
  auto flood_stub = inference::GRPCInferenceService::NewStub(server.NewChannel());
  // Both connections are up (and know the limit) before the flood starts.
  inference::ModelInferResponse response;
  ASSERT_THAT(Infer(*good, OneBatchRequest(rng), &response), GrpcOk());
  ASSERT_THAT(Infer(*flood_stub, OneBatchRequest(rng), &response), GrpcOk());

  AsyncCalls flood(*flood_stub);
  for (int i = 0; i < kFloodCalls; ++i) flood.Start(OneBatchRequest(rng), absl::Seconds(240));
  ASSERT_TRUE(flood.WaitForFinished(kStreams, absl::Seconds(60)));

  // The other client's calls queue behind at most the flooder's kStreams calls.
  int64_t largest_compute_us = 0;
  int64_t largest_queue_us = 0;
  for (int i = 0; i < 5; ++i) {
    ASSERT_THAT(Infer(*good, OneBatchRequest(rng), &response), GrpcOk());
    largest_compute_us =
        std::max(largest_compute_us, Int64Parameter(response, "compute_us").value_or(0));
    largest_queue_us = std::max(largest_queue_us, Int64Parameter(response, "queue_us").value_or(0));
  }
  const size_t finished_meanwhile = flood.finished();
  EXPECT_LT(finished_meanwhile, static_cast<size_t>(kFloodCalls))
      << "the flood was over before the other client's calls: nothing was measured";
  // Without the limit the flood's whole backlog (hundreds of batches) would sit in the queue.
  const int64_t bound_us = (kStreams + 2) * 3 * largest_compute_us + 100'000;
  EXPECT_LE(largest_queue_us, bound_us)
      << "queued " << largest_queue_us << " us behind a flood limited to " << kStreams
      << " streams; one batch takes up to " << largest_compute_us << " us";

  // The flood itself is slowed, not refused.
  ASSERT_TRUE(flood.WaitAll(absl::Seconds(240)));
  for (size_t i = 0; i < flood.size(); ++i) {
    EXPECT_THAT(flood.status(i), GrpcOk()) << "flood call " << i;
  }
}

}  // namespace
}  // namespace moe::integration
