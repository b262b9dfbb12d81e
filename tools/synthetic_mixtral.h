// A Mixtral-shaped decoder checkpoint (Hugging Face layout: config.json + model.safetensors)
// with random weights of any size, for the generation benchmarks: the server loads it like a
// real Mixtral checkpoint. Weights are drawn from N(0, 1/fan_in), norms near 1.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "moe/kernels/dtype.h"

namespace moe::tools {

struct SyntheticMixtralShape {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 1024;
  int64_t intermediate_size = 2816;  // per expert
  int64_t num_layers = 4;
  int64_t num_heads = 16;
  int64_t num_kv_heads = 4;
  int64_t num_experts = 8;
  int64_t top_k = 2;
  int64_t max_position_embeddings = 4096;
  kernels::DType dtype = kernels::DType::kBF16;  // every weight but the norms
  uint64_t seed = 1;
};

// The config.json text for `shape`.
std::string SyntheticMixtralConfigJson(const SyntheticMixtralShape& shape);

// Writes `<dir>/model.safetensors` (through a temporary file) for `shape`.
absl::Status WriteSyntheticMixtralWeights(const std::string& path,
                                          const SyntheticMixtralShape& shape);

}  // namespace moe::tools
