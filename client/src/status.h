// gRPC status -> absl::Status at the client's boundary: the same code (both follow
// google.rpc.Code), the message prefixed with the call that failed.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace moe::client {

// "ModelInfer: input 'input' has shape [2, 63]; model 'digits' expects [rows, 64]". An empty
// server message becomes the code's name ("ServerLive: UNAVAILABLE"). OK stays OK.
absl::Status FromGrpcStatus(absl::string_view rpc, const grpc::Status& status);

// `status` with its message prefixed by "<rpc>: " (for errors found by the client itself).
absl::Status WithRpcName(absl::string_view rpc, const absl::Status& status);

}  // namespace moe::client
