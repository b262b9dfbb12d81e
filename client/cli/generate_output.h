// How `moe-client generate` shows a stream: token ids as they arrive ("5 17 42", or
// "5:-0.0312 17:-1.2500" with log-probabilities), then a summary line, or one JSON object.
#pragma once

#include <string>

#include "moe/client/client.h"

namespace moe::client::cli {

// One chunk's tokens for the stream, each preceded by a space unless `first`.
std::string FormatChunk(const GenerateChunk& chunk, bool first);

// "finish_reason=length prompt_tokens=5 completion_tokens=8 ttft_ms=12.31 server_ttft_ms=10.02
// e2e_ms=40.50 tokens_per_second=197.5 preemptions=0" (tokens_per_second: completion tokens over
// the client's end-to-end time).
std::string FormatSummary(const GenerateResult& result);

// Everything at once: model, token_ids, logprobs (when asked), text (when the model has a
// tokenizer) and the summary's fields.
std::string FormatGenerateJson(const std::string& model, const GenerateResult& result,
                               bool logprobs);

}  // namespace moe::client::cli
