#include "server/model/moe_mlp_weights.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "moe/common/status_macros.h"
#include "moe/kernels/dtype.h"
#include "server/model/error_text.h"

namespace moe::model {
namespace {

using kernels::DType;

std::string BlockPrefix(int64_t block) { return absl::StrCat("blocks.", block, "."); }

// Quotes `names`, at most `shown` of them.
std::string QuotedNames(const std::vector<std::string>& names, size_t shown) {
  std::vector<std::string> quoted;
  for (size_t i = 0; i < names.size() && i < shown; ++i) quoted.push_back(Quote(names[i]));
  std::string list = absl::StrJoin(quoted, ", ");
  if (names.size() > shown) absl::StrAppend(&list, ", ... (", names.size() - shown, " more)");
  return list;
}

bool IsFloat(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

// Looks `name` up and checks its dtype is a float type and its shape is `shape`; `meaning`
// spells the shape in config.json keys for the error message.
absl::StatusOr<const TensorInfo*> GetChecked(const Checkpoint& checkpoint, const std::string& name,
                                             const std::vector<int64_t>& shape,
                                             const std::string& meaning) {
  MOE_ASSIGN_OR_RETURN(const TensorInfo* tensor, checkpoint.Get(name));
  if (!IsFloat(tensor->dtype)) {
    return Invalid(
        checkpoint.FileOf(name),
        absl::StrCat("tensor ", Quote(name), " has dtype ",
                     std::string(kernels::DTypeName(tensor->dtype)),
                     "; MoEMLP weights must be F32 (expert weights may be BF16 or F16)"));
  }
  if (tensor->shape != shape) {
    return Invalid(checkpoint.FileOf(name),
                   absl::StrCat("tensor ", Quote(name), " has shape ", ShapeString(tensor->shape),
                                ", expected ", ShapeString(shape), " = ", meaning,
                                " from config.json; config.json and the checkpoint disagree"));
  }
  return tensor;
}

// Widens a float tensor into a new float32 vector (the data may sit at any byte offset, so
// 16-bit values are staged in an aligned buffer first).
std::vector<float> Widen(const TensorInfo& tensor) {
  const size_t count = static_cast<size_t>(tensor.num_elements);
  std::vector<float> out(count);
  if (tensor.dtype == DType::kF32) {
    std::memcpy(out.data(), tensor.data.data(), tensor.data.size());
  } else {
    std::vector<uint16_t> staged(count);
    std::memcpy(staged.data(), tensor.data.data(), tensor.data.size());
    kernels::WidenToFloat(tensor.dtype, staged.data(), out.data(), count);
  }
  return out;
}

std::vector<std::byte> CopyBytes(const TensorInfo& tensor) {
  return std::vector<std::byte>(tensor.data.begin(), tensor.data.end());
}

// What the loader needs of one vector-or-matrix tensor besides its name.
struct Expected {
  std::string name;
  std::vector<int64_t> shape;
  std::string meaning;
};

class Loader {
 public:
  Loader(const Checkpoint& checkpoint, const MoEMLPConfig& config,
         const LoadProgressCallback& progress, uint64_t total_bytes, int64_t total_tensors)
      : checkpoint_(checkpoint), config_(config), tracker_(total_tensors, total_bytes, progress) {}

  absl::StatusOr<std::vector<float>> Float(const Expected& expected) {
    MOE_ASSIGN_OR_RETURN(const TensorInfo* tensor,
                         GetChecked(checkpoint_, expected.name, expected.shape, expected.meaning));
    std::vector<float> out = Widen(*tensor);
    tracker_.TensorDone(tensor->data.size());
    return out;
  }

  absl::StatusOr<LinearWeights> Linear(const std::string& prefix, int64_t out, int64_t in,
                                       const std::string& out_key, const std::string& in_key) {
    LinearWeights linear;
    linear.out_features = out;
    linear.in_features = in;
    MOE_ASSIGN_OR_RETURN(
        linear.weight,
        Float({prefix + ".weight", {out, in}, absl::StrCat("[", out_key, ", ", in_key, "]")}));
    MOE_ASSIGN_OR_RETURN(linear.bias,
                         Float({prefix + ".bias", {out}, absl::StrCat("[", out_key, "]")}));
    return linear;
  }

  absl::StatusOr<LayerNormWeights> Norm(const std::string& prefix) {
    const int64_t d = config_.hidden_size;
    LayerNormWeights norm;
    MOE_ASSIGN_OR_RETURN(norm.weight, Float({prefix + ".weight", {d}, "[hidden_size]"}));
    MOE_ASSIGN_OR_RETURN(norm.bias, Float({prefix + ".bias", {d}, "[hidden_size]"}));
    return norm;
  }

  // An expert weight kept in its dtype, which must match every other expert weight's.
  absl::StatusOr<std::vector<std::byte>> Expert(const Expected& expected) {
    MOE_ASSIGN_OR_RETURN(const TensorInfo* tensor,
                         GetChecked(checkpoint_, expected.name, expected.shape, expected.meaning));
    if (first_expert_ == nullptr) {
      first_expert_ = tensor;
    } else if (tensor->dtype != first_expert_->dtype) {
      return Invalid(checkpoint_.FileOf(expected.name),
                     absl::StrCat("tensor ", Quote(expected.name), " has dtype ",
                                  std::string(kernels::DTypeName(tensor->dtype)), " but ",
                                  Quote(first_expert_->name), " has ",
                                  std::string(kernels::DTypeName(first_expert_->dtype)),
                                  "; all expert weights (w_in, w_out) must share one dtype"));
    }
    std::vector<std::byte> out = CopyBytes(*tensor);
    tracker_.TensorDone(tensor->data.size());
    return out;
  }

  absl::StatusOr<MoEMLPBlockWeights> Block(int64_t block) {
    const int64_t d = config_.hidden_size;
    const int64_t e = config_.num_experts;
    const int64_t f = config_.expert_ffn_dim;
    const int64_t in_rows = config_.expert_in_rows();
    const std::string in_rows_key =
        kernels::IsGated(config_.activation) ? "2 * expert_ffn_dim" : "expert_ffn_dim";
    const std::string prefix = BlockPrefix(block);
    MoEMLPBlockWeights weights;
    MOE_ASSIGN_OR_RETURN(weights.norm, Norm(prefix + "norm"));
    MOE_ASSIGN_OR_RETURN(
        weights.router_weight,
        Float({prefix + "moe.router.weight", {e, d}, "[num_experts, hidden_size]"}));
    MOE_ASSIGN_OR_RETURN(weights.w_in,
                         Expert({prefix + "moe.w_in",
                                 {e, in_rows, d},
                                 absl::StrCat("[num_experts, ", in_rows_key, ", hidden_size]")}));
    MOE_ASSIGN_OR_RETURN(weights.b_in, Float({prefix + "moe.b_in",
                                              {e, in_rows},
                                              absl::StrCat("[num_experts, ", in_rows_key, "]")}));
    MOE_ASSIGN_OR_RETURN(
        weights.w_out,
        Expert({prefix + "moe.w_out", {e, d, f}, "[num_experts, hidden_size, expert_ffn_dim]"}));
    MOE_ASSIGN_OR_RETURN(weights.b_out,
                         Float({prefix + "moe.b_out", {e, d}, "[num_experts, hidden_size]"}));
    weights.shape.hidden_size = d;
    weights.shape.ffn_size = f;
    weights.shape.num_experts = e;
    weights.shape.activation = config_.activation;
    weights.shape.weight_dtype = first_expert_->dtype;
    return weights;
  }

  DType expert_dtype() const { return first_expert_->dtype; }

 private:
  const Checkpoint& checkpoint_;
  const MoEMLPConfig& config_;
  LoadProgressTracker tracker_;
  const TensorInfo* first_expert_ = nullptr;
};

}  // namespace

kernels::MoELayerWeightsView MoEMLPBlockWeights::view() const {
  kernels::MoELayerWeightsView view = shape;
  view.router_weight = router_weight.data();
  view.w_in = w_in.data();
  view.w_out = w_out.data();
  view.b_in = b_in.data();
  view.b_out = b_out.data();
  return view;
}

uint64_t MoEMLPBlockWeights::bytes() const {
  return (norm.weight.size() + norm.bias.size() + router_weight.size() + b_in.size() +
          b_out.size()) *
             sizeof(float) +
         w_in.size() + w_out.size();
}

uint64_t MoEMLPWeights::bytes() const {
  uint64_t total = (input_proj.weight.size() + input_proj.bias.size() + final_norm.weight.size() +
                    final_norm.bias.size() + output_proj.weight.size() + output_proj.bias.size()) *
                   sizeof(float);
  for (const MoEMLPBlockWeights& block : blocks) total += block.bytes();
  return total;
}

std::vector<std::string> ExpectedMoEMLPTensorNames(const MoEMLPConfig& config) {
  std::vector<std::string> names = {"input_proj.weight", "input_proj.bias"};
  for (int64_t block = 0; block < config.num_blocks; ++block) {
    const std::string prefix = BlockPrefix(block);
    for (const char* suffix : {"norm.weight", "norm.bias", "moe.router.weight", "moe.w_in",
                               "moe.b_in", "moe.w_out", "moe.b_out"}) {
      names.push_back(prefix + suffix);
    }
  }
  for (const char* name :
       {"final_norm.weight", "final_norm.bias", "output_proj.weight", "output_proj.bias"}) {
    names.push_back(name);
  }
  return names;
}

absl::StatusOr<MoEMLPWeights> LoadMoEMLPWeights(const Checkpoint& checkpoint,
                                                const MoEMLPConfig& config,
                                                const LoadProgressCallback& progress) {
  if (config.hidden_size <= 0 || config.input_dim <= 0 || config.output_dim <= 0 ||
      config.num_blocks <= 0 || config.num_experts <= 0 || config.expert_ffn_dim <= 0 ||
      config.top_k <= 0 || config.top_k > config.num_experts) {
    return absl::InvalidArgumentError(
        "MoEMLP config is incomplete (a size is not positive or top_k > num_experts); build it "
        "with ParseMoEMLPConfig");
  }
  const std::vector<std::string> expected = ExpectedMoEMLPTensorNames(config);
  const std::set<std::string> expected_set(expected.begin(), expected.end());

  // Every missing tensor at once: a wrong naming scheme shows as all of them missing.
  std::vector<std::string> missing;
  uint64_t total_bytes = 0;
  for (const std::string& name : expected) {
    if (!checkpoint.Contains(name)) {
      missing.push_back(name);
    } else {
      total_bytes += (*checkpoint.Get(name))->data.size();
    }
  }
  if (!missing.empty()) {
    return absl::NotFoundError(absl::StrCat(
        checkpoint.path(), ": MoEMLP checkpoint is missing ", missing.size(), " of the ",
        expected.size(), " tensors its config.json implies: ", QuotedNames(missing, 8),
        " (the layout is in docs/moe_mlp_format.md)"));
  }
  std::vector<std::string> unexpected;
  for (const std::string& name : checkpoint.TensorNames()) {
    if (expected_set.count(name) == 0) unexpected.push_back(name);
  }
  if (!unexpected.empty()) {
    return Invalid(checkpoint.path(),
                   absl::StrCat("holds ", unexpected.size(),
                                " tensor(s) a MoEMLP checkpoint with num_blocks = ",
                                config.num_blocks, " does not have: ", QuotedNames(unexpected, 8),
                                "; config.json and the checkpoint disagree (or the file holds "
                                "another model)"));
  }

  Loader loader(checkpoint, config, progress, total_bytes, static_cast<int64_t>(expected.size()));
  MoEMLPWeights weights;
  try {
    MOE_ASSIGN_OR_RETURN(weights.input_proj,
                         loader.Linear("input_proj", config.hidden_size, config.input_dim,
                                       "hidden_size", "input_dim"));
    for (int64_t block = 0; block < config.num_blocks; ++block) {
      MOE_ASSIGN_OR_RETURN(MoEMLPBlockWeights block_weights, loader.Block(block));
      weights.blocks.push_back(std::move(block_weights));
    }
    MOE_ASSIGN_OR_RETURN(weights.final_norm, loader.Norm("final_norm"));
    MOE_ASSIGN_OR_RETURN(weights.output_proj,
                         loader.Linear("output_proj", config.output_dim, config.hidden_size,
                                       "output_dim", "hidden_size"));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("not enough host memory to load the MoEMLP weights from ", checkpoint.path(),
                     " (", total_bytes, " bytes)"));
  }
  weights.expert_dtype = loader.expert_dtype();
  return weights;
}

}  // namespace moe::model
