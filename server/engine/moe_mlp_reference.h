// The plain reference of the MoEMLP forward pass: one row at a time, every value in double
// precision, its own routing loops, no BLAS, no backend. Slow by design; tests compare the
// engine (MoEMLPModel) against it.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "server/engine/servable_model.h"
#include "server/model/moe_mlp_config.h"
#include "server/model/moe_mlp_weights.h"

namespace moe::engine {

// Writes what MoEMLPModel::Run writes (output, top-k ids and weights per block, per-expert
// counts), from the same weights. When `routing_margins` is set it receives [rows, num_blocks]:
// per row and block the smallest gap between consecutive scores among the k+1 best experts, so
// a test can tell a genuine routing difference from a near tie that float32 may break the other
// way.
absl::Status MoEMLPReferenceForward(const model::MoEMLPConfig& config,
                                    const model::MoEMLPWeights& weights, const float* input,
                                    int64_t num_rows, const ModelRunOutputs& outputs,
                                    std::vector<double>* routing_margins = nullptr);

}  // namespace moe::engine
