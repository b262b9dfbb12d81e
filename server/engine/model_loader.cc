#include "server/engine/model_loader.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "moe/common/status_macros.h"
#include "server/common/logging.h"
#include "server/engine/moe_mlp_model.h"
#include "server/model/builtin_model.h"
#include "server/model/checkpoint.h"
#include "server/model/error_text.h"
#include "server/model/load_progress.h"
#include "server/model/model_config.h"
#include "server/model/moe_mlp_config.h"
#include "server/model/moe_mlp_weights.h"
#include "server/model/moe_weights.h"
#include "server/model/safetensors.h"

namespace moe::engine {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr char kMoEMLPHint[] =
    "\"architecture\": \"MoEMLP\" (a MoEMLP network, docs/moe_mlp_format.md)";

// Logs loading progress at most once a second, then one line when the model is ready.
class LoadLogger {
 public:
  LoadLogger(std::string name, std::string source)
      : name_(std::move(name)),
        source_(std::move(source)),
        start_(Clock::now()),
        last_log_(start_) {}

  model::LoadProgressCallback Callback() {
    return [this](const model::LoadProgress& progress) { OnProgress(progress); };
  }

  void Loaded(const ModelDescription& description) const {
    common::LogInfo("model_loaded", {{"model", name_},
                                     {"architecture", description.architecture},
                                     {"source", source_},
                                     {"tensors", absl::StrCat(last_.tensors_done)},
                                     {"bytes", absl::StrCat(last_.bytes_done)},
                                     {"seconds", absl::StrFormat("%.3f", Seconds())},
                                     {"backend", description.backend},
                                     {"servable", description.tensor_servable ? "true" : "false"}});
  }

 private:
  double Seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

  void OnProgress(const model::LoadProgress& progress) {
    last_ = progress;
    const Clock::time_point now = Clock::now();
    if (now - last_log_ < std::chrono::seconds(1)) return;
    last_log_ = now;
    const double seconds = Seconds();
    common::LogInfo(
        "model_loading",
        {{"model", name_},
         {"tensors", absl::StrCat(progress.tensors_done, "/", progress.tensors_total)},
         {"bytes", absl::StrCat(progress.bytes_done, "/", progress.bytes_total)},
         {"mb_per_s",
          absl::StrFormat("%.1f", seconds > 0 ? progress.bytes_done / seconds / 1e6 : 0.0)}});
  }

  std::string name_;
  std::string source_;
  Clock::time_point start_;
  Clock::time_point last_log_;
  model::LoadProgress last_;
};

// A decoder language model as the tensor API sees it: described, and refusing Run (language
// models generate; the DecoderModel beside it does that).
class DecoderLanguageModel final : public ServableModel {
 public:
  explicit DecoderLanguageModel(ModelDescription description)
      : description_(std::move(description)) {}

  const ModelDescription& description() const override { return description_; }

  absl::Status Run(const float* /*input*/, int64_t /*num_rows*/,
                   const ModelRunOutputs& /*outputs*/) override {
    return absl::FailedPreconditionError(description_.not_servable_reason);
  }

 private:
  ModelDescription description_;
};

absl::StatusOr<std::unique_ptr<ServableModel>> LoadMoEMLP(const std::string& name,
                                                          const model::MoEMLPConfig& config,
                                                          const model::Checkpoint& checkpoint,
                                                          MoEBackend& backend, LoadLogger& logger) {
  MOE_ASSIGN_OR_RETURN(model::MoEMLPWeights weights,
                       model::LoadMoEMLPWeights(checkpoint, config, logger.Callback()));
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<MoEMLPModel> model,
                       MoEMLPModel::Create(name, config, std::move(weights), backend));
  logger.Loaded(model->description());
  return model;
}

// The Hugging Face config parser's error, with the MoEMLP format added where it lists what is
// supported.
absl::Status WithMoEMLPHint(const absl::Status& status) {
  const bool lists_supported = absl::StrContains(status.message(), "unsupported architecture") ||
                               absl::StrContains(status.message(), "unsupported model_type");
  if (status.code() != absl::StatusCode::kInvalidArgument || !lists_supported) return status;
  return absl::InvalidArgumentError(absl::StrCat(status.message(), "; or ", kMoEMLPHint));
}

// The decoder families the Hugging Face parser supports, as its error for a config naming none
// of them lists them (one list, kept by the parser).
std::string HuggingFaceFamilies(const std::string& config_text, const std::string& source) {
  const absl::StatusOr<model::ModelConfig> parsed = model::ParseModelConfig(config_text, source);
  if (parsed.ok()) return "";
  const std::string message(parsed.status().message());
  const std::string marker = "supported architectures: ";
  const size_t at = message.find(marker);
  return at == std::string::npos ? "" : message.substr(at + marker.size());
}

}  // namespace

namespace {

// A model directory's config.json, read and identified.
struct ModelDirectory {
  std::string config_path;
  std::string config_text;
  model::ConfigIdentity identity;
};

absl::StatusOr<ModelDirectory> ReadModelDirectory(const std::string& dir) {
  std::error_code error;
  const fs::file_status status = fs::status(dir, error);
  if (status.type() == fs::file_type::not_found) {
    return absl::NotFoundError(absl::StrCat("model directory '", dir, "' does not exist"));
  }
  if (!fs::is_directory(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model path '", dir,
                     "' is not a directory; give the folder holding config.json and the "
                     "weights"));
  }
  ModelDirectory directory;
  directory.config_path = (fs::path(dir) / "config.json").string();
  absl::StatusOr<std::string> text = model::ReadConfigFile(directory.config_path);
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrCat(
        "model directory '", dir, "' has no config.json; a model directory holds config.json (",
        kMoEMLPHint, ", or a Hugging Face MoE decoder's) and the safetensors weights"));
  }
  if (!text.ok()) return text.status();
  directory.config_text = std::move(*text);
  MOE_ASSIGN_OR_RETURN(directory.identity,
                       model::IdentifyConfig(directory.config_text, directory.config_path));
  return directory;
}

// Neither kind: say what is supported.
absl::Status UnsupportedConfig(const ModelDirectory& directory) {
  const std::string families = HuggingFaceFamilies(directory.config_text, directory.config_path);
  const std::string& architecture = directory.identity.architecture;
  return absl::InvalidArgumentError(absl::StrCat(
      directory.config_path, ": ",
      architecture.empty()
          ? std::string("names no architecture (no \"architecture\" nor \"architectures\")")
          : absl::StrCat("architecture ", model::Quote(architecture), " is not supported"),
      ". Supported: ", kMoEMLPHint, ", or a Hugging Face config whose \"architectures\" lists ",
      families.empty() ? std::string("a supported MoE decoder")
                       : absl::StrCat("one of ", families)));
}

absl::StatusOr<std::unique_ptr<ServableModel>> LoadMoEMLPDirectory(const std::string& name,
                                                                   const std::string& dir,
                                                                   const ModelDirectory& directory,
                                                                   MoEBackend& backend,
                                                                   LoadLogger& logger) {
  MOE_ASSIGN_OR_RETURN(const model::MoEMLPConfig config,
                       model::ParseMoEMLPConfig(directory.config_text, directory.config_path));
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<model::Checkpoint> checkpoint, model::Checkpoint::Open(dir));
  return LoadMoEMLP(name, config, *checkpoint, backend, logger);
}

// A decoder loaded whole, and the description-only ServableModel that stands for it.
absl::StatusOr<LoadedModel> LoadGeneratingDecoder(const std::string& name, const std::string& dir,
                                                  const ModelDirectory& directory,
                                                  MoEBackend& backend, LoadLogger& logger) {
  // The parser's errors first, with the MoEMLP hint where they list what is supported.
  absl::StatusOr<model::ModelConfig> parsed =
      model::ParseModelConfig(directory.config_text, directory.config_path);
  if (!parsed.ok()) return WithMoEMLPHint(parsed.status());
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<DecoderModel> decoder, DecoderModel::Load(dir, &backend));
  const DecoderSpec& spec = decoder->spec();
  ModelDescription d;
  d.name = name;
  d.architecture = spec.architecture;
  d.family = spec.family;
  d.tensor_servable = false;
  d.not_servable_reason = absl::StrCat(
      "model '", name, "' is a decoder language model (", spec.architecture,
      "): it generates through moe.v1.MoEService/Generate; tensor inference (ModelInfer) is not "
      "offered for language models");
  d.hidden_size = spec.hidden_size;
  d.num_moe_layers = spec.num_moe_layers;
  d.num_layers = spec.num_layers;
  d.num_experts = spec.num_experts;
  d.top_k = spec.top_k;
  d.expert_ffn_size = spec.expert_ffn_size;
  d.activation = kernels::ActivationName(kernels::Activation::kSwiGLU);
  d.weight_dtype = spec.weight_dtype;
  d.backend = spec.backend;
  d.device = spec.device;
  d.weight_bytes = spec.weight_bytes;
  LoadedModel loaded;
  loaded.servable = std::make_unique<DecoderLanguageModel>(std::move(d));
  loaded.decoder = std::move(decoder);
  logger.Loaded(loaded.servable->description());
  return loaded;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServableModel>> LoadModelFromDirectory(const std::string& name,
                                                                      const std::string& dir,
                                                                      MoEBackend& backend) {
  MOE_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(name, dir, backend));
  return std::move(loaded.servable);
}

absl::StatusOr<LoadedModel> LoadModel(const std::string& name, const std::string& dir,
                                      MoEBackend& backend) {
  MOE_ASSIGN_OR_RETURN(const ModelDirectory directory, ReadModelDirectory(dir));
  LoadLogger logger(name, dir);
  switch (directory.identity.kind) {
    case model::ConfigIdentity::Kind::kMoEMLP: {
      LoadedModel loaded;
      MOE_ASSIGN_OR_RETURN(loaded.servable,
                           LoadMoEMLPDirectory(name, dir, directory, backend, logger));
      return loaded;
    }
    case model::ConfigIdentity::Kind::kHuggingFace:
      return LoadGeneratingDecoder(name, dir, directory, backend, logger);
    case model::ConfigIdentity::Kind::kUnknown:
      break;
  }
  return UnsupportedConfig(directory);
}

absl::StatusOr<std::unique_ptr<ServableModel>> LoadBuiltinModel(MoEBackend& backend) {
  const std::string source = "built-in model (models/builtin, embedded at build time)";
  LoadLogger logger(kBuiltinModelName, source);
  MOE_ASSIGN_OR_RETURN(const model::MoEMLPConfig config,
                       model::ParseMoEMLPConfig(std::string(model::BuiltinModelConfigJson()),
                                                "built-in models/builtin/config.json"));
  MOE_ASSIGN_OR_RETURN(
      std::unique_ptr<model::SafetensorsFile> file,
      model::SafetensorsFile::FromBytes(model::BuiltinModelWeights(),
                                        "built-in models/builtin/model.safetensors"));
  const std::unique_ptr<model::Checkpoint> checkpoint =
      model::Checkpoint::FromFile(std::move(file));
  return LoadMoEMLP(kBuiltinModelName, config, *checkpoint, backend, logger);
}

}  // namespace moe::engine
