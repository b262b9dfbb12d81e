// gRPC status -> absl::Status: every code kept, the message prefixed with the call's name.
#include "client/src/status.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace moe::client {
namespace {

using ::moe::testing::StatusIs;

TEST(StatusTest, KeepsEveryCodeAndPrefixesTheRpcName) {
  for (int code = 1; code <= 16; ++code) {
    const grpc::Status status(static_cast<grpc::StatusCode>(code), "what went wrong");
    EXPECT_THAT(FromGrpcStatus("ModelInfer", status),
                StatusIs(static_cast<absl::StatusCode>(code), "ModelInfer: what went wrong"));
  }
}

TEST(StatusTest, OkStaysOk) { MOE_EXPECT_OK(FromGrpcStatus("ServerLive", grpc::Status::OK)); }

TEST(StatusTest, AnEmptyMessageBecomesTheCodeName) {
  EXPECT_THAT(FromGrpcStatus("ServerLive", grpc::Status(grpc::StatusCode::UNAVAILABLE, "")),
              StatusIs(absl::StatusCode::kUnavailable, "ServerLive: UNAVAILABLE"));
}

TEST(StatusTest, PrefixesTheClientsOwnErrors) {
  EXPECT_THAT(WithRpcName("ModelInfer", absl::InvalidArgumentError("input 'x' has no shape")),
              StatusIs(absl::StatusCode::kInvalidArgument, "ModelInfer: input 'x' has no shape"));
  MOE_EXPECT_OK(WithRpcName("ModelInfer", absl::OkStatus()));
}

}  // namespace
}  // namespace moe::client
