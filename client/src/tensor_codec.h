// The client's tensors <-> KServe v2 ModelInfer messages. Inputs are checked here, before
// anything is sent; responses are checked against their own shapes.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kserve/grpc_predict_v2.pb.h"
#include "moe/client/client.h"

namespace moe::client {

// Request parameter names (docs/API.md).
inline constexpr char kRoutingParameter[] = "routing";
inline constexpr char kPriorityParameter[] = "priority";
inline constexpr char kTimeoutParameter[] = "timeout";  // int64 microseconds

// "FP32", "FP16", "BF16".
absl::string_view WireTypeName(WireType type);

// INVALID_ARGUMENT naming the input and what is wrong: no inputs, an empty or repeated name, a
// negative dimension, a shape whose product is not the number of values, typed FP16/BF16 (the
// protocol has no typed field for them), raw and typed inputs mixed in one request.
absl::Status ValidateInputs(const std::vector<InferInput>& inputs);

// One ModelInferRequest: raw inputs as little-endian bytes in raw_input_contents, typed ones in
// contents.fp32_contents; options as the "routing", "priority" and "timeout" parameters (the
// timeout rounded up to whole microseconds), `outputs` as requested outputs, `request_id` as
// the id. INVALID_ARGUMENT for bad inputs (ValidateInputs), a negative priority or queue timeout, a
// call timeout <= 0.
absl::StatusOr<inference::ModelInferRequest> EncodeInferRequest(
    const std::string& model, const std::vector<InferInput>& inputs, const InferOptions& options);

// The outputs (FP32 or INT32, raw or typed) and the int64 timing parameters queue_us,
// compute_us and batch_rows. INTERNAL naming the output when the response contradicts itself (a
// byte or value count that does not match the shape, raw contents for some outputs only);
// UNIMPLEMENTED for another datatype.
absl::StatusOr<InferResult> DecodeInferResponse(const inference::ModelInferResponse& response);

}  // namespace moe::client
