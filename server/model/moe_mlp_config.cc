#include "server/model/moe_mlp_config.h"

#include <cmath>
#include <cstdint>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <utility>
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

// Bounds on every size. Far above a network this server would run as a tensor model, far below
// what would overflow the int64 products the loader forms (blocks * E * 2f * d < 2^63).
constexpr int64_t kMaxInputDim = int64_t{1} << 20;
constexpr int64_t kMaxHiddenSize = 65536;
constexpr int64_t kMaxOutputDim = int64_t{1} << 20;
constexpr int64_t kMaxBlocks = 1024;
constexpr int64_t kMaxExperts = 4096;
constexpr int64_t kMaxFfnDim = int64_t{1} << 20;
constexpr size_t kMaxNameBytes = 64;
constexpr size_t kMaxLabelBytes = 256;
constexpr size_t kMaxDescriptionBytes = 4096;

constexpr const char* kKnownKeys[] = {
    "architecture", "input_dim",      "hidden_size",     "output_dim",
    "num_blocks",   "num_experts",    "top_k",           "expert_ffn_dim",
    "activation",   "router_scoring", "normalize_top_k", "layer_norm_eps",
    "input_name",   "output_name",    "output_labels",   "description",
};

// Parses `text` with the nesting capped; a MoEMLP config is a JSON object at the top level.
absl::StatusOr<json> ParseConfigJson(const std::string& text, const std::string& source) {
  MOE_ASSIGN_OR_RETURN(
      json root, ParseBoundedJson(text, source, kMaxConfigDepth, "a MoEMLP config nests two"));
  if (!root.is_object()) {
    return Invalid(source, absl::StrCat("expected a JSON object at the top level, got ",
                                        DescribeJsonValue(root)));
  }
  return root;
}

// Typed, bounded access to the keys; every error names the file and the key.
class Reader {
 public:
  Reader(const json& root, const std::string& source) : root_(root), source_(source) {}

  const json* Find(const char* key) const {
    auto it = root_.find(key);
    if (it == root_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  absl::Status Error(const char* key, absl::string_view message) const {
    return Invalid(source_, absl::StrCat("'", key, "' ", message));
  }
  absl::Status WrongType(const char* key, absl::string_view expected, const json& value) const {
    return Error(key, absl::StrCat("must be ", expected, ", got ", DescribeJsonValue(value)));
  }

  absl::StatusOr<int64_t> Int(const char* key, int64_t min, int64_t max) const {
    const json* value = Find(key);
    if (value == nullptr) {
      return Invalid(source_, absl::StrCat("required key '", key,
                                           "' is missing (see docs/moe_mlp_format.md)"));
    }
    if (!value->is_number_integer()) return WrongType(key, "an integer", *value);
    if (value->is_number_unsigned()) {
      const uint64_t unsigned_value = value->get<uint64_t>();
      if (unsigned_value > static_cast<uint64_t>(max) ||
          static_cast<int64_t>(unsigned_value) < min) {
        return OutOfRange(key, std::to_string(unsigned_value), min, max);
      }
      return static_cast<int64_t>(unsigned_value);
    }
    const int64_t signed_value = value->get<int64_t>();
    if (signed_value < min || signed_value > max) {
      return OutOfRange(key, std::to_string(signed_value), min, max);
    }
    return signed_value;
  }

  absl::StatusOr<std::optional<std::string>> String(const char* key) const {
    const json* value = Find(key);
    if (value == nullptr) return std::optional<std::string>();
    if (!value->is_string()) return WrongType(key, "a string", *value);
    return std::optional<std::string>(value->get<std::string>());
  }

  absl::StatusOr<bool> Bool(const char* key, bool fallback) const {
    const json* value = Find(key);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) return WrongType(key, "true or false", *value);
    return value->get<bool>();
  }

  // min_exclusive < value <= max.
  absl::StatusOr<double> Double(const char* key, double fallback, double min_exclusive,
                                double max) const {
    const json* value = Find(key);
    if (value == nullptr) return fallback;
    if (!value->is_number()) return WrongType(key, "a number", *value);
    const double number = value->get<double>();
    if (!std::isfinite(number) || number <= min_exclusive || number > max) {
      return Error(key, absl::StrCat("= ", value->dump(), " is out of the supported range (",
                                     min_exclusive, ", ", max, "]"));
    }
    return number;
  }

 private:
  absl::Status OutOfRange(const char* key, const std::string& value, int64_t min,
                          int64_t max) const {
    return Error(
        key, absl::StrCat("= ", value, " is out of the supported range [", min, ", ", max, "]"));
  }

  const json& root_;
  const std::string& source_;
};

// Names that become tensor names in the inference API: short, printable, no spaces.
bool IsPlainName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.' || c == ':' || c == '/';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<MoEMLPConfig> ParseObject(const json& root, const std::string& source) {
  const Reader reader(root, source);
  const std::set<std::string> known(std::begin(kKnownKeys), std::end(kKnownKeys));
  for (const auto& [key, value] : root.items()) {
    if (known.count(key) == 0) {
      return Invalid(source,
                     absl::StrCat("unknown key ", Quote(key), "; a MoEMLP config has ",
                                  absl::StrJoin(kKnownKeys, ", "), " (docs/moe_mlp_format.md)"));
    }
  }
  MOE_ASSIGN_OR_RETURN(const std::optional<std::string> architecture,
                       reader.String("architecture"));
  if (!architecture.has_value() || *architecture != kMoEMLPArchitecture) {
    return Invalid(
        source,
        absl::StrCat("'architecture' must be \"", kMoEMLPArchitecture, "\", got ",
                     architecture.has_value() ? Quote(*architecture) : std::string("nothing")));
  }

  MoEMLPConfig config;
  MOE_ASSIGN_OR_RETURN(config.input_dim, reader.Int("input_dim", 1, kMaxInputDim));
  MOE_ASSIGN_OR_RETURN(config.hidden_size, reader.Int("hidden_size", 1, kMaxHiddenSize));
  MOE_ASSIGN_OR_RETURN(config.output_dim, reader.Int("output_dim", 1, kMaxOutputDim));
  MOE_ASSIGN_OR_RETURN(config.num_blocks, reader.Int("num_blocks", 1, kMaxBlocks));
  MOE_ASSIGN_OR_RETURN(config.num_experts, reader.Int("num_experts", 1, kMaxExperts));
  MOE_ASSIGN_OR_RETURN(const int64_t top_k, reader.Int("top_k", 1, kMaxExperts));
  if (top_k > config.num_experts) {
    return reader.Error("top_k",
                        absl::StrCat("= ", top_k, " exceeds num_experts = ", config.num_experts,
                                     "; a row picks each expert at most once"));
  }
  config.top_k = static_cast<int>(top_k);
  MOE_ASSIGN_OR_RETURN(config.expert_ffn_dim, reader.Int("expert_ffn_dim", 1, kMaxFfnDim));

  MOE_ASSIGN_OR_RETURN(const std::optional<std::string> activation, reader.String("activation"));
  if (!activation.has_value()) {
    return Invalid(source,
                   "required key 'activation' is missing (\"relu\", \"gelu\" or "
                   "\"swiglu\")");
  }
  if (*activation == "relu") {
    config.activation = kernels::Activation::kReLU;
  } else if (*activation == "gelu") {
    config.activation = kernels::Activation::kGELU;
  } else if (*activation == "swiglu") {
    config.activation = kernels::Activation::kSwiGLU;
  } else {
    return reader.Error("activation", absl::StrCat("= ", Quote(*activation),
                                                   " is not supported; use \"relu\", \"gelu\" "
                                                   "(erf form) or \"swiglu\""));
  }

  MOE_ASSIGN_OR_RETURN(const std::optional<std::string> scoring, reader.String("router_scoring"));
  if (!scoring.has_value() || *scoring == "softmax") {
    config.router_scoring = kernels::ScoringFunc::kSoftmax;
  } else if (*scoring == "sigmoid") {
    config.router_scoring = kernels::ScoringFunc::kSigmoid;
  } else {
    return reader.Error("router_scoring", absl::StrCat("= ", Quote(*scoring),
                                                       " is not supported; use \"softmax\" or "
                                                       "\"sigmoid\""));
  }
  MOE_ASSIGN_OR_RETURN(config.normalize_top_k, reader.Bool("normalize_top_k", true));
  MOE_ASSIGN_OR_RETURN(config.layer_norm_eps, reader.Double("layer_norm_eps", 1e-5, 0.0, 1.0));

  for (const auto& [key, field] :
       {std::pair<const char*, std::string*>{"input_name", &config.input_name},
        {"output_name", &config.output_name}}) {
    MOE_ASSIGN_OR_RETURN(const std::optional<std::string> name, reader.String(key));
    if (!name.has_value()) continue;
    if (!IsPlainName(*name)) {
      return reader.Error(key, absl::StrCat("= ", Quote(*name), " must be 1 to ", kMaxNameBytes,
                                            " characters of [A-Za-z0-9_.:/-]"));
    }
    *field = *name;
  }
  if (config.input_name == config.output_name) {
    return reader.Error(
        "output_name", absl::StrCat("= ", Quote(config.output_name), " is the same as input_name"));
  }

  if (const json* labels = reader.Find("output_labels"); labels != nullptr) {
    if (!labels->is_array())
      return reader.WrongType("output_labels", "an array of strings", *labels);
    if (static_cast<int64_t>(labels->size()) != config.output_dim) {
      return reader.Error("output_labels",
                          absl::StrCat("has ", labels->size(), " entries but output_dim = ",
                                       config.output_dim, "; give one label per output value"));
    }
    for (size_t i = 0; i < labels->size(); ++i) {
      const json& label = (*labels)[i];
      if (!label.is_string() || label.get_ref<const json::string_t&>().empty() ||
          label.get_ref<const json::string_t&>().size() > kMaxLabelBytes) {
        return reader.Error("output_labels",
                            absl::StrCat("entry ", i, " must be a non-empty string of at most ",
                                         kMaxLabelBytes, " bytes, got ", DescribeJsonValue(label)));
      }
      config.output_labels.push_back(label.get<std::string>());
    }
  }
  MOE_ASSIGN_OR_RETURN(const std::optional<std::string> description, reader.String("description"));
  if (description.has_value()) {
    if (description->size() > kMaxDescriptionBytes) {
      return reader.Error(
          "description",
          absl::StrCat("is ", description->size(), " bytes; the limit is ", kMaxDescriptionBytes));
    }
    config.description = *description;
  }
  return config;
}

}  // namespace

int64_t MoEMLPConfig::expert_in_rows() const {
  return kernels::IsGated(activation) ? 2 * expert_ffn_dim : expert_ffn_dim;
}

kernels::RouterConfig MoEMLPConfig::router() const {
  kernels::RouterConfig router;
  router.top_k = top_k;
  router.scoring = router_scoring;
  router.renormalize = normalize_top_k;
  router.routed_scaling_factor = 1.0f;
  router.capacity_factor = 0.0;
  return router;
}

const char* MoEMLPActivationName(kernels::Activation activation) {
  return kernels::ActivationName(activation);
}

absl::StatusOr<MoEMLPConfig> ParseMoEMLPConfig(const std::string& json_text,
                                               const std::string& source) {
  MOE_ASSIGN_OR_RETURN(const json root, ParseConfigJson(json_text, source));
  try {
    return ParseObject(root, source);
  } catch (const json::exception& error) {
    return Invalid(source, absl::StrCat("unexpected structure: ", Shorten(error.what())));
  }
}

std::string MoEMLPConfigToJson(const MoEMLPConfig& config) {
  nlohmann::ordered_json out;
  out["architecture"] = kMoEMLPArchitecture;
  out["input_dim"] = config.input_dim;
  out["hidden_size"] = config.hidden_size;
  out["output_dim"] = config.output_dim;
  out["num_blocks"] = config.num_blocks;
  out["num_experts"] = config.num_experts;
  out["top_k"] = config.top_k;
  out["expert_ffn_dim"] = config.expert_ffn_dim;
  out["activation"] = MoEMLPActivationName(config.activation);
  out["router_scoring"] =
      config.router_scoring == kernels::ScoringFunc::kSoftmax ? "softmax" : "sigmoid";
  out["normalize_top_k"] = config.normalize_top_k;
  out["layer_norm_eps"] = config.layer_norm_eps;
  out["input_name"] = config.input_name;
  out["output_name"] = config.output_name;
  if (!config.output_labels.empty()) out["output_labels"] = config.output_labels;
  if (!config.description.empty()) out["description"] = config.description;
  return out.dump(2) + "\n";
}

absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  return ReadBoundedTextFile(path, kMaxConfigBytes, "config file");
}

absl::StatusOr<ConfigIdentity> IdentifyConfig(const std::string& json_text,
                                              const std::string& source) {
  MOE_ASSIGN_OR_RETURN(const json root, ParseConfigJson(json_text, source));
  ConfigIdentity identity;
  if (auto it = root.find("architecture"); it != root.end() && it->is_string()) {
    identity.architecture = it->get<std::string>();
    if (identity.architecture == kMoEMLPArchitecture) {
      identity.kind = ConfigIdentity::Kind::kMoEMLP;
      return identity;
    }
  }
  if (root.contains("architectures") || root.contains("model_type")) {
    identity.kind = ConfigIdentity::Kind::kHuggingFace;
  }
  return identity;
}

}  // namespace moe::model
