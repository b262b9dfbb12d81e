#include "tools/synthetic_mixtral.h"

#include <cmath>
#include <random>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "moe/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/model/safetensors_writer.h"

namespace moe::tools {
namespace {

using kernels::DType;

std::vector<model::TensorSpec> TensorSpecs(const SyntheticMixtralShape& s) {
  const int64_t d = s.hidden_size;
  const int64_t head_dim = d / s.num_heads;
  std::vector<model::TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", s.dtype, {s.vocab_size, d}});
  for (int64_t l = 0; l < s.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    specs.push_back({p + "input_layernorm.weight", DType::kF32, {d}});
    specs.push_back({p + "self_attn.q_proj.weight", s.dtype, {s.num_heads * head_dim, d}});
    specs.push_back({p + "self_attn.k_proj.weight", s.dtype, {s.num_kv_heads * head_dim, d}});
    specs.push_back({p + "self_attn.v_proj.weight", s.dtype, {s.num_kv_heads * head_dim, d}});
    specs.push_back({p + "self_attn.o_proj.weight", s.dtype, {d, s.num_heads * head_dim}});
    specs.push_back({p + "post_attention_layernorm.weight", DType::kF32, {d}});
    specs.push_back({p + "block_sparse_moe.gate.weight", s.dtype, {s.num_experts, d}});
    for (int64_t e = 0; e < s.num_experts; ++e) {
      const std::string x = absl::StrCat(p, "block_sparse_moe.experts.", e, ".");
      specs.push_back({x + "w1.weight", s.dtype, {s.intermediate_size, d}});
      specs.push_back({x + "w2.weight", s.dtype, {d, s.intermediate_size}});
      specs.push_back({x + "w3.weight", s.dtype, {s.intermediate_size, d}});
    }
  }
  specs.push_back({"model.norm.weight", DType::kF32, {d}});
  specs.push_back({"lm_head.weight", s.dtype, {s.vocab_size, d}});
  return specs;
}

}  // namespace

std::string SyntheticMixtralConfigJson(const SyntheticMixtralShape& s) {
  nlohmann::ordered_json config = {
      {"architectures", {"MixtralForCausalLM"}},
      {"model_type", "mixtral"},
      {"vocab_size", s.vocab_size},
      {"hidden_size", s.hidden_size},
      {"intermediate_size", s.intermediate_size},
      {"num_hidden_layers", s.num_layers},
      {"num_attention_heads", s.num_heads},
      {"num_key_value_heads", s.num_kv_heads},
      {"num_local_experts", s.num_experts},
      {"num_experts_per_tok", s.top_k},
      {"max_position_embeddings", s.max_position_embeddings},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 1000000.0},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", false},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"sliding_window", nullptr},
      {"torch_dtype", s.dtype == DType::kBF16  ? "bfloat16"
                      : s.dtype == DType::kF16 ? "float16"
                                               : "float32"},
  };
  return config.dump(2) + "\n";
}

absl::Status WriteSyntheticMixtralWeights(const std::string& path,
                                          const SyntheticMixtralShape& shape) {
  if (shape.num_heads < 1 || shape.hidden_size % shape.num_heads != 0 || shape.num_kv_heads < 1 ||
      shape.num_heads % shape.num_kv_heads != 0) {
    return absl::InvalidArgumentError(
        "the attention heads must divide the hidden size, and the KV heads the heads");
  }
  const std::vector<model::TensorSpec> specs = TensorSpecs(shape);
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<model::SafetensorsWriter> writer,
                       model::SafetensorsWriter::Create(path, specs,
                                                        {{"format", "pt"},
                                                         {"generator", "moe-make-synthetic"},
                                                         {"seed", absl::StrCat(shape.seed)}}));
  std::mt19937_64 rng(shape.seed);
  std::vector<float> values;
  std::vector<uint16_t> half;
  for (const model::TensorSpec& spec : specs) {
    int64_t count = 1;
    for (int64_t dim : spec.shape) count *= dim;
    const bool norm = spec.name.ends_with("norm.weight");
    // Fan-in is the last dimension ([out, in]); embeddings get unit scale.
    const double scale = norm ? 0.05
                         : spec.name == "model.embed_tokens.weight"
                             ? 1.0
                             : 1.0 / std::sqrt(static_cast<double>(spec.shape.back()));
    std::normal_distribution<float> dist(norm ? 1.0f : 0.0f, static_cast<float>(scale));
    values.resize(static_cast<size_t>(count));
    for (float& v : values) v = dist(rng);
    if (spec.dtype == DType::kF32) {
      MOE_RETURN_IF_ERROR(writer->Append(std::as_bytes(std::span<const float>(values))));
      continue;
    }
    half.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      half[i] = spec.dtype == DType::kBF16 ? kernels::FloatToBF16(values[i])
                                           : kernels::FloatToHalf(values[i]);
    }
    MOE_RETURN_IF_ERROR(writer->Append(std::as_bytes(std::span<const uint16_t>(half))));
  }
  return writer->Finish();
}

}  // namespace moe::tools
