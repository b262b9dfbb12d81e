#include "server/api/grpc_server.h"

#include <memory>

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

}  // namespace
}  // namespace moe::api
