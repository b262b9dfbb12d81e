// Fills a KServe ModelInferResponse from a finished request: the outputs asked for, raw or
// typed as the request was, and timing parameters that show where the time went.
#pragma once

#include "kserve/grpc_predict_v2.pb.h"
#include "server/api/infer_request_parser.h"
#include "server/engine/servable_model.h"
#include "server/scheduler/inference_request.h"

namespace moe::api {

// Response parameters (int64): time queued and in the forward pass, and the batch's rows.
inline constexpr char kQueueMicrosParameter[] = "queue_us";
inline constexpr char kComputeMicrosParameter[] = "compute_us";
inline constexpr char kBatchRowsParameter[] = "batch_rows";

void BuildInferResponse(const inference::ModelInferRequest& request,
                        const ParsedInferRequest& parsed, const engine::ModelDescription& model,
                        const scheduler::InferenceResult& result,
                        inference::ModelInferResponse* response);

}  // namespace moe::api
