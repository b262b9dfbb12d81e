// The one place where an absl::Status becomes the gRPC status a client sees.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace moe::api {

// Same code (the two enums share their numbering), same message.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace moe::api
