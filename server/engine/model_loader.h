// Turns a model directory (or the built-in model) into a ServableModel: reads config.json,
// picks the model kind from it, loads and checks the weights with progress log lines, and
// prepares the MoE layers on a backend.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/engine/decoder/decoder_model.h"
#include "server/engine/moe_backend.h"
#include "server/engine/servable_model.h"

namespace moe::engine {

// The name the built-in model is served under.
inline constexpr char kBuiltinModelName[] = "digits";

// What a model directory gives: always a ServableModel (the description, and tensor inference
// where the model takes tensors); for a decoder language model also the DecoderModel that
// generates, whose ServableModel only describes it (Run is FAILED_PRECONDITION pointing at
// Generate).
struct LoadedModel {
  std::unique_ptr<ServableModel> servable;
  std::unique_ptr<DecoderModel> decoder;  // null unless a decoder language model
};

// `<dir>/config.json` with "architecture": "MoEMLP" gives a MoEMLP network
// (docs/moe_mlp_format.md); a Hugging Face decoder config of a supported family (Mixtral,
// OLMoE, Qwen2-MoE, Qwen3-MoE) gives the decoder, loaded whole and checked against the config,
// and its description (tensor_servable = false). A missing directory or config.json is
// NOT_FOUND; any other config is INVALID_ARGUMENT naming the file and what is supported.
// `backend` must outlive the model.
absl::StatusOr<LoadedModel> LoadModel(const std::string& name, const std::string& dir,
                                      MoEBackend& backend);

// LoadModel's ServableModel alone (a decoder is loaded, described and dropped).
absl::StatusOr<std::unique_ptr<ServableModel>> LoadModelFromDirectory(const std::string& name,
                                                                      const std::string& dir,
                                                                      MoEBackend& backend);

// The built-in MoEMLP model ("digits", a handwritten digit classifier trained by
// tools/train_builtin_model.py), from the bytes embedded in the binary: needs no files.
absl::StatusOr<std::unique_ptr<ServableModel>> LoadBuiltinModel(MoEBackend& backend);

}  // namespace moe::engine
