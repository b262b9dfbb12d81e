// Baseline for the benchmark: what a straightforward framework loop does. For each expert,
// scan all assignments for its tokens, then three separate GEMMs (gate, up, down) and a
// scatter-add. Same routing and results as the fast path; only the data movement differs.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "expert_gemm.h"
#include "moe/common/status_macros.h"
#include "moe/kernels/cpu_moe.h"
#include "moe/kernels/cpu_routing.h"
#include "workspace_buffers.h"

namespace moe::kernels {

absl::Status MoEForwardNaiveLoopCpu(const MoELayerWeightsView& w, const RouterConfig& router,
                                    const float* input, int64_t num_tokens,
                                    const MoELayerOutputs& outputs, CpuMoEWorkspace* workspace) {
  MOE_RETURN_IF_ERROR(ValidateMoEForward(w, router, num_tokens, outputs));
  if (num_tokens > 0 && input == nullptr) {
    return absl::InvalidArgumentError("MoE forward: input is null");
  }
  if (router.capacity_factor > 0.0 || w.shared_ffn_size > 0 || w.b_in != nullptr ||
      w.b_out != nullptr || !IsGated(w.activation)) {
    return absl::UnimplementedError(
        "naive MoE loop: only gated experts without capacity, biases or shared expert");
  }
  const int64_t d = w.hidden_size;
  const int64_t f = w.ffn_size;
  const int64_t num_experts = w.num_experts;
  const int k = router.top_k;
  std::vector<float> logits(num_tokens * num_experts);
  std::vector<int32_t> ids(num_tokens * k);
  std::vector<float> weights(num_tokens * k);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(num_tokens),
              static_cast<blasint>(num_experts), static_cast<blasint>(d), 1.0f, input,
              static_cast<blasint>(d), w.router_weight, static_cast<blasint>(d), 0.0f,
              logits.data(), static_cast<blasint>(num_experts));
  RouteTopKCpu(logits.data(), w.router_bias, num_tokens, num_experts, router, ids.data(),
               weights.data());

  std::fill_n(outputs.output, num_tokens * d, 0.0f);
  std::vector<float>& scratch = workspace->buffers().widen_scratch;
  const size_t elem = DTypeSize(w.weight_dtype);
  for (int64_t e = 0; e < num_experts; ++e) {
    std::vector<int64_t> assignments;
    for (int64_t a = 0; a < num_tokens * k; ++a) {
      if (ids[a] == e) assignments.push_back(a);
    }
    if (assignments.empty()) continue;
    const int64_t n = static_cast<int64_t>(assignments.size());
    std::vector<float> x(n * d), gate(n * f), up(n * f), y(n * d);
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(&x[i * d], input + (assignments[i] / k) * d, d * sizeof(float));
    }
    const char* w_in = static_cast<const char*>(w.w_in) + e * 2 * f * d * elem;
    const char* w_out = static_cast<const char*>(w.w_out) + e * d * f * elem;
    cpu::WeightGemm(w_in, w.weight_dtype, f, d, nullptr, x.data(), d, n, gate.data(), f, &scratch);
    cpu::WeightGemm(w_in + f * d * elem, w.weight_dtype, f, d, nullptr, x.data(), d, n, up.data(),
                    f, &scratch);
    for (int64_t i = 0; i < n * f; ++i) {
      const float g = gate[i];
      gate[i] =
          IsGated(w.activation) && w.activation == Activation::kSwiGLU
              ? g / (1.0f + std::exp(-g)) * up[i]
              : 0.5f * g * (1.0f + std::tanh(0.7978845608f * (g + 0.044715f * g * g * g))) * up[i];
    }
    cpu::WeightGemm(w_out, w.weight_dtype, d, f, nullptr, gate.data(), f, n, y.data(), d, &scratch);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t a = assignments[i];
      float* out = outputs.output + (a / k) * d;
      for (int64_t j = 0; j < d; ++j) out[j] += weights[a] * y[i * d + j];
    }
  }
  if (outputs.topk_ids != nullptr) std::copy(ids.begin(), ids.end(), outputs.topk_ids);
  if (outputs.topk_weights != nullptr)
    std::copy(weights.begin(), weights.end(), outputs.topk_weights);
  if (outputs.router_logits != nullptr)
    std::copy(logits.begin(), logits.end(), outputs.router_logits);
  if (outputs.expert_token_counts != nullptr) {
    for (int64_t e = 0; e < num_experts; ++e) {
      outputs.expert_token_counts[e] = std::count(ids.begin(), ids.end(), static_cast<int32_t>(e));
    }
  }
  if (outputs.dropped_assignments != nullptr) *outputs.dropped_assignments = 0;
  return absl::OkStatus();
}

}  // namespace moe::kernels
