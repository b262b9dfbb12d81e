// What the scheduler needs from a model: its description and a forward pass over a batch of
// rows. A "row" is one independent input (one sample of a tensor model); requests of different
// sizes are concatenated into one batch and the rows of the result are handed back in order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "moe/kernels/dtype.h"

namespace moe::engine {

// What a client sees of a model (KServe metadata, moe.v1 model info).
struct ModelDescription {
  std::string name;          // the name it is served under
  std::string architecture;  // "MoEMLP", "MixtralForCausalLM", ...
  std::string family;        // "moe_mlp", "mixtral", ...
  // A model the tensor API (ModelInfer) can run. Decoder LMs generate through moe.v1.Generate
  // instead; ModelInfer refuses them with `not_servable_reason`.
  bool tensor_servable = false;
  std::string not_servable_reason;

  std::string input_name;                  // e.g. "input"
  int64_t input_width = 0;                 // features per row
  std::string output_name;                 // e.g. "logits"
  int64_t output_width = 0;                // values per row
  std::vector<std::string> output_labels;  // optional class names, [output_width] or empty

  int64_t hidden_size = 0;
  int64_t num_moe_layers = 0;  // layers with a routed MoE block
  int64_t num_layers = 0;      // all blocks / decoder layers
  int64_t num_experts = 0;
  int top_k = 0;
  int64_t expert_ffn_size = 0;
  std::string activation;  // "swiglu", "relu", ...
  kernels::DType weight_dtype = kernels::DType::kF32;
  std::string backend;  // "cpu" / "cuda"
  std::string device;   // the backend's device description
  uint64_t weight_bytes = 0;
};

// Where one forward pass writes; every pointer is a host pointer sized for `num_rows`.
struct ModelRunOutputs {
  float* output = nullptr;        // [rows, output_width], required
  int32_t* topk_ids = nullptr;    // [rows, num_moe_layers, top_k] or null
  float* topk_weights = nullptr;  // [rows, num_moe_layers, top_k] or null
  // [num_moe_layers, num_experts] tokens each expert computed in this pass, or null
  int64_t* expert_token_counts = nullptr;

  // What the metrics read, each optional. Filling them costs a clock read per layer and, for
  // the entropy, one exp per router logit.
  double* layer_seconds = nullptr;     // [num_moe_layers] wall time of each MoE block
  double* gate_entropy_sum = nullptr;  // [num_moe_layers] sum over rows of the gate entropy (nats)
  // [num_moe_layers, num_experts] each expert's measured compute time. Non-null makes this a
  // profiling pass: experts run one at a time (see kernels::MoELayerOutputs::expert_seconds),
  // which is slower, so callers ask for it on a sample of passes.
  double* expert_seconds = nullptr;
};

class ServableModel {
 public:
  virtual ~ServableModel() = default;

  virtual const ModelDescription& description() const = 0;

  // Runs `num_rows` rows of `input` ([rows, input_width] float32, host). Thread-compatible:
  // the scheduler calls one Run at a time per model. Errors are INTERNAL-class engine
  // failures (bad input is refused before it gets here).
  virtual absl::Status Run(const float* input, int64_t num_rows,
                           const ModelRunOutputs& outputs) = 0;
};

}  // namespace moe::engine
