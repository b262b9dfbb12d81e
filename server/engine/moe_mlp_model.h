// The MoEMLP network as a servable model: input projection, blocks of x + MoE(LayerNorm(x)),
// final LayerNorm, output projection. The dense parts run on the host (OpenBLAS); each block's
// MoE layer runs on the backend it was prepared on.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/engine/moe_backend.h"
#include "server/engine/servable_model.h"
#include "server/model/moe_mlp_config.h"
#include "server/model/moe_mlp_weights.h"

namespace moe::engine {

class MoEMLPModel final : public ServableModel {
 public:
  // Takes the weights, prepares every block's MoE layer on `backend` and fills the description.
  // `backend` must outlive the model.
  static absl::StatusOr<std::unique_ptr<MoEMLPModel>> Create(const std::string& name,
                                                             model::MoEMLPConfig config,
                                                             model::MoEMLPWeights weights,
                                                             MoEBackend& backend);

  MoEMLPModel(const MoEMLPModel&) = delete;
  MoEMLPModel& operator=(const MoEMLPModel&) = delete;

  const ModelDescription& description() const override { return description_; }

  // Workspace buffers are kept between calls and grow to the largest batch; RESOURCE_EXHAUSTED
  // when they cannot. INVALID_ARGUMENT for a negative row count or a missing buffer.
  absl::Status Run(const float* input, int64_t num_rows, const ModelRunOutputs& outputs) override;

  const model::MoEMLPConfig& config() const { return config_; }
  const model::MoEMLPWeights& weights() const { return weights_; }

 private:
  MoEMLPModel(model::MoEMLPConfig config, model::MoEMLPWeights weights)
      : config_(std::move(config)), weights_(std::move(weights)) {}

  // Grows the workspace to `num_rows` rows.
  absl::Status Reserve(int64_t num_rows);

  model::MoEMLPConfig config_;
  model::MoEMLPWeights weights_;  // the prepared layers may read these in place
  std::vector<std::unique_ptr<PreparedMoELayer>> layers_;
  ModelDescription description_;

  // Workspace, [rows, ...] each.
  int64_t reserved_rows_ = 0;
  std::vector<float> hidden_;         // [rows, d] the residual stream
  std::vector<float> normed_;         // [rows, d] LayerNorm output, the MoE layer's input
  std::vector<float> moe_output_;     // [rows, d]
  std::vector<int32_t> topk_ids_;     // [rows, k] one layer's selection
  std::vector<float> topk_weights_;   // [rows, k]
  std::vector<int64_t> counts_;       // [E] one layer's per-expert counts
  std::vector<float> router_logits_;  // [rows, E] one layer's router logits, for the entropy
};

}  // namespace moe::engine
