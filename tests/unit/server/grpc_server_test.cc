#include "server/api/grpc_server.h"

#include <grpcpp/create_channel.h>

#include <memory>

#include "grpc/health/v1/health.grpc.pb.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "tests/testing/fake_model.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/api/model_registry.h"
#include "tests/testing/status_matchers.h"

namespace moe::api {
namespace {

using ::moe::testing::StatusIs;

TEST(GrpcServerTest, BusyAddressIsUnavailableNotACrash) {
  ModelRegistry registry;
  absl::StatusOr<std::unique_ptr<GrpcServer>> first =
      GrpcServer::Start({.address = "127.0.0.1:0"}, &registry);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<GrpcServer>> second =
      GrpcServer::Start({.address = (*first)->address()}, &registry);
  EXPECT_THAT(second.status(),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::HasSubstr("cannot listen")));
}

TEST(GrpcServerTest, RefusesAMessageLimitGrpcCannotHold) {
  ModelRegistry registry;
  EXPECT_THAT(
      GrpcServer::Start({.address = "127.0.0.1:0", .max_message_bytes = 0}, &registry).status(),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(GrpcServer::Start({.address = "127.0.0.1:0", .max_message_bytes = int64_t{1} << 40},
                                &registry)
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// Health and readiness through a model's life: declared (loading), loaded, draining.
TEST(GrpcServerTest, HealthAndReadinessFollowLoadingAndDraining) {
  ModelRegistry registry;
  ASSERT_TRUE(registry.Declare("fake").ok());
  absl::StatusOr<std::unique_ptr<GrpcServer>> server =
      GrpcServer::Start({.address = "127.0.0.1:0"}, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto kserve = inference::GRPCInferenceService::NewStub(channel);

  auto health_of = [&](const std::string& service) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health->Check(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  };
  auto server_ready = [&] {
    grpc::ClientContext context;
    inference::ServerReadyResponse response;
    EXPECT_TRUE(kserve->ServerReady(&context, {}, &response).ok());
    return response.ready();
  };
  using Serving = grpc::health::v1::HealthCheckResponse;

  // Loading: listening and live, but neither ready nor serving.
  EXPECT_EQ(health_of(""), Serving::NOT_SERVING);
  EXPECT_EQ(health_of("fake"), Serving::NOT_SERVING);
  EXPECT_FALSE(server_ready());
  inference::ModelInferRequest infer;
  infer.set_model_name("fake");
  inference::ModelInferResponse infer_response;
  grpc::ClientContext infer_context;
  const grpc::Status loading = kserve->ModelInfer(&infer_context, infer, &infer_response);
  EXPECT_EQ(loading.error_code(), grpc::StatusCode::UNAVAILABLE) << loading.error_message();

  // Loaded.
  auto scheduler = scheduler::BatchScheduler::Create(std::make_unique<testing::FakeModel>(), {});
  ASSERT_TRUE(scheduler.ok()) << scheduler.status();
  ASSERT_TRUE(registry.SetLoaded("fake", std::move(*scheduler)).ok());
  (*server)->UpdateHealth();
  EXPECT_EQ(health_of(""), Serving::SERVING);
  EXPECT_EQ(health_of("fake"), Serving::SERVING);
  EXPECT_TRUE(server_ready());

  // Draining.
  registry.BeginDrain();
  (*server)->UpdateHealth();
  EXPECT_EQ(health_of(""), Serving::NOT_SERVING);
  EXPECT_EQ(health_of("fake"), Serving::NOT_SERVING);
  EXPECT_FALSE(server_ready());
  EXPECT_TRUE(registry.FinishDrain(absl::Seconds(10)));
}

TEST(GrpcServerTest, HealthWatchStreamsTheChangeToServing) {
  ModelRegistry registry;
  ASSERT_TRUE(registry.Declare("fake").ok());
  absl::StatusOr<std::unique_ptr<GrpcServer>> server =
      GrpcServer::Start({.address = "127.0.0.1:0"}, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("fake");
  auto stream = health->Watch(&context, request);
  using Serving = grpc::health::v1::HealthCheckResponse;
  Serving update;
  ASSERT_TRUE(stream->Read(&update));
  EXPECT_EQ(update.status(), Serving::NOT_SERVING) << "while the model loads";

  auto scheduler = scheduler::BatchScheduler::Create(std::make_unique<testing::FakeModel>(), {});
  ASSERT_TRUE(scheduler.ok()) << scheduler.status();
  ASSERT_TRUE(registry.SetLoaded("fake", std::move(*scheduler)).ok());
  (*server)->UpdateHealth();
  ASSERT_TRUE(stream->Read(&update));
  EXPECT_EQ(update.status(), Serving::SERVING) << "once it has loaded";
  context.TryCancel();
}

}  // namespace
}  // namespace moe::api
