// The engine run directly, in the test process, on the CPU backend: what the server's answers
// are compared with.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/moe_backend.h"
#include "server/engine/servable_model.h"

namespace moe::integration {

struct InProcessResult {
  std::vector<float> output;        // [rows, output_width]
  std::vector<int32_t> topk_ids;    // [rows, moe_layers, top_k]
  std::vector<float> topk_weights;  // [rows, moe_layers, top_k]
};

class InProcessModel {
 public:
  // The built-in model, as the server loads it without --model.
  static absl::StatusOr<std::unique_ptr<InProcessModel>> Builtin();
  // A model directory, as `--model name=dir` loads it.
  static absl::StatusOr<std::unique_ptr<InProcessModel>> FromDirectory(const std::string& name,
                                                                       const std::string& dir);

  const engine::ModelDescription& description() const { return model_->description(); }

  // Runs `rows` rows of `values` as one batch (outputs poisoned with NaN first).
  absl::StatusOr<InProcessResult> Run(const std::vector<float>& values, int64_t rows);

 private:
  InProcessModel() = default;

  std::unique_ptr<engine::MoEBackend> backend_;
  std::unique_ptr<engine::ServableModel> model_;  // declared after backend_: destroyed first
};

}  // namespace moe::integration
