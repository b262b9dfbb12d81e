// Maps a checkpoint's per-family tensor names onto the internal per-layer MoE layout
// (kernels/moe_layer.h) and packs the expert weights expert-major for grouped GEMMs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "moe/kernels/moe_layer.h"
#include "server/model/checkpoint.h"
#include "server/model/load_progress.h"
#include "server/model/model_config.h"
#include "server/model/safetensors.h"

namespace moe::model {

// One MoE layer's weights in host memory, owned, packed, in the checkpoint's dtype (router and
// shared-expert gate widened to float32).
class MoELayerWeights {
 public:
  int64_t layer_index() const { return layer_index_; }
  // A view over this object's buffers; valid while it lives.
  kernels::MoELayerWeightsView view() const;
  uint64_t bytes() const;

 private:
  friend absl::StatusOr<std::vector<MoELayerWeights>> LoadMoELayers(const Checkpoint&,
                                                                    const ModelConfig&,
                                                                    const LoadProgressCallback&);
  // Reads, checks and packs layer `layer`'s MoE block, counting each tensor in `progress`.
  static absl::StatusOr<MoELayerWeights> Load(const Checkpoint& checkpoint,
                                              const ModelConfig& config, int64_t layer,
                                              LoadProgressTracker& progress);

  int64_t layer_index_ = 0;
  kernels::MoELayerWeightsView shape_;  // sizes, activation and dtype; pointers unset
  std::vector<float> router_weight_;
  std::vector<std::byte> w_in_;
  std::vector<std::byte> w_out_;
  std::vector<std::byte> shared_w_in_;
  std::vector<std::byte> shared_w_out_;
  std::vector<float> shared_gate_;
};

// The tensor names a family uses for layer `layer`'s MoE block (router, each expert's
// gate/up/down, shared expert), in the order they are read; used for loading and for errors
// that list what was expected.
std::vector<std::string> ExpectedMoETensorNames(const ModelConfig& config, int64_t layer);

// Loads every MoE layer. Every tensor's shape and dtype is checked against the config; a
// missing tensor is NOT_FOUND listing the names that layer expects; expert weights must share
// one dtype among F32, BF16, F16. `progress`, when set, is told after each tensor is packed.
absl::StatusOr<std::vector<MoELayerWeights>> LoadMoELayers(const Checkpoint& checkpoint,
                                                           const ModelConfig& config,
                                                           const LoadProgressCallback& progress);
inline absl::StatusOr<std::vector<MoELayerWeights>> LoadMoELayers(const Checkpoint& checkpoint,
                                                                  const ModelConfig& config) {
  return LoadMoELayers(checkpoint, config, LoadProgressCallback());
}

}  // namespace moe::model
