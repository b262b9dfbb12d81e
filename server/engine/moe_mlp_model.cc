#include "server/engine/moe_mlp_model.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "moe/common/status_macros.h"
#include "server/engine/routing_entropy.h"

namespace moe::engine {
namespace {

// y[rows, out] = x[rows, in] W^T + b, W [out, in] row-major.
void Linear(const model::LinearWeights& linear, const float* x, int64_t rows, float* y) {
  const int64_t out = linear.out_features;
  const int64_t in = linear.in_features;
  for (int64_t r = 0; r < rows; ++r) std::copy_n(linear.bias.data(), out, y + r * out);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(rows),
              static_cast<blasint>(out), static_cast<blasint>(in), 1.0f, x,
              static_cast<blasint>(in), linear.weight.data(), static_cast<blasint>(in), 1.0f, y,
              static_cast<blasint>(out));
}

// y = (x - mean) / sqrt(var + eps) * weight + bias per row (biased variance, as PyTorch), with
// double accumulators: the rows are short and this keeps the statistics exact to float.
void LayerNorm(const model::LayerNormWeights& norm, double eps, const float* x, int64_t rows,
               int64_t d, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * d;
    double sum = 0.0;
    for (int64_t c = 0; c < d; ++c) sum += row[c];
    const double mean = sum / static_cast<double>(d);
    double squares = 0.0;
    for (int64_t c = 0; c < d; ++c) {
      const double centred = row[c] - mean;
      squares += centred * centred;
    }
    const double inv_std = 1.0 / std::sqrt(squares / static_cast<double>(d) + eps);
    float* out = y + r * d;
    for (int64_t c = 0; c < d; ++c) {
      out[c] = static_cast<float>((row[c] - mean) * inv_std) * norm.weight[c] + norm.bias[c];
    }
  }
}

template <typename T>
void Grow(std::vector<T>& buffer, int64_t elements) {
  if (buffer.size() < static_cast<size_t>(elements)) buffer.resize(static_cast<size_t>(elements));
}

}  // namespace

absl::StatusOr<std::unique_ptr<MoEMLPModel>> MoEMLPModel::Create(const std::string& name,
                                                                 model::MoEMLPConfig config,
                                                                 model::MoEMLPWeights weights,
                                                                 MoEBackend& backend) {
  if (static_cast<int64_t>(weights.blocks.size()) != config.num_blocks ||
      weights.input_proj.in_features != config.input_dim ||
      weights.input_proj.out_features != config.hidden_size ||
      weights.output_proj.in_features != config.hidden_size ||
      weights.output_proj.out_features != config.output_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", name, "': the weights do not match the config (", weights.blocks.size(),
        " blocks for num_blocks = ", config.num_blocks, "); load them with LoadMoEMLPWeights"));
  }
  auto model = absl::WrapUnique(new MoEMLPModel(std::move(config), std::move(weights)));
  const model::MoEMLPConfig& c = model->config_;
  const kernels::RouterConfig router = c.router();
  for (size_t block = 0; block < model->weights_.blocks.size(); ++block) {
    absl::StatusOr<std::unique_ptr<PreparedMoELayer>> layer =
        backend.PrepareLayer(model->weights_.blocks[block].view(), router);
    if (!layer.ok()) {
      return absl::Status(layer.status().code(),
                          absl::StrCat("model '", name, "': block ", block,
                                       "'s MoE layer: ", layer.status().message()));
    }
    model->layers_.push_back(std::move(layer).value());
  }

  ModelDescription& d = model->description_;
  d.name = name;
  d.architecture = model::kMoEMLPArchitecture;
  d.family = "moe_mlp";
  d.tensor_servable = true;
  d.input_name = c.input_name;
  d.input_width = c.input_dim;
  d.output_name = c.output_name;
  d.output_width = c.output_dim;
  d.output_labels = c.output_labels;
  d.hidden_size = c.hidden_size;
  d.num_moe_layers = c.num_blocks;
  d.num_layers = c.num_blocks;
  d.num_experts = c.num_experts;
  d.top_k = c.top_k;
  d.expert_ffn_size = c.expert_ffn_dim;
  d.activation = model::MoEMLPActivationName(c.activation);
  d.weight_dtype = model->weights_.expert_dtype;
  d.backend = std::string(BackendKindName(backend.kind()));
  d.device = backend.device_description();
  d.weight_bytes = model->weights_.bytes();
  return model;
}

absl::Status MoEMLPModel::Reserve(int64_t num_rows) {
  if (num_rows <= reserved_rows_) return absl::OkStatus();
  const int64_t d = config_.hidden_size;
  const int64_t k = config_.top_k;
  try {
    Grow(hidden_, num_rows * d);
    Grow(normed_, num_rows * d);
    Grow(moe_output_, num_rows * d);
    Grow(topk_ids_, num_rows * k);
    Grow(topk_weights_, num_rows * k);
    Grow(router_logits_, num_rows * config_.num_experts);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "model '", description_.name, "': not enough host memory for a batch of ", num_rows,
        " rows (", 3 * num_rows * d * sizeof(float), " bytes of workspace)"));
  }
  reserved_rows_ = num_rows;
  return absl::OkStatus();
}

absl::Status MoEMLPModel::Run(const float* input, int64_t num_rows,
                              const ModelRunOutputs& outputs) {
  if (num_rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_rows = ", num_rows, " is negative"));
  }
  const int64_t d = config_.hidden_size;
  const int64_t k = config_.top_k;
  const int64_t num_experts = config_.num_experts;
  const int64_t num_layers = config_.num_blocks;
  if (num_rows == 0) {
    if (outputs.expert_token_counts != nullptr) {
      std::fill_n(outputs.expert_token_counts, num_layers * num_experts, 0);
    }
    if (outputs.layer_seconds != nullptr) std::fill_n(outputs.layer_seconds, num_layers, 0.0);
    if (outputs.gate_entropy_sum != nullptr) {
      std::fill_n(outputs.gate_entropy_sum, num_layers, 0.0);
    }
    if (outputs.expert_seconds != nullptr) {
      std::fill_n(outputs.expert_seconds, num_layers * num_experts, 0.0);
    }
    return absl::OkStatus();
  }
  if (input == nullptr || outputs.output == nullptr) {
    return absl::InvalidArgumentError("MoEMLP run: input and output must not be null");
  }
  // BLAS takes 32-bit sizes; no batch comes near this, but an absurd one must not wrap.
  const int64_t widest = std::max({config_.input_dim, d, config_.output_dim});
  if (num_rows > std::numeric_limits<int32_t>::max() / widest) {
    return absl::InvalidArgumentError(absl::StrCat("MoEMLP run: ", num_rows, " rows of up to ",
                                                   widest, " values is too large for one batch"));
  }
  MOE_RETURN_IF_ERROR(Reserve(num_rows));

  Linear(weights_.input_proj, input, num_rows, hidden_.data());
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    const model::MoEMLPBlockWeights& block = weights_.blocks[layer];
    LayerNorm(block.norm, config_.layer_norm_eps, hidden_.data(), num_rows, d, normed_.data());

    kernels::MoELayerOutputs layer_outputs;
    layer_outputs.output = moe_output_.data();
    const bool want_routing = outputs.topk_ids != nullptr || outputs.topk_weights != nullptr;
    if (want_routing) {
      layer_outputs.topk_ids = topk_ids_.data();
      layer_outputs.topk_weights = topk_weights_.data();
    }
    if (outputs.expert_token_counts != nullptr) {
      layer_outputs.expert_token_counts = outputs.expert_token_counts + layer * num_experts;
    }
    if (outputs.gate_entropy_sum != nullptr) layer_outputs.router_logits = router_logits_.data();
    if (outputs.expert_seconds != nullptr) {
      layer_outputs.expert_seconds = outputs.expert_seconds + layer * num_experts;
    }
    const auto layer_start = std::chrono::steady_clock::now();
    absl::Status status = layers_[layer]->Forward(normed_.data(), num_rows, layer_outputs);
    if (outputs.layer_seconds != nullptr) {
      outputs.layer_seconds[layer] =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - layer_start).count();
    }
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat("model '", description_.name, "': block ",
                                                      layer, ": ", status.message()));
    }
    if (outputs.gate_entropy_sum != nullptr) {
      outputs.gate_entropy_sum[layer] = GateEntropySumNats(router_logits_.data(), num_rows,
                                                           num_experts, config_.router().scoring);
    }
    // [rows, k] of this layer into [rows, layers, k].
    for (int64_t row = 0; row < num_rows && want_routing; ++row) {
      const int64_t dst = (row * num_layers + layer) * k;
      if (outputs.topk_ids != nullptr) {
        std::copy_n(topk_ids_.data() + row * k, k, outputs.topk_ids + dst);
      }
      if (outputs.topk_weights != nullptr) {
        std::copy_n(topk_weights_.data() + row * k, k, outputs.topk_weights + dst);
      }
    }
    float* hidden = hidden_.data();
    const float* moe = moe_output_.data();
    for (int64_t i = 0; i < num_rows * d; ++i) hidden[i] += moe[i];
  }
  LayerNorm(weights_.final_norm, config_.layer_norm_eps, hidden_.data(), num_rows, d,
            normed_.data());
  Linear(weights_.output_proj, normed_.data(), num_rows, outputs.output);
  return absl::OkStatus();
}

}  // namespace moe::engine
