// The built-in model's files, embedded in the binary at build time from models/builtin/
// (config.json and model.safetensors, written by tools/train_builtin_model.py).
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

namespace moe::model {

// config.json's text.
std::string_view BuiltinModelConfigJson();
// model.safetensors' bytes.
std::span<const std::byte> BuiltinModelWeights();

}  // namespace moe::model
