// One moe.v1.Generate call: a server-streaming reactor that is also the sequence's sink in
// the generation scheduler. Tokens arrive on the scheduler thread; at most one write is in
// flight, and tokens that arrive meanwhile are coalesced into the next message, so a slow
// client costs the scheduler nothing and receives fewer, larger messages. The final message
// carries the finish reason and counts. Client cancellation (or a deadline) stops the
// sequence and frees its KV cache.
#pragma once

#include "grpcpp/grpcpp.h"
#include "moe/v1/moe_service.pb.h"
#include "server/api/model_registry.h"
#include "server/metrics/server_metrics.h"

namespace moe::api {

// Starts the call and returns its reactor (which deletes itself when the call is done).
grpc::ServerWriteReactor<moe::v1::GenerateResponse>* StartGenerateCall(
    grpc::CallbackServerContext* context, const moe::v1::GenerateRequest* request,
    ModelRegistry* registry, metrics::ServerMetrics* metrics);

}  // namespace moe::api
