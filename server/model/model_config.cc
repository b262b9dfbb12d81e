#include "server/model/model_config.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "moe/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/model/config_json.h"
#include "server/model/error_text.h"

namespace moe::model {
namespace {

using nlohmann::json;

// Bounds on every size read from config.json. They are far above any published MoE model and
// far below what would overflow the int64 products the loader forms (E * 2f * d) or make it
// try to allocate absurd amounts of memory before a tensor is even looked at.
constexpr int64_t kMaxHiddenSize = 65536;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxExperts = 4096;
constexpr int64_t kMaxVocabSize = int64_t{4} << 20;
constexpr int64_t kMaxFfnSize = int64_t{1} << 20;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxHeadDim = 1024;
constexpr int64_t kMaxPositions = int64_t{1} << 26;
constexpr double kMaxRopeTheta = 1e12;

// What distinguishes the families when reading config.json: their names, the keys they use for
// the expert count and expert FFN width, and the defaults Hugging Face transformers applies
// when an optional key is absent (so a config means here what it means there).
struct FamilyInfo {
  ModelFamily family;
  const char* display_name;
  const char* architecture;
  const char* model_type;
  const char* experts_key;
  const char* expert_ffn_key;
  double default_rms_norm_eps;
  double default_rope_theta;
  int64_t default_max_position_embeddings;
};

constexpr FamilyInfo kFamilies[] = {
    {ModelFamily::kMixtral, "Mixtral", "MixtralForCausalLM", "mixtral", "num_local_experts",
     "intermediate_size", 1e-5, 1e6, 4096 * 32},
    {ModelFamily::kOlmoe, "OLMoE", "OlmoeForCausalLM", "olmoe", "num_experts", "intermediate_size",
     1e-5, 10000.0, 4096},
    {ModelFamily::kQwen2Moe, "Qwen2-MoE", "Qwen2MoeForCausalLM", "qwen2_moe", "num_experts",
     "moe_intermediate_size", 1e-6, 10000.0, 32768},
    {ModelFamily::kQwen3Moe, "Qwen3-MoE", "Qwen3MoeForCausalLM", "qwen3_moe", "num_experts",
     "moe_intermediate_size", 1e-6, 10000.0, 32768},
};

const FamilyInfo& InfoOf(ModelFamily family) {
  for (const FamilyInfo& info : kFamilies) {
    if (info.family == family) return info;
  }
  return kFamilies[0];  // unreachable: every enumerator has an entry
}

std::string SupportedArchitectures() {
  std::vector<std::string> names;
  for (const FamilyInfo& info : kFamilies) {
    names.push_back(absl::StrCat(info.architecture, " (model_type \"", info.model_type, "\")"));
  }
  return absl::StrJoin(names, ", ");
}

// Typed, bounded access to the keys of one config.json object. Every error names the file and
// the key, and for out-of-range values the accepted range, so the user can fix the file.
class ConfigReader {
 public:
  ConfigReader(const json& root, const std::string& source) : root_(root), source_(source) {}

  // The value of `key`, or nullptr when absent or null (HF writes null for "use the default").
  const json* Find(absl::string_view key) const {
    auto it = root_.find(std::string(key));
    if (it == root_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  absl::Status Missing(absl::string_view key, absl::string_view why) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": required key '", key, "' is missing (", why, ")"));
  }

  absl::Status WrongType(absl::string_view key, absl::string_view expected,
                         const json& value) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": key '", key, "' must be ", expected,
                                                   ", got ", DescribeJsonValue(value)));
  }

  absl::Status OutOfRange(absl::string_view key, absl::string_view value, absl::string_view min,
                          absl::string_view max) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": '", key, "' = ", value,
                                                   " is out of the supported range [", min, ", ",
                                                   max, "]"));
  }

  absl::StatusOr<int64_t> IntValue(absl::string_view key, const json& value, int64_t min,
                                   int64_t max) const {
    if (!value.is_number_integer()) return WrongType(key, "an integer", value);
    if (value.is_number_unsigned()) {
      const uint64_t unsigned_value = value.get<uint64_t>();
      // min may be positive: an unsigned 0 is still below it.
      if (unsigned_value > static_cast<uint64_t>(max) ||
          static_cast<int64_t>(unsigned_value) < min) {
        return OutOfRange(key, std::to_string(unsigned_value), std::to_string(min),
                          std::to_string(max));
      }
      return static_cast<int64_t>(unsigned_value);
    }
    const int64_t signed_value = value.get<int64_t>();
    if (signed_value < min || signed_value > max) {
      return OutOfRange(key, std::to_string(signed_value), std::to_string(min),
                        std::to_string(max));
    }
    return signed_value;
  }

  absl::StatusOr<int64_t> RequiredInt(absl::string_view key, int64_t min, int64_t max,
                                      absl::string_view why) const {
    const json* value = Find(key);
    if (value == nullptr) return Missing(key, why);
    return IntValue(key, *value, min, max);
  }

  absl::StatusOr<int64_t> OptionalInt(absl::string_view key, int64_t fallback, int64_t min,
                                      int64_t max) const {
    const json* value = Find(key);
    if (value == nullptr) return fallback;
    return IntValue(key, *value, min, max);
  }

  // `min_exclusive` < value <= `max`.
  absl::StatusOr<double> OptionalDouble(absl::string_view key, double fallback,
                                        double min_exclusive, double max) const {
    const json* value = Find(key);
    if (value == nullptr) return fallback;
    return DoubleValue(key, *value, min_exclusive, max);
  }

  absl::StatusOr<double> DoubleValue(absl::string_view key, const json& value, double min_exclusive,
                                     double max) const {
    if (!value.is_number()) return WrongType(key, "a number", value);
    const double number = value.get<double>();
    if (!std::isfinite(number) || number <= min_exclusive || number > max) {
      return absl::InvalidArgumentError(absl::StrCat(source_, ": '", key, "' = ", value.dump(),
                                                     " is out of the supported range (",
                                                     min_exclusive, ", ", max, "]"));
    }
    return number;
  }

  absl::StatusOr<bool> OptionalBool(absl::string_view key, bool fallback) const {
    const json* value = Find(key);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) return WrongType(key, "true or false", *value);
    return value->get<bool>();
  }

  absl::StatusOr<std::optional<std::string>> OptionalString(absl::string_view key) const {
    const json* value = Find(key);
    if (value == nullptr) return std::optional<std::string>();
    if (!value->is_string()) return WrongType(key, "a string", *value);
    return std::optional<std::string>(value->get<std::string>());
  }

  const std::string& source() const { return source_; }

 private:
  const json& root_;
  const std::string& source_;
};

// Picks the family from `architectures[0]` (what transformers instantiates), falling back to
// `model_type` when no architecture is listed. Both present and naming different families is
// refused: one of them was edited by hand and we cannot tell which is right.
absl::StatusOr<const FamilyInfo*> SelectFamily(const ConfigReader& reader) {
  std::optional<std::string> architecture;
  if (const json* architectures = reader.Find("architectures"); architectures != nullptr) {
    if (!architectures->is_array()) {
      return reader.WrongType("architectures", "an array of strings", *architectures);
    }
    if (!architectures->empty()) {
      const json& first = architectures->front();
      if (!first.is_string()) {
        return reader.WrongType("architectures[0]", "a string", first);
      }
      architecture = first.get<std::string>();
    }
  }
  MOE_ASSIGN_OR_RETURN(std::optional<std::string> model_type, reader.OptionalString("model_type"));

  const FamilyInfo* by_architecture = nullptr;
  const FamilyInfo* by_model_type = nullptr;
  for (const FamilyInfo& info : kFamilies) {
    if (architecture.has_value() && *architecture == info.architecture) by_architecture = &info;
    if (model_type.has_value() && *model_type == info.model_type) by_model_type = &info;
  }
  if (architecture.has_value()) {
    if (by_architecture == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(reader.source(), ": unsupported architecture ", Quote(*architecture),
                       "; supported architectures: ", SupportedArchitectures()));
    }
    if (by_model_type != nullptr && by_model_type != by_architecture) {
      return absl::InvalidArgumentError(
          absl::StrCat(reader.source(), ": architectures[0] ", Quote(*architecture), " is a ",
                       by_architecture->display_name, " model but model_type ", Quote(*model_type),
                       " is ", by_model_type->display_name, "; make the two agree"));
    }
    return by_architecture;
  }
  if (by_model_type == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        reader.source(), ": unsupported model_type ",
        model_type.has_value() ? Quote(*model_type) : "(none given)",
        " and no 'architectures' entry; supported architectures: ", SupportedArchitectures()));
  }
  return by_model_type;
}

absl::StatusOr<kernels::DType> ReadTorchDType(const ConfigReader& reader) {
  // Newer transformers releases write "dtype", older ones "torch_dtype".
  const char* key = "torch_dtype";
  MOE_ASSIGN_OR_RETURN(std::optional<std::string> name, reader.OptionalString(key));
  if (!name.has_value()) {
    key = "dtype";
    MOE_ASSIGN_OR_RETURN(name, reader.OptionalString(key));
  }
  if (!name.has_value()) return kernels::DType::kF32;
  const std::optional<kernels::DType> dtype = kernels::ComputeDTypeFromString(*name);
  if (!dtype.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(reader.source(), ": '", key,
                                                   "' = ", Quote(*name),
                                                   " is not supported; use \"float32\", "
                                                   "\"bfloat16\" or \"float16\""));
  }
  return *dtype;
}

// rope_theta sits at the top level in most configs and inside `rope_parameters` in newer
// transformers releases, as does the scaling (`rope_scaling` in older ones).
absl::StatusOr<double> ReadRopeTheta(const ConfigReader& reader, double fallback) {
  if (reader.Find("rope_theta") != nullptr) {
    return reader.OptionalDouble("rope_theta", fallback, 0.0, kMaxRopeTheta);
  }
  if (const json* parameters = reader.Find("rope_parameters"); parameters != nullptr) {
    if (!parameters->is_object())
      return reader.WrongType("rope_parameters", "an object", *parameters);
    auto it = parameters->find("rope_theta");
    if (it != parameters->end() && !it->is_null()) {
      return reader.DoubleValue("rope_parameters.rope_theta", *it, 0.0, kMaxRopeTheta);
    }
  }
  return fallback;
}

// Linear and YaRN scaling. YaRN's ramp is placed over original_max_position_embeddings when
// given and the frequencies are scaled by `factor`, as vLLM does (transformers 4.46 ignores
// original_max_position_embeddings; later releases derive `factor` from it; without it, all
// agree). attention_factor is read as transformers reads it; vLLM's own keys (attn_factor,
// extrapolation_factor) are not read. Other kinds (dynamic NTK, llama3, longrope, DeepSeek's
// mscale variant of YaRN) change the encoding in ways the engine does not implement: refused,
// naming the kind, rather than computed wrong.
absl::StatusOr<RopeScaling> ReadRopeScaling(const ConfigReader& reader,
                                            int64_t max_position_embeddings) {
  RopeScaling scaling;
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    const json* rope = reader.Find(key);
    if (rope == nullptr) continue;
    if (!rope->is_object()) return reader.WrongType(key, "an object", *rope);
    std::string type = "default";
    for (const char* type_key : {"type", "rope_type"}) {  // rope_type wins, as in transformers
      auto it = rope->find(type_key);
      if (it != rope->end() && it->is_string()) type = it->get<std::string>();
    }
    if (type == "default") continue;
    if (type != "linear" && type != "yarn") {
      return absl::InvalidArgumentError(
          absl::StrCat(reader.source(), ": '", key, "' asks for RoPE type ", Quote(type),
                       ", which is not supported; supported: \"default\", \"linear\", \"yarn\""));
    }
    for (const char* unsupported : {"mscale", "mscale_all_dim"}) {
      if (auto it = rope->find(unsupported); it != rope->end() && !it->is_null()) {
        return absl::InvalidArgumentError(
            absl::StrCat(reader.source(), ": '", key, ".", unsupported,
                         "' is set: the mscale variant of YaRN (DeepSeek) is not supported"));
      }
    }
    auto number = [&](const char* name, double fallback, double min_exclusive,
                      double max) -> absl::StatusOr<double> {
      auto it = rope->find(name);
      if (it == rope->end() || it->is_null()) return fallback;
      return reader.DoubleValue(absl::StrCat(key, ".", name), *it, min_exclusive, max);
    };
    auto factor_it = rope->find("factor");
    if (factor_it == rope->end() || factor_it->is_null()) {
      return reader.Missing(absl::StrCat(key, ".factor"),
                            absl::StrCat("RoPE type ", Quote(type), " needs it"));
    }
    MOE_ASSIGN_OR_RETURN(scaling.factor,
                         reader.DoubleValue(absl::StrCat(key, ".factor"), *factor_it, 0.0, 1024.0));
    if (scaling.factor < 1.0) {
      return absl::InvalidArgumentError(
          absl::StrCat(reader.source(), ": '", key, ".factor' = ", factor_it->dump(),
                       " is below 1: scaling only extends the context"));
    }
    if (type == "linear") {
      scaling.type = RopeScalingType::kLinear;
      return scaling;
    }
    scaling.type = RopeScalingType::kYarn;
    scaling.original_max_position_embeddings = max_position_embeddings;
    if (auto it = rope->find("original_max_position_embeddings");
        it != rope->end() && !it->is_null()) {
      MOE_ASSIGN_OR_RETURN(scaling.original_max_position_embeddings,
                           reader.IntValue(absl::StrCat(key, ".original_max_position_embeddings"),
                                           *it, 1, kMaxPositions));
    }
    MOE_ASSIGN_OR_RETURN(scaling.beta_fast, number("beta_fast", 32.0, 0.0, 1e6));
    MOE_ASSIGN_OR_RETURN(scaling.beta_slow, number("beta_slow", 1.0, 0.0, 1e6));
    MOE_ASSIGN_OR_RETURN(
        scaling.attention_factor,
        number("attention_factor", 0.1 * std::log(scaling.factor) + 1.0, 0.0, 100.0));
    return scaling;
  }
  return scaling;
}

// The longest sequence a scaled RoPE opens, as vLLM derives it; unchanged without scaling.
int64_t ScaledContext(int64_t max_position_embeddings, const RopeScaling& scaling) {
  if (scaling.type == RopeScalingType::kNone) return max_position_embeddings;
  const int64_t base = scaling.type == RopeScalingType::kYarn
                           ? scaling.original_max_position_embeddings
                           : max_position_embeddings;
  const double scaled = std::floor(static_cast<double>(base) * scaling.factor);
  return std::max(max_position_embeddings,
                  static_cast<int64_t>(std::min(scaled, static_cast<double>(kMaxPositions))));
}

// The window transformers would apply. Mixtral masks with `sliding_window` whenever it is set;
// Qwen2/3-MoE configs carry a `sliding_window` value but use it only under `use_sliding_window`
// (published checkpoints set that false); OLMoE has no sliding window.
absl::StatusOr<int64_t> ReadSlidingWindow(const ConfigReader& reader, ModelFamily family) {
  if (family == ModelFamily::kOlmoe) return 0;
  if (family == ModelFamily::kQwen2Moe || family == ModelFamily::kQwen3Moe) {
    MOE_ASSIGN_OR_RETURN(const bool used, reader.OptionalBool("use_sliding_window", false));
    if (!used) return 0;
  }
  return reader.OptionalInt("sliding_window", 0, 0, std::numeric_limits<int64_t>::max());
}

// bos_token_id: an integer or null; eos_token_id: an integer, a list of them, or null. Ids are
// only bounded here, not checked against the vocabulary: an id outside it simply never occurs.
absl::Status ReadSpecialTokens(const ConfigReader& reader, ModelConfig* config) {
  MOE_ASSIGN_OR_RETURN(config->bos_token_id,
                       reader.OptionalInt("bos_token_id", -1, 0, kMaxVocabSize));
  const json* eos = reader.Find("eos_token_id");
  if (eos == nullptr) return absl::OkStatus();
  if (eos->is_array()) {
    for (const json& entry : *eos) {
      MOE_ASSIGN_OR_RETURN(const int64_t id,
                           reader.IntValue("eos_token_id[]", entry, 0, kMaxVocabSize));
      config->eos_token_ids.push_back(id);
    }
    return absl::OkStatus();
  }
  MOE_ASSIGN_OR_RETURN(const int64_t id, reader.IntValue("eos_token_id", *eos, 0, kMaxVocabSize));
  config->eos_token_ids.push_back(id);
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseConfigObject(const json& root, const std::string& source) {
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a JSON object at the top level, got ", root.type_name()));
  }
  const ConfigReader reader(root, source);
  MOE_ASSIGN_OR_RETURN(const FamilyInfo* family, SelectFamily(reader));
  const std::string required_by = absl::StrCat("a ", family->display_name, " config must give it");

  ModelConfig config;
  config.family = family->family;
  config.architecture = std::string(family->architecture);
  config.model_type = std::string(family->model_type);

  MOE_ASSIGN_OR_RETURN(std::optional<std::string> activation, reader.OptionalString("hidden_act"));
  // transformers maps "swish" to the same SiLU function.
  if (activation.has_value() && *activation != "silu" && *activation != "swish") {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": hidden_act ", Quote(*activation), " is not supported; ",
                     family->display_name, " experts are implemented with \"silu\" (SwiGLU)"));
  }

  MOE_ASSIGN_OR_RETURN(config.vocab_size,
                       reader.RequiredInt("vocab_size", 1, kMaxVocabSize, required_by));
  MOE_ASSIGN_OR_RETURN(config.hidden_size,
                       reader.RequiredInt("hidden_size", 1, kMaxHiddenSize, required_by));
  MOE_ASSIGN_OR_RETURN(config.num_layers,
                       reader.RequiredInt("num_hidden_layers", 1, kMaxLayers, required_by));

  // Attention geometry.
  MOE_ASSIGN_OR_RETURN(config.num_attention_heads,
                       reader.RequiredInt("num_attention_heads", 1, kMaxHeads, required_by));
  MOE_ASSIGN_OR_RETURN(config.num_key_value_heads,
                       reader.OptionalInt("num_key_value_heads", config.num_attention_heads, 1,
                                          config.num_attention_heads));
  if (config.num_attention_heads % config.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": num_attention_heads = ", config.num_attention_heads,
        " is not a multiple of num_key_value_heads = ", config.num_key_value_heads,
        " (grouped-query attention shares each key/value head among a whole number of heads)"));
  }
  if (reader.Find("head_dim") != nullptr) {
    MOE_ASSIGN_OR_RETURN(config.head_dim, reader.OptionalInt("head_dim", 0, 1, kMaxHeadDim));
  } else {
    if (config.hidden_size % config.num_attention_heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": hidden_size = ", config.hidden_size,
                       " is not divisible by num_attention_heads = ", config.num_attention_heads,
                       " and no 'head_dim' is given to say how wide each head is"));
    }
    config.head_dim = config.hidden_size / config.num_attention_heads;
  }
  // RoPE rotates pairs of channels (rotate-half), so a head must have an even width.
  if (config.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": head_dim = ", config.head_dim,
                                                   " is odd; rotary embeddings need an even one"));
  }

  // Mixture of experts.
  int64_t experts = 0;
  {
    const char* key = family->experts_key;
    // Some transformers releases save the Qwen/OLMoE expert count under Mixtral's name.
    if (reader.Find(key) == nullptr && reader.Find("num_local_experts") != nullptr) {
      key = "num_local_experts";
    }
    MOE_ASSIGN_OR_RETURN(experts, reader.RequiredInt(key, 1, kMaxExperts, required_by));
  }
  config.num_experts = experts;
  MOE_ASSIGN_OR_RETURN(const int64_t top_k,
                       reader.RequiredInt("num_experts_per_tok", 1, kMaxExperts, required_by));
  if (top_k > config.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": num_experts_per_tok = ", top_k, " exceeds the number of experts (",
                     config.num_experts, "); each token picks at most every expert once"));
  }
  config.top_k = static_cast<int>(top_k);
  MOE_ASSIGN_OR_RETURN(config.moe_intermediate_size,
                       reader.RequiredInt(family->expert_ffn_key, 1, kMaxFfnSize, required_by));

  config.layer_is_moe.assign(config.num_layers, true);
  const bool is_qwen =
      family->family == ModelFamily::kQwen2Moe || family->family == ModelFamily::kQwen3Moe;
  if (is_qwen) {
    MOE_ASSIGN_OR_RETURN(const int64_t sparse_step,
                         reader.OptionalInt("decoder_sparse_step", 1, 1, kMaxLayers));
    std::vector<bool> dense(config.num_layers, false);
    if (const json* mlp_only = reader.Find("mlp_only_layers"); mlp_only != nullptr) {
      if (!mlp_only->is_array()) {
        return reader.WrongType("mlp_only_layers", "an array of layer indices", *mlp_only);
      }
      for (const json& entry : *mlp_only) {
        MOE_ASSIGN_OR_RETURN(const int64_t layer,
                             reader.IntValue("mlp_only_layers[]", entry, 0, config.num_layers - 1));
        dense[layer] = true;
      }
    }
    for (int64_t layer = 0; layer < config.num_layers; ++layer) {
      config.layer_is_moe[layer] = !dense[layer] && (layer + 1) % sparse_step == 0;
    }
  }
  const std::vector<int64_t> moe_layers = config.MoELayerIndices();
  if (moe_layers.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": no layer has a mixture-of-experts block (check "
                     "decoder_sparse_step and mlp_only_layers); this server runs MoE "
                     "models only"));
  }
  if (is_qwen) {
    // intermediate_size is the width of the dense MLP layers; it only matters if there are some.
    const bool has_dense_layer = moe_layers.size() < static_cast<size_t>(config.num_layers);
    if (has_dense_layer) {
      MOE_ASSIGN_OR_RETURN(
          config.dense_intermediate_size,
          reader.RequiredInt("intermediate_size", 1, kMaxFfnSize,
                             "it sizes the dense MLP of the layers in mlp_only_layers or "
                             "between decoder_sparse_step layers"));
    } else {
      MOE_ASSIGN_OR_RETURN(config.dense_intermediate_size,
                           reader.OptionalInt("intermediate_size", 0, 1, kMaxFfnSize));
    }
  }
  if (family->family == ModelFamily::kMixtral) {
    // Mixtral always renormalises the selected experts' weights; there is no key for it.
    config.norm_topk_prob = true;
  } else {
    // transformers defaults it to false for OLMoE and both Qwen families (Qwen3-MoE checkpoints
    // set it to true explicitly).
    MOE_ASSIGN_OR_RETURN(config.norm_topk_prob, reader.OptionalBool("norm_topk_prob", false));
  }
  if (family->family == ModelFamily::kQwen2Moe) {
    MOE_ASSIGN_OR_RETURN(config.shared_expert_intermediate_size,
                         reader.RequiredInt("shared_expert_intermediate_size", 1, kMaxFfnSize,
                                            "Qwen2-MoE layers have a shared expert"));
  }

  // Attention details that differ by family.
  switch (family->family) {
    case ModelFamily::kMixtral:
      // Mixtral's projections never carry biases, whatever attention_bias says.
      config.attention_bias = false;
      config.qk_norm = false;
      break;
    case ModelFamily::kQwen2Moe: {
      // Qwen2 always has q/k/v biases; newer configs spell that qkv_bias.
      MOE_ASSIGN_OR_RETURN(config.attention_bias, reader.OptionalBool("qkv_bias", true));
      config.qk_norm = false;
      break;
    }
    case ModelFamily::kOlmoe:
    case ModelFamily::kQwen3Moe: {
      // Here attention_bias would also put a bias on o_proj, which the engine has no slot for.
      MOE_ASSIGN_OR_RETURN(const bool bias, reader.OptionalBool("attention_bias", false));
      if (bias) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": attention_bias = true is not supported for ",
                         family->display_name, " (it adds an o_proj bias as well)"));
      }
      config.attention_bias = false;
      config.qk_norm = true;
      break;
    }
  }
  if (family->family == ModelFamily::kOlmoe && reader.Find("clip_qkv") != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": clip_qkv is set but clamping q/k/v is not implemented; only "
                     "OLMoE configs with \"clip_qkv\": null are supported"));
  }

  MOE_ASSIGN_OR_RETURN(
      config.rms_norm_eps,
      reader.OptionalDouble("rms_norm_eps", family->default_rms_norm_eps, 0.0, 1.0));
  MOE_ASSIGN_OR_RETURN(config.rope_theta, ReadRopeTheta(reader, family->default_rope_theta));
  MOE_ASSIGN_OR_RETURN(
      const int64_t max_position_embeddings,
      reader.OptionalInt("max_position_embeddings", family->default_max_position_embeddings, 1,
                         kMaxPositions));
  MOE_ASSIGN_OR_RETURN(config.rope_scaling, ReadRopeScaling(reader, max_position_embeddings));
  if (config.rope_scaling.type == RopeScalingType::kYarn && !(config.rope_theta > 1.0)) {
    // YaRN's correction range divides by log(rope_theta): 1 gives NaN frequencies.
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": rope_scaling of type yarn needs rope_theta > 1, got ", config.rope_theta));
  }
  config.max_position_embeddings = ScaledContext(max_position_embeddings, config.rope_scaling);
  MOE_ASSIGN_OR_RETURN(config.tie_word_embeddings,
                       reader.OptionalBool("tie_word_embeddings", false));
  MOE_ASSIGN_OR_RETURN(config.torch_dtype, ReadTorchDType(reader));
  MOE_ASSIGN_OR_RETURN(config.sliding_window, ReadSlidingWindow(reader, family->family));
  MOE_RETURN_IF_ERROR(ReadSpecialTokens(reader, &config));
  return config;
}

}  // namespace

std::string_view ModelFamilyName(ModelFamily family) { return InfoOf(family).display_name; }

kernels::RouterConfig ModelConfig::router() const {
  kernels::RouterConfig router;
  router.top_k = top_k;
  router.scoring = kernels::ScoringFunc::kSoftmax;
  router.renormalize = family == ModelFamily::kMixtral || norm_topk_prob;
  router.routed_scaling_factor = 1.0f;
  router.capacity_factor = 0.0;
  return router;
}

std::vector<int64_t> ModelConfig::MoELayerIndices() const {
  std::vector<int64_t> indices;
  for (size_t layer = 0; layer < layer_is_moe.size(); ++layer) {
    if (layer_is_moe[layer]) indices.push_back(static_cast<int64_t>(layer));
  }
  return indices;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source) {
  MOE_ASSIGN_OR_RETURN(const json root,
                       ParseBoundedJson(json_text, source, kMaxConfigDepth,
                                        "real config.json files nest a few levels"));
  // nlohmann::json reports errors by exception; none may cross this boundary.
  try {
    return ParseConfigObject(root, source);
  } catch (const json::exception& error) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": unexpected structure: ", Shorten(error.what())));
  }
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::path(dir) / "config.json";
  const std::string source = path.string();
  absl::StatusOr<std::string> text = ReadBoundedTextFile(path, kMaxConfigBytes, "config.json");
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrCat(
        "no config.json found at '", source,
        "'; point the server at a Hugging Face model folder (config.json + model.safetensors)"));
  }
  if (!text.ok()) return text.status();
  return ParseModelConfig(*text, source);
}

}  // namespace moe::model
