#include "client/src/status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace moe::client {

absl::Status FromGrpcStatus(absl::string_view rpc, const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  const std::string& message = status.error_message();
  return absl::Status(
      code, absl::StrCat(rpc, ": ", message.empty() ? absl::StatusCodeToString(code) : message));
}

absl::Status WithRpcName(absl::string_view rpc, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(rpc, ": ", status.message()));
}

}  // namespace moe::client
