// A MoEMLP checkpoint's tensors (docs/moe_mlp_format.md) read, checked against the config and
// copied into owned host buffers: dense layers and norms widened to float32, expert weights
// packed for the MoE layer (kernels/moe_layer.h) in the checkpoint's dtype.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "moe/kernels/dtype.h"
#include "moe/kernels/moe_layer.h"
#include "server/model/checkpoint.h"
#include "server/model/load_progress.h"
#include "server/model/moe_mlp_config.h"

namespace moe::model {

// y = x W^T + b.
struct LinearWeights {
  int64_t out_features = 0;
  int64_t in_features = 0;
  std::vector<float> weight;  // [out, in]
  std::vector<float> bias;    // [out]
};

struct LayerNormWeights {
  std::vector<float> weight;  // [d]
  std::vector<float> bias;    // [d]
};

struct MoEMLPBlockWeights {
  LayerNormWeights norm;
  // Sizes, activation and expert dtype; the pointers are filled by view().
  kernels::MoELayerWeightsView shape;
  std::vector<float> router_weight;  // [E, d]
  std::vector<std::byte> w_in;       // [E, in_rows, d] of shape.weight_dtype
  std::vector<std::byte> w_out;      // [E, d, f] of shape.weight_dtype
  std::vector<float> b_in;           // [E, in_rows]
  std::vector<float> b_out;          // [E, d]

  // A view over this block's buffers; valid while the block lives and is not modified (moving
  // the enclosing vectors keeps the buffers where they are).
  kernels::MoELayerWeightsView view() const;
  uint64_t bytes() const;
};

struct MoEMLPWeights {
  LinearWeights input_proj;  // [hidden_size, input_dim]
  std::vector<MoEMLPBlockWeights> blocks;
  LayerNormWeights final_norm;
  LinearWeights output_proj;  // [output_dim, hidden_size]
  kernels::DType expert_dtype = kernels::DType::kF32;

  uint64_t bytes() const;
};

// Every tensor a checkpoint for `config` holds, in the order they are read.
std::vector<std::string> ExpectedMoEMLPTensorNames(const MoEMLPConfig& config);

// Reads and checks every tensor: a missing one is NOT_FOUND naming it (all missing ones, in
// fact); a tensor the format does not define, a wrong shape or a non-float dtype is
// INVALID_ARGUMENT naming the tensor and its file. Expert weights (w_in, w_out) may be F32, BF16
// or F16, one dtype for the whole model; every other tensor is widened to float32.
absl::StatusOr<MoEMLPWeights> LoadMoEMLPWeights(const Checkpoint& checkpoint,
                                                const MoEMLPConfig& config,
                                                const LoadProgressCallback& progress = {});

}  // namespace moe::model
