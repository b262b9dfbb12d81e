// Rotary position embeddings in the rotate-half convention (GPT-NeoX / Hugging Face Llama,
// Mixtral, Qwen, OLMoE): channel i of a head pairs with channel i + head_dim/2 and both turn by
// position * inv_freq[i], inv_freq[i] = rope_theta^(-2i / head_dim) unless the config scales it
// (linear or YaRN, model::RopeScaling), in which case cos and sin may also be scaled.
#pragma once

#include <cstdint>
#include <vector>

#include "server/model/model_config.h"

namespace moe::engine {

struct RopeFrequencies {
  std::vector<double> inv_freq;  // [head_dim / 2]
  double attention_scale = 1.0;  // cos and sin are multiplied by it (YaRN)
};

// The frequencies transformers' ROPE_INIT_FUNCTIONS compute for `scaling` ("default",
// "linear", "yarn"), in double precision. head_dim even and > 0, theta > 0.
RopeFrequencies ComputeRopeFrequencies(int64_t head_dim, double theta,
                                       const model::RopeScaling& scaling);

class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t head_dim, RopeFrequencies frequencies);
  // Unscaled: inv_freq[i] = theta^(-2i / head_dim).
  RotaryEmbedding(int64_t head_dim, double theta);

  // Makes positions [0, positions) available to Apply (grows the cos/sin table; amortised by
  // doubling). Call before a parallel region that applies them.
  void Prepare(int64_t positions);

  // Rotates `num_heads` heads of `head_dim` values laid out back to back at `x`, in place, for
  // token position `position` (< the prepared count).
  void Apply(float* x, int64_t num_heads, int64_t position) const;

 private:
  int64_t head_dim_;
  int64_t half_;
  RopeFrequencies frequencies_;
  int64_t positions_ = 0;
  // [positions, half] each; angles computed in double so long positions keep their precision.
  std::vector<float> cos_;
  std::vector<float> sin_;
};

}  // namespace moe::engine
