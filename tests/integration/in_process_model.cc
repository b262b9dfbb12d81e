#include "tests/integration/in_process_model.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "server/engine/model_loader.h"

namespace moe::integration {

absl::StatusOr<std::unique_ptr<InProcessModel>> InProcessModel::Builtin() {
  std::unique_ptr<InProcessModel> model(new InProcessModel());
  model->backend_ = engine::CreateCpuBackend();
  auto loaded = engine::LoadBuiltinModel(*model->backend_);
  if (!loaded.ok()) return loaded.status();
  model->model_ = *std::move(loaded);
  return model;
}

absl::StatusOr<std::unique_ptr<InProcessModel>> InProcessModel::FromDirectory(
    const std::string& name, const std::string& dir) {
  std::unique_ptr<InProcessModel> model(new InProcessModel());
  model->backend_ = engine::CreateCpuBackend();
  auto loaded = engine::LoadModelFromDirectory(name, dir, *model->backend_);
  if (!loaded.ok()) return loaded.status();
  model->model_ = *std::move(loaded);
  return model;
}

absl::StatusOr<InProcessResult> InProcessModel::Run(const std::vector<float>& values,
                                                    int64_t rows) {
  const engine::ModelDescription& d = description();
  if (static_cast<int64_t>(values.size()) != rows * d.input_width) {
    return absl::InvalidArgumentError(
        absl::StrCat(values.size(), " values for ", rows, " rows of ", d.input_width));
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const int64_t routing = rows * d.num_moe_layers * d.top_k;
  InProcessResult result;
  result.output.assign(rows * d.output_width, nan);
  result.topk_ids.assign(routing, -1);
  result.topk_weights.assign(routing, nan);
  engine::ModelRunOutputs outputs;
  outputs.output = result.output.data();
  outputs.topk_ids = result.topk_ids.data();
  outputs.topk_weights = result.topk_weights.data();
  if (absl::Status status = model_->Run(values.data(), rows, outputs); !status.ok()) {
    return status;
  }
  return result;
}

}  // namespace moe::integration
