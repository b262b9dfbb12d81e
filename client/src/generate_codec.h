// moe.v1 Generate messages to and from the client's types: GenerateOptions checked and turned
// into a GenerateRequest, and each GenerateResponse split into the chunk the caller sees and
// what the final summary keeps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "moe/client/client.h"
#include "moe/v1/moe_service.pb.h"

namespace moe::client {

// INVALID_ARGUMENT naming the field for what the client can tell is wrong without the model:
// an empty model name or prompt, a negative token id, max_new_tokens or top_k below 0, a
// temperature or repetition penalty below 0 or not finite, top_p outside [0, 1], more than 16
// stop ids, a timeout that is not positive. Vocabulary and context limits are the server's to
// check.
absl::Status ValidateGenerateOptions(const std::string& model,
                                     const std::vector<int32_t>& prompt_token_ids,
                                     const GenerateOptions& options);

// The request, after ValidateGenerateOptions.
absl::StatusOr<moe::v1::GenerateRequest> EncodeGenerateRequest(
    const std::string& model, const std::vector<int32_t>& prompt_token_ids,
    const GenerateOptions& options);

FinishReason FinishReasonFromProto(moe::v1::FinishReason reason);

// Fills `chunk` with the message's tokens, log-probabilities and text, and adds them and the
// final message's fields (finish reason, counts, server TTFT, preemptions) to `result`.
// INTERNAL when the message has a number of log-probabilities other than 0 or its tokens'.
absl::Status AddGenerateResponse(const moe::v1::GenerateResponse& response, GenerateChunk* chunk,
                                 GenerateResult* result);

}  // namespace moe::client
