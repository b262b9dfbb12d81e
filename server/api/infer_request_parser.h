// Checks a KServe ModelInferRequest against the model it names and turns it into float32 rows
// for the scheduler. Every refusal is INVALID_ARGUMENT (FAILED_PRECONDITION for a model that
// takes no tensor requests) with a message naming the tensor, field or value at fault.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kserve/grpc_predict_v2.pb.h"
#include "server/engine/servable_model.h"

namespace moe::api {

// Names of the optional routing outputs and of the request parameters understood.
inline constexpr char kRoutingIdsOutput[] = "routing_expert_ids";
inline constexpr char kRoutingWeightsOutput[] = "routing_weights";
inline constexpr char kRoutingParameter[] = "routing";
inline constexpr char kTimeoutParameter[] = "timeout";    // int64 microseconds (Triton's)
inline constexpr char kPriorityParameter[] = "priority";  // int64, 1 = highest, 0 = default

struct ParsedInferRequest {
  std::vector<float> input;  // [rows, input_width]
  int64_t rows = 0;
  // Outputs to return, in this order.
  bool want_output = false;
  bool want_routing_ids = false;
  bool want_routing_weights = false;
  // The request came in raw_input_contents: answer in raw_output_contents.
  bool raw_output = false;
  std::optional<absl::Duration> timeout;
  int64_t priority = 0;

  bool want_routing() const { return want_routing_ids || want_routing_weights; }
};

absl::StatusOr<ParsedInferRequest> ParseInferRequest(const inference::ModelInferRequest& request,
                                                     const engine::ModelDescription& model,
                                                     int64_t max_rows);

}  // namespace moe::api
