// What one decoder step takes and where it writes: the chunks of the sequences it runs and the
// host buffers for logits and the MoE metrics. Shared by DecoderModel and the device decoders.
#pragma once

#include <cstdint>
#include <span>

#include "server/engine/decoder/kv_cache.h"

namespace moe::engine {

// One sequence's part of a step.
struct DecoderChunk {
  // Tokens are appended at positions [sequence->length(), + tokens.size()). The sequence's cache
  // must have the model's kv_shape().
  KvSequence* sequence = nullptr;
  std::span<const int32_t> tokens;  // a prompt chunk (chunked prefill) or the one decode token
  bool all_logits = false;          // logits for every token (tests), else the last token's only
};

// Where a step writes; host pointers.
struct DecoderStepOutputs {
  // [sum over chunks of (all_logits ? tokens : 1), vocab_size], in chunk order. Null skips the LM
  // head altogether (prefill chunks whose logits nobody reads).
  float* logits = nullptr;
  // As in ModelRunOutputs (servable_model.h), over the step's tokens, each optional:
  int64_t* expert_token_counts = nullptr;  // [num_moe_layers, num_experts]
  double* layer_seconds = nullptr;         // [num_moe_layers] wall time of each MoE block
  double* gate_entropy_sum = nullptr;      // [num_moe_layers] sum over tokens (nats)
  // [num_moe_layers, num_experts]; non-null makes this a (slower) profiling pass.
  double* expert_seconds = nullptr;
};

}  // namespace moe::engine
