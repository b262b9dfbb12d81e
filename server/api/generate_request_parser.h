// Checks a moe.v1.GenerateRequest against the model it names and turns it into what the
// generation scheduler runs. Every refusal is INVALID_ARGUMENT with a message naming the field
// and the value at fault. Nothing a client sends makes the server allocate without bound: token
// ids arrive within the request (its size capped by --max-message-bytes) and are copied once; a
// text prompt longer than 16 bytes per token of max_model_len is refused before it is tokenized;
// the prompt plus max_new_tokens, which sizes the KV cache a sequence may take, must fit
// max_model_len.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "moe/v1/moe_service.pb.h"
#include "server/scheduler/generation_request.h"
#include "server/tokenizer/tokenizer.h"

namespace moe::api {

// What the request is checked against.
struct GenerationLimits {
  int64_t vocab_size = 0;
  int64_t max_model_len = 0;           // prompt + generated
  std::vector<int32_t> eos_token_ids;  // the model's end-of-sequence ids
  int64_t bos_token_id = -1;  // put before an encoded prompt_text; -1 (or >= vocab_size): none
  const tokenizer::Tokenizer* tokenizer = nullptr;  // null: prompt_text is refused
  std::string model_name;                           // for messages
};

inline constexpr int32_t kDefaultMaxNewTokens = 64;
inline constexpr int kMaxStopTokenIds = 16;

// The request as the scheduler takes it (sink unset). A missing seed is drawn here, at random.
absl::StatusOr<std::unique_ptr<scheduler::GenerationRequest>> ParseGenerateRequest(
    const moe::v1::GenerateRequest& request, const GenerationLimits& limits);

}  // namespace moe::api
