// config.json of a MoEMLP network (docs/moe_mlp_format.md): the classic mixture-of-experts
// network of the literature, input projection -> blocks of x + MoE(LayerNorm(x)) -> final
// LayerNorm -> output projection. Parsed, bounded and cross-checked like the decoder configs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "moe/kernels/moe_layer.h"

namespace moe::model {

// The value of "architecture" that selects this format.
inline constexpr char kMoEMLPArchitecture[] = "MoEMLP";

struct MoEMLPConfig {
  int64_t input_dim = 0;                                        // features per input row
  int64_t hidden_size = 0;                                      // d
  int64_t output_dim = 0;                                       // values per output row
  int64_t num_blocks = 0;                                       // MoE blocks
  int64_t num_experts = 0;                                      // E per block
  int top_k = 0;                                                // experts per row
  int64_t expert_ffn_dim = 0;                                   // f, per expert
  kernels::Activation activation = kernels::Activation::kReLU;  // kReLU, kGELU or kSwiGLU
  kernels::ScoringFunc router_scoring = kernels::ScoringFunc::kSoftmax;
  bool normalize_top_k = true;
  double layer_norm_eps = 1e-5;
  std::string input_name = "input";
  std::string output_name = "logits";
  std::vector<std::string> output_labels;  // [output_dim] or empty
  std::string description;

  // Rows of each expert's w_in: 2f for SwiGLU (gate rows, then up rows), f otherwise.
  int64_t expert_in_rows() const;
  kernels::RouterConfig router() const;
};

// "relu" | "gelu" | "swiglu" as written in config.json.
const char* MoEMLPActivationName(kernels::Activation activation);

// Parses config.json text; `source` names the file in errors. Every error is INVALID_ARGUMENT
// naming the file and the key. Unknown keys are refused (a misspelt optional key would otherwise
// be silently ignored).
absl::StatusOr<MoEMLPConfig> ParseMoEMLPConfig(const std::string& json_text,
                                               const std::string& source);

// The config as config.json text (what ParseMoEMLPConfig reads back to an equal config).
std::string MoEMLPConfigToJson(const MoEMLPConfig& config);

// Reads a config.json file with a size cap: NOT_FOUND when absent, INVALID_ARGUMENT when too
// large to be a config.
absl::StatusOr<std::string> ReadConfigFile(const std::string& path);

// What a config.json's top-level keys say it describes, before it is parsed in full.
struct ConfigIdentity {
  enum class Kind {
    kMoEMLP,       // "architecture": "MoEMLP"
    kHuggingFace,  // has "architectures" or "model_type" (a transformers config)
    kUnknown,      // neither; `architecture` holds "architecture"'s value when it is a string
  };
  Kind kind = Kind::kUnknown;
  std::string architecture;
};

// INVALID_ARGUMENT when the text is not a JSON object.
absl::StatusOr<ConfigIdentity> IdentifyConfig(const std::string& json_text,
                                              const std::string& source);

}  // namespace moe::model
