// Validation shared by every backend (one CheckInputs for CPU and CUDA), capacity and FLOP
// accounting.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "moe/kernels/moe_layer.h"

namespace moe::kernels {
namespace {

// Bounds that keep every size product below int64 overflow and reject nonsense early.
constexpr int64_t kMaxDim = int64_t{1} << 20;
constexpr int64_t kMaxExperts = 4096;
constexpr int kMaxTopK = 64;

bool IsWeightDType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

}  // namespace

absl::Status ValidateMoELayer(const MoELayerWeightsView& w, const RouterConfig& router) {
  if (w.hidden_size <= 0 || w.hidden_size > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoE layer: hidden size ", w.hidden_size, " outside [1, ", kMaxDim, "]"));
  }
  if (w.ffn_size <= 0 || w.ffn_size > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoE layer: expert ffn size ", w.ffn_size, " outside [1, ", kMaxDim, "]"));
  }
  if (w.num_experts <= 0 || w.num_experts > kMaxExperts) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoE layer: expert count ", w.num_experts, " outside [1, ", kMaxExperts, "]"));
  }
  if (router.top_k < 1 || router.top_k > w.num_experts || router.top_k > kMaxTopK) {
    return absl::InvalidArgumentError(absl::StrCat("MoE layer: top_k ", router.top_k,
                                                   " outside [1, min(experts=", w.num_experts, ", ",
                                                   kMaxTopK, ")]"));
  }
  if (!std::isfinite(router.capacity_factor)) {
    return absl::InvalidArgumentError("MoE layer: capacity_factor must be finite");
  }
  if (!std::isfinite(router.routed_scaling_factor)) {
    return absl::InvalidArgumentError("MoE layer: routed_scaling_factor must be finite");
  }
  if (!IsWeightDType(w.weight_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("MoE layer: expert weight dtype ",
                                                   std::string(DTypeName(w.weight_dtype)),
                                                   " unsupported (F32, BF16 or F16)"));
  }
  if (w.router_weight == nullptr || w.w_in == nullptr || w.w_out == nullptr) {
    return absl::InvalidArgumentError("MoE layer: router, w_in and w_out weights are required");
  }
  if (w.shared_ffn_size < 0 || w.shared_ffn_size > kMaxDim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MoE layer: shared expert ffn size ", w.shared_ffn_size, " outside [0, ", kMaxDim, "]"));
  }
  if (w.shared_ffn_size > 0 && (w.shared_w_in == nullptr || w.shared_w_out == nullptr)) {
    return absl::InvalidArgumentError(
        "MoE layer: shared expert size is set but its weights are missing");
  }
  return absl::OkStatus();
}

absl::Status ValidateMoEForward(const MoELayerWeightsView& w, const RouterConfig& router,
                                int64_t num_tokens, const MoELayerOutputs& outputs) {
  if (absl::Status status = ValidateMoELayer(w, router); !status.ok()) return status;
  // Bounded so that T * max(E, k, in_rows, d) stays far from int64 overflow.
  constexpr int64_t kMaxTokens = int64_t{1} << 26;
  if (num_tokens < 0 || num_tokens > kMaxTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("MoE forward: token count ", num_tokens, " outside [0, ", kMaxTokens, "]"));
  }
  if (num_tokens > 0 && outputs.output == nullptr) {
    return absl::InvalidArgumentError("MoE forward: output buffer is required");
  }
  return absl::OkStatus();
}

int64_t ExpertCapacity(const RouterConfig& router, int64_t num_tokens, int64_t num_experts) {
  if (router.capacity_factor <= 0.0 || num_experts <= 0) {
    return std::numeric_limits<int64_t>::max();
  }
  const double capacity = std::ceil(router.capacity_factor * static_cast<double>(num_tokens) *
                                    router.top_k / static_cast<double>(num_experts));
  if (capacity >= static_cast<double>(std::numeric_limits<int64_t>::max())) {
    return std::numeric_limits<int64_t>::max();
  }
  return static_cast<int64_t>(capacity);
}

double MoEForwardFlops(const MoELayerWeightsView& w, int64_t num_tokens, int top_k) {
  const double t = static_cast<double>(num_tokens);
  const double d = static_cast<double>(w.hidden_size);
  const double router = 2.0 * t * d * static_cast<double>(w.num_experts);
  const double per_assignment =
      2.0 * d * static_cast<double>(w.in_rows()) + 2.0 * static_cast<double>(w.ffn_size) * d;
  const double shared = w.shared_ffn_size > 0
                            ? t * (2.0 * d * static_cast<double>(w.shared_in_rows()) +
                                   2.0 * static_cast<double>(w.shared_ffn_size) * d)
                            : 0.0;
  return router + t * top_k * per_assignment + shared;
}

}  // namespace moe::kernels
