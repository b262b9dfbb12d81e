// The dense (non-MoE) weights of a decoder checkpoint: embeddings, norms, attention projections,
// the dense MLP of layers without an MoE block, and the LM head, read through the checkpoint
// reader with every shape checked against the config and widened to float32 once at load (the
// engine computes the dense parts in float32 whatever the checkpoint's dtype; widening
// bf16/f16 is exact).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/checkpoint.h"
#include "server/model/model_config.h"

namespace moe::model {

// Row-major [out, in] like nn.Linear. q, k and v are stacked into one matrix so that one GEMM
// projects all three: rows [0, H*hd) are q, then KV*hd rows of k, then KV*hd rows of v.
struct AttentionWeights {
  std::vector<float> qkv;       // [(H + 2 KV) hd, d]
  std::vector<float> qkv_bias;  // [(H + 2 KV) hd] or empty (Qwen2-MoE has biases)
  std::vector<float> o;         // [d, H hd]
  // RMSNorm weights on q and k (OLMoE: over the whole projection, [H hd] and [KV hd];
  // Qwen3-MoE: per head, [hd] each); empty when the family has no q/k norm.
  std::vector<float> q_norm;
  std::vector<float> k_norm;
};

// SwiGLU MLP of a dense layer: down(silu(gate(x)) * up(x)).
struct DenseMlpWeights {
  int64_t ffn_size = 0;        // f
  std::vector<float> gate_up;  // [2f, d]: gate rows then up rows
  std::vector<float> down;     // [d, f]
};

struct DecoderLayerWeights {
  std::vector<float> input_norm;           // [d]
  std::vector<float> post_attention_norm;  // [d]
  AttentionWeights attention;
  DenseMlpWeights dense_mlp;  // layers with layer_is_moe false only (ffn_size 0 otherwise)
};

struct DecoderWeights {
  std::vector<float> embed_tokens;  // [V, d]
  std::vector<float> final_norm;    // [d]
  // [V, d]; empty with tie_word_embeddings (the head is embed_tokens then).
  std::vector<float> lm_head;
  std::vector<DecoderLayerWeights> layers;  // [num_layers]

  const float* lm_head_data() const {
    return lm_head.empty() ? embed_tokens.data() : lm_head.data();
  }
  uint64_t bytes() const;
};

// Reads every dense tensor the config implies (names as transformers saves them for the
// family). A missing tensor is NOT_FOUND naming it; a wrong shape or a non-float dtype is
// INVALID_ARGUMENT naming the tensor, its shape and the expected one.
absl::StatusOr<DecoderWeights> LoadDecoderWeights(const Checkpoint& checkpoint,
                                                  const ModelConfig& config);

}  // namespace moe::model
