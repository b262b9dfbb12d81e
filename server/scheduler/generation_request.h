// One accepted generation request as the generation scheduler holds it: the prompt, how to
// sample and when to stop, and the sink that receives the tokens as they come.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/engine/decoder/sampler.h"

namespace moe::scheduler {

enum class FinishReason { kNone, kLength, kStop };

// What the final message reports.
struct GenerationSummary {
  FinishReason finish_reason = FinishReason::kNone;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  absl::Duration time_to_first_token = absl::ZeroDuration();  // zero when none was generated
  int64_t preemptions = 0;
};

// Receives one sequence's output. Called on the scheduler thread (OnFinished also on the
// thread that cancels or drains), never concurrently for one sink; must not block. OnFinished
// comes exactly once per accepted request and is the last call: the sink may delete itself in
// it. The sink must outlive the request until then.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // Tokens sampled since the last call, with their log-probabilities when asked for.
  virtual void OnTokens(std::span<const int32_t> token_ids, std::span<const float> logprobs) = 0;
  virtual void OnFinished(const absl::Status& status, const GenerationSummary& summary) = 0;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;  // non-empty, ids < vocab (checked by the API layer)
  int64_t max_new_tokens = 1;   // >= 1; prompt + max_new_tokens <= max_model_len
  engine::SamplingParams sampling;
  std::vector<int32_t> stop_token_ids;  // eos included unless the client said otherwise
  bool logprobs = false;
  absl::Time arrival = absl::Now();
  GenerationSink* sink = nullptr;
};

}  // namespace moe::scheduler
