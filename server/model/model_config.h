// config.json of the supported MoE decoder families, parsed, bounded and normalised into one
// description the rest of the server reads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "moe/kernels/dtype.h"
#include "moe/kernels/moe_layer.h"

namespace moe::model {

enum class ModelFamily { kMixtral, kOlmoe, kQwen2Moe, kQwen3Moe };

std::string_view ModelFamilyName(ModelFamily family);

// Scaled rotary embeddings (config.json's rope_scaling, or rope_parameters in newer
// transformers releases). Read by engine/decoder/rotary_embedding.cc.
enum class RopeScalingType {
  kNone,
  kLinear,  // position interpolation: every frequency divided by `factor`
  kYarn,    // YaRN (arXiv 2309.00071): frequencies blended by a ramp, cos/sin scaled
};

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;  // >= 1
  // YaRN: the context the model was trained with, over which the ramp between interpolated and
  // extrapolated frequencies is placed (rope_scaling's original_max_position_embeddings, else
  // the config's max_position_embeddings), and the ramp's ends in rotations.
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  // YaRN: the factor cos and sin are multiplied by; 0.1 ln(factor) + 1 unless the config gives
  // attention_factor.
  double attention_factor = 1.0;
};

struct ModelConfig {
  ModelFamily family = ModelFamily::kMixtral;
  std::string architecture;  // e.g. "MixtralForCausalLM"
  std::string model_type;    // e.g. "mixtral"

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;  // d
  int64_t num_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;                 // hidden_size / heads unless given
  int64_t dense_intermediate_size = 0;  // FFN of non-MoE layers (Qwen2/3 mlp_only_layers)
  int64_t moe_intermediate_size = 0;    // f, per routed expert
  int64_t num_experts = 0;              // E
  int top_k = 0;                        // k
  bool norm_topk_prob = false;
  int64_t shared_expert_intermediate_size = 0;  // 0 = none (Qwen2-MoE has one)
  std::vector<bool> layer_is_moe;               // [num_layers]
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  // The longest sequence: config.json's max_position_embeddings, times the RoPE scaling factor
  // where the config asks for scaling (YaRN: its original_max_position_embeddings times the
  // factor), as vLLM derives it.
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2 family)
  bool qk_norm = false;         // OLMoE / Qwen3-MoE
  kernels::DType torch_dtype = kernels::DType::kF32;

  // Attention window in tokens as transformers applies it (Mixtral's `sliding_window`; for the
  // Qwen families only when `use_sliding_window` is true); 0 = full causal attention.
  int64_t sliding_window = 0;
  // Special tokens from config.json; -1 / empty when not given. `eos_token_id` may be a list.
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;

  // Routing as the family's reference implementation does it.
  kernels::RouterConfig router() const;
  // Indices of the layers with an MoE block.
  std::vector<int64_t> MoELayerIndices() const;
};

// Parses config.json text. `source` names the file in errors. Unknown architecture: an error
// listing the supported ones. Sizes are bounded (no value that would make the loader allocate
// absurd memory) and cross-checked (top_k <= num_experts, heads divide hidden_size, ...).
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source);

// Reads `<dir>/config.json`.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

}  // namespace moe::model
