#include "server/model/moe_weights.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "moe/common/status_macros.h"
#include "moe/kernels/dtype.h"
#include "server/model/error_text.h"

namespace moe::model {
namespace {

using kernels::DType;

// One layer's tensor names, grouped the way the loader uses them.
struct LayerTensorNames {
  std::string router;
  std::vector<std::array<std::string, 3>> experts;  // per expert: gate, up, down
  bool has_shared_expert = false;
  std::array<std::string, 3> shared;  // gate, up, down
  std::string shared_gate;
};

LayerTensorNames NamesFor(const ModelConfig& config, int64_t layer) {
  LayerTensorNames names;
  const bool mixtral = config.family == ModelFamily::kMixtral;
  const std::string block =
      absl::StrCat("model.layers.", layer, mixtral ? ".block_sparse_moe." : ".mlp.");
  names.router = absl::StrCat(block, "gate.weight");
  // Mixtral keeps the original Mistral names: w1 = gate, w3 = up, w2 = down.
  const std::array<const char*, 3> projections =
      mixtral ? std::array<const char*, 3>{"w1", "w3", "w2"}
              : std::array<const char*, 3>{"gate_proj", "up_proj", "down_proj"};
  names.experts.reserve(config.num_experts > 0 ? config.num_experts : 0);
  for (int64_t expert = 0; expert < config.num_experts; ++expert) {
    std::array<std::string, 3> expert_names;
    for (int i = 0; i < 3; ++i) {
      expert_names[i] = absl::StrCat(block, "experts.", expert, ".", projections[i], ".weight");
    }
    names.experts.push_back(std::move(expert_names));
  }
  if (config.shared_expert_intermediate_size > 0) {
    names.has_shared_expert = true;
    for (int i = 0; i < 3; ++i) {
      names.shared[i] = absl::StrCat(block, "shared_expert.", projections[i], ".weight");
    }
    names.shared_gate = absl::StrCat(block, "shared_expert_gate.weight");
  }
  return names;
}

std::vector<std::string> Flatten(const LayerTensorNames& names) {
  std::vector<std::string> all;
  all.push_back(names.router);
  for (const auto& expert : names.experts) all.insert(all.end(), expert.begin(), expert.end());
  if (names.has_shared_expert) {
    all.insert(all.end(), names.shared.begin(), names.shared.end());
    all.push_back(names.shared_gate);
  }
  return all;
}

// The config.json keys behind each dimension, so shape errors say what to compare.
const char* ExpertsKey(const ModelConfig& config) {
  return config.family == ModelFamily::kMixtral ? "num_local_experts" : "num_experts";
}
const char* ExpertFfnKey(const ModelConfig& config) {
  return config.family == ModelFamily::kMixtral || config.family == ModelFamily::kOlmoe
             ? "intermediate_size"
             : "moe_intermediate_size";
}

// Quotes `names`, showing at most `head` from the front and `tail` from the back.
std::string QuotedList(const std::vector<std::string>& names, size_t head, size_t tail) {
  auto quote = [](std::string* out, const std::string& name) { out->append(Quote(name)); };
  if (names.size() <= head + tail) return absl::StrJoin(names, ", ", quote);
  const std::vector<std::string> front(names.begin(), names.begin() + head);
  const std::vector<std::string> back(names.end() - tail, names.end());
  std::string list = absl::StrCat(absl::StrJoin(front, ", ", quote), ", ... (",
                                  names.size() - head - tail, " more)");
  if (!back.empty()) absl::StrAppend(&list, " ..., ", absl::StrJoin(back, ", ", quote));
  return list;
}

// The shape the config implies for a tensor, and which config.json keys produce it (for the
// error message).
struct Expectation {
  std::array<int64_t, 2> shape;
  std::string shape_meaning;  // e.g. "[num_experts, hidden_size]"
};

absl::Status CheckShape(const Checkpoint& checkpoint, const TensorInfo& tensor,
                        const Expectation& expected) {
  const bool matches = tensor.shape.size() == 2 && tensor.shape[0] == expected.shape[0] &&
                       tensor.shape[1] == expected.shape[1];
  if (!matches) {
    return Invalid(
        checkpoint.FileOf(tensor.name),
        absl::StrCat("tensor ", Quote(tensor.name), " has shape ", ShapeString(tensor.shape),
                     ", expected ", ShapeString(expected.shape), " = ", expected.shape_meaning,
                     " from config.json; config.json and the checkpoint disagree"));
  }
  // The reader guarantees this; checked again because the packing below copies this many bytes.
  const uint64_t bytes =
      static_cast<uint64_t>(tensor.num_elements) * kernels::DTypeSize(tensor.dtype);
  if (tensor.num_elements != expected.shape[0] * expected.shape[1] || tensor.data.size() != bytes) {
    return absl::InternalError(absl::StrCat(checkpoint.FileOf(tensor.name), ": tensor ",
                                            Quote(tensor.name), " holds ", tensor.data.size(),
                                            " bytes, expected ", bytes));
  }
  return absl::OkStatus();
}

bool IsFloatWeightDType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

absl::Status CheckFloatDType(const Checkpoint& checkpoint, const TensorInfo& tensor) {
  if (IsFloatWeightDType(tensor.dtype)) return absl::OkStatus();
  return Invalid(
      checkpoint.FileOf(tensor.name),
      absl::StrCat(
          "tensor ", Quote(tensor.name), " has dtype ",
          std::string(kernels::DTypeName(tensor.dtype)),
          "; MoE weights must be F32, BF16 or F16 (quantised checkpoints are not supported)"));
}

absl::Status MissingTensorsError(const Checkpoint& checkpoint, const ModelConfig& config,
                                 int64_t layer, const LayerTensorNames& names,
                                 const std::vector<std::string>& expected,
                                 const std::vector<std::string>& missing) {
  std::string message =
      absl::StrCat(checkpoint.path(), ": layer ", layer, "'s MoE block is missing ", missing.size(),
                   " of the ", expected.size(), " tensors it needs: ", QuotedList(missing, 6, 2),
                   ". For this ", std::string(ModelFamilyName(config.family)), " config (",
                   config.num_experts, " experts) the layer expects ", QuotedList(expected, 4, 2));
  if (!checkpoint.Contains(names.router)) {
    // Without even the router the whole naming scheme is off: most likely config.json comes
    // from another model, or the checkpoint was converted to a different layout. Showing what
    // the checkpoint does hold for this layer makes that visible.
    const std::string layer_prefix = absl::StrCat("model.layers.", layer, ".");
    std::vector<std::string> present;
    for (const std::string& name : checkpoint.TensorNames()) {
      if (name.rfind(layer_prefix, 0) == 0 && name.find("expert") != std::string::npos) {
        present.push_back(name);
      }
    }
    absl::StrAppend(&message, ". Check that config.json (", config.architecture,
                    ") belongs to this checkpoint");
    if (!present.empty()) {
      absl::StrAppend(&message, "; the checkpoint's expert tensors for this layer are named like ",
                      QuotedList(present, 3, 0));
    }
  }
  return absl::NotFoundError(message);
}

// Widens a F32/BF16/F16 tensor to float32 at `dst`. Tensor data may start at any byte offset
// of the file (the format promises no alignment), so 16-bit values are first staged in an
// aligned buffer rather than read through a misaligned pointer.
void WidenTensor(const TensorInfo& tensor, float* dst) {
  const size_t count = static_cast<size_t>(tensor.num_elements);
  if (tensor.dtype == DType::kF32) {
    std::memcpy(dst, tensor.data.data(), tensor.data.size());
    return;
  }
  std::vector<uint16_t> staged(count);
  std::memcpy(staged.data(), tensor.data.data(), tensor.data.size());
  kernels::WidenToFloat(tensor.dtype, staged.data(), dst, count);
}

// Copies `tensor`'s bytes to `dst + offset`. Sizes were checked against the config.
void CopyInto(std::vector<std::byte>& dst, size_t offset, const TensorInfo& tensor) {
  std::memcpy(dst.data() + offset, tensor.data.data(), tensor.data.size());
}

}  // namespace

kernels::MoELayerWeightsView MoELayerWeights::view() const {
  kernels::MoELayerWeightsView view = shape_;
  view.router_weight = router_weight_.data();
  view.w_in = w_in_.data();
  view.w_out = w_out_.data();
  if (shape_.shared_ffn_size > 0) {
    view.shared_w_in = shared_w_in_.data();
    view.shared_w_out = shared_w_out_.data();
    view.shared_gate = shared_gate_.empty() ? nullptr : shared_gate_.data();
  }
  return view;
}

uint64_t MoELayerWeights::bytes() const {
  return (router_weight_.size() + shared_gate_.size()) * sizeof(float) + w_in_.size() +
         w_out_.size() + shared_w_in_.size() + shared_w_out_.size();
}

std::vector<std::string> ExpectedMoETensorNames(const ModelConfig& config, int64_t layer) {
  return Flatten(NamesFor(config, layer));
}

absl::StatusOr<MoELayerWeights> MoELayerWeights::Load(const Checkpoint& checkpoint,
                                                      const ModelConfig& config, int64_t layer,
                                                      LoadProgressTracker& progress) {
  const LayerTensorNames names = NamesFor(config, layer);
  const std::vector<std::string> expected = Flatten(names);

  // Report every missing tensor at once rather than the first one only: a wrong naming scheme
  // shows as all of them missing, a truncated download as a few.
  std::vector<std::string> missing;
  for (const std::string& name : expected) {
    if (!checkpoint.Contains(name)) missing.push_back(name);
  }
  if (!missing.empty()) {
    return MissingTensorsError(checkpoint, config, layer, names, expected, missing);
  }

  const int64_t d = config.hidden_size;
  const int64_t f = config.moe_intermediate_size;
  const int64_t num_experts = config.num_experts;
  const int64_t fs = config.shared_expert_intermediate_size;
  const std::string experts_key(ExpertsKey(config));
  const std::string ffn_key(ExpertFfnKey(config));

  // Look up and check everything before allocating anything.
  MOE_ASSIGN_OR_RETURN(const TensorInfo* router, checkpoint.Get(names.router));
  MOE_RETURN_IF_ERROR(CheckFloatDType(checkpoint, *router));
  MOE_RETURN_IF_ERROR(CheckShape(
      checkpoint, *router, {{num_experts, d}, absl::StrCat("[", experts_key, ", hidden_size]")}));

  const Expectation gate_up_shape{{f, d}, absl::StrCat("[", ffn_key, ", hidden_size]")};
  const Expectation down_shape{{d, f}, absl::StrCat("[hidden_size, ", ffn_key, "]")};
  const TensorInfo* first_weight = nullptr;  // sets the layer's weight dtype
  auto check_weight = [&](const std::string& name,
                          const Expectation& shape) -> absl::StatusOr<const TensorInfo*> {
    MOE_ASSIGN_OR_RETURN(const TensorInfo* tensor, checkpoint.Get(name));
    MOE_RETURN_IF_ERROR(CheckFloatDType(checkpoint, *tensor));
    if (first_weight == nullptr) {
      first_weight = tensor;
    } else if (tensor->dtype != first_weight->dtype) {
      // The grouped GEMMs run over all experts with one element type.
      const std::string& file = checkpoint.FileOf(name);
      const std::string& first_file = checkpoint.FileOf(first_weight->name);
      return Invalid(
          file, absl::StrCat("tensor ", Quote(name), " has dtype ",
                             std::string(kernels::DTypeName(tensor->dtype)), " but ",
                             Quote(first_weight->name),
                             first_file == file ? std::string() : absl::StrCat(" in ", first_file),
                             " has ", std::string(kernels::DTypeName(first_weight->dtype)),
                             "; all expert weights of a layer must share one dtype"));
    }
    MOE_RETURN_IF_ERROR(CheckShape(checkpoint, *tensor, shape));
    return tensor;
  };

  std::vector<std::array<const TensorInfo*, 3>> experts(num_experts);
  for (int64_t expert = 0; expert < num_experts; ++expert) {
    for (int i = 0; i < 3; ++i) {
      MOE_ASSIGN_OR_RETURN(experts[expert][i], check_weight(names.experts[expert][i],
                                                            i < 2 ? gate_up_shape : down_shape));
    }
  }

  std::array<const TensorInfo*, 3> shared = {nullptr, nullptr, nullptr};
  const TensorInfo* shared_gate = nullptr;
  if (names.has_shared_expert) {
    const Expectation shared_gate_up{{fs, d}, "[shared_expert_intermediate_size, hidden_size]"};
    const Expectation shared_down{{d, fs}, "[hidden_size, shared_expert_intermediate_size]"};
    for (int i = 0; i < 3; ++i) {
      MOE_ASSIGN_OR_RETURN(shared[i],
                           check_weight(names.shared[i], i < 2 ? shared_gate_up : shared_down));
    }
    MOE_ASSIGN_OR_RETURN(shared_gate, checkpoint.Get(names.shared_gate));
    MOE_RETURN_IF_ERROR(CheckFloatDType(checkpoint, *shared_gate));
    MOE_RETURN_IF_ERROR(CheckShape(checkpoint, *shared_gate, {{1, d}, "[1, hidden_size]"}));
  }

  const DType weight_dtype = first_weight->dtype;
  const size_t element_size = kernels::DTypeSize(weight_dtype);
  const size_t projection_bytes = static_cast<size_t>(f * d) * element_size;  // one [f, d]

  MoELayerWeights weights;
  weights.layer_index_ = layer;
  weights.shape_.hidden_size = d;
  weights.shape_.ffn_size = f;
  weights.shape_.num_experts = num_experts;
  weights.shape_.activation = kernels::Activation::kSwiGLU;
  weights.shape_.weight_dtype = weight_dtype;
  weights.shape_.shared_ffn_size = names.has_shared_expert ? fs : 0;

  try {
    weights.router_weight_.resize(static_cast<size_t>(num_experts * d));
    weights.w_in_.resize(static_cast<size_t>(num_experts) * 2 * projection_bytes);
    weights.w_out_.resize(static_cast<size_t>(num_experts) * projection_bytes);
    if (names.has_shared_expert) {
      const size_t shared_projection_bytes = static_cast<size_t>(fs * d) * element_size;
      weights.shared_w_in_.resize(2 * shared_projection_bytes);
      weights.shared_w_out_.resize(shared_projection_bytes);
      weights.shared_gate_.resize(static_cast<size_t>(d));
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("not enough host memory to load layer ", layer,
                                                     "'s MoE weights from ", checkpoint.path()));
  }

  // The router (and the shared-expert gate) are widened to float32 so routing selects exactly
  // the experts the reference selects; widening bf16/f16 is exact.
  WidenTensor(*router, weights.router_weight_.data());
  progress.TensorDone(router->data.size());

  // w_in[e] = [gate rows (f); up rows (f)], w_out[e] = down: one grouped GEMM covers gate and up
  // of an expert with a fixed stride between experts.
  for (int64_t expert = 0; expert < num_experts; ++expert) {
    const size_t in_offset = static_cast<size_t>(expert) * 2 * projection_bytes;
    CopyInto(weights.w_in_, in_offset, *experts[expert][0]);
    CopyInto(weights.w_in_, in_offset + projection_bytes, *experts[expert][1]);
    CopyInto(weights.w_out_, static_cast<size_t>(expert) * projection_bytes, *experts[expert][2]);
    for (const TensorInfo* tensor : experts[expert]) progress.TensorDone(tensor->data.size());
  }
  if (names.has_shared_expert) {
    CopyInto(weights.shared_w_in_, 0, *shared[0]);
    CopyInto(weights.shared_w_in_, shared[0]->data.size(), *shared[1]);
    CopyInto(weights.shared_w_out_, 0, *shared[2]);
    WidenTensor(*shared_gate, weights.shared_gate_.data());
    for (const TensorInfo* tensor : shared) progress.TensorDone(tensor->data.size());
    progress.TensorDone(shared_gate->data.size());
  }
  return weights;
}

absl::StatusOr<std::vector<MoELayerWeights>> LoadMoELayers(const Checkpoint& checkpoint,
                                                           const ModelConfig& config,
                                                           const LoadProgressCallback& progress) {
  // ParseModelConfig guarantees these; a hand-built config might not.
  if (config.hidden_size <= 0 || config.moe_intermediate_size <= 0 || config.num_experts <= 0 ||
      config.shared_expert_intermediate_size < 0 ||
      static_cast<int64_t>(config.layer_is_moe.size()) != config.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model config is incomplete: hidden_size=", config.hidden_size,
        ", expert ffn size=", config.moe_intermediate_size, ", num_experts=", config.num_experts,
        ", shared_expert_intermediate_size=", config.shared_expert_intermediate_size, ", ",
        config.layer_is_moe.size(), " layer flags for ", config.num_layers,
        " layers; build it with ParseModelConfig"));
  }
  // Totals for progress reports: the tensors every MoE layer reads (absent ones count as zero
  // bytes; Load reports them as missing).
  int64_t total_tensors = 0;
  uint64_t total_bytes = 0;
  for (const int64_t layer : config.MoELayerIndices()) {
    for (const std::string& name : ExpectedMoETensorNames(config, layer)) {
      ++total_tensors;
      if (checkpoint.Contains(name)) total_bytes += (*checkpoint.Get(name))->data.size();
    }
  }
  LoadProgressTracker tracker(total_tensors, total_bytes, progress);
  std::vector<MoELayerWeights> layers;
  for (const int64_t layer : config.MoELayerIndices()) {
    MOE_ASSIGN_OR_RETURN(MoELayerWeights weights,
                         MoELayerWeights::Load(checkpoint, config, layer, tracker));
    layers.push_back(std::move(weights));
  }
  return layers;
}

}  // namespace moe::model
