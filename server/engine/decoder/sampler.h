// Choosing the next token from a row of logits: greedy, or sampling with temperature, top-k and
// top-p (nucleus), with Hugging Face's repetition penalty. One sampler per sequence; its random
// stream depends on the seed only, so a request with a seed is reproducible.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace moe::engine {

struct SamplingParams {
  float temperature = 0.0f;         // 0 = greedy (argmax); else logits / temperature
  int32_t top_k = 0;                // keep the k most likely tokens; 0 = all
  float top_p = 1.0f;               // keep the smallest set whose probability reaches top_p
  float repetition_penalty = 1.0f;  // > 1 discourages tokens already in the history
  // The random stream. Every value (0 included) is a seed; the caller picks a random one when
  // the client gave none.
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the field and its allowed range: temperature finite and >= 0;
// top_k in [0, vocab_size]; top_p in (0, 1]; repetition_penalty finite and > 0.
absl::Status ValidateSamplingParams(const SamplingParams& params, int64_t vocab_size);

class TokenSampler {
 public:
  // `params` must have passed ValidateSamplingParams.
  explicit TokenSampler(const SamplingParams& params);

  // The next token from `logits` ([vocab]). `history` (prompt + tokens generated so far) feeds
  // the repetition penalty as transformers applies it: each distinct token's logit is divided
  // by the penalty when positive and multiplied when negative (ids outside the vocabulary are
  // ignored). `logprob`, when non-null, receives the log-probability of the chosen token under
  // the distribution actually sampled from (after penalty, temperature, top-k and top-p); for
  // greedy decoding, the log-softmax of the penalised logits. Greedy ties go to the lower id;
  // NaN logits are never chosen unless every logit is NaN.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> history, float* logprob);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> scratch_;                         // penalised logits
  std::vector<uint8_t> penalised_;                     // [vocab] marks during the penalty
  std::vector<std::pair<float, int32_t>> candidates_;  // (logit, then probability; id)
};

}  // namespace moe::engine
