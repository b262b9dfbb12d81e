// The CPU MoE layer's fast path:
//   router sgemm -> scores + top-k -> permutation by expert -> gather rows ->
//   per expert: one fused gate|up GEMM, activation in place, down GEMM -> weighted combine
//   (+ shared expert).
// Every expert's weights are read once per call (one GEMM over all of its tokens), which is
// what makes small batches memory-bound at copy bandwidth and large ones compute-bound in BLAS.
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

CpuMoEWorkspace::CpuMoEWorkspace() : buffers_(std::make_unique<Buffers>()) {}
CpuMoEWorkspace::~CpuMoEWorkspace() = default;

namespace {

template <typename T>
T* Ensure(std::vector<T>& buffer, int64_t count) {
  if (buffer.size() < static_cast<size_t>(count)) buffer.resize(static_cast<size_t>(count));
  return buffer.data();
}

const void* ExpertSlice(const void* base, DType dtype, int64_t expert, int64_t elements) {
  return static_cast<const char*>(base) +
         expert * elements * static_cast<int64_t>(DTypeSize(dtype));
}

// The shared expert runs densely on every token and adds gate(x) * shared(x) to `output`.
void AddSharedExpert(const MoELayerWeightsView& w, const float* x, int64_t num_tokens,
                     float* output, CpuMoEWorkspace::Buffers& ws) {
  const int64_t d = w.hidden_size;
  const int64_t fs = w.shared_ffn_size;
  const int64_t in_rows = w.shared_in_rows();
  float* hidden = Ensure(ws.shared_hidden, num_tokens * in_rows);
  float* y = Ensure(ws.shared_y, num_tokens * d);
  cpu::WeightGemm(w.shared_w_in, w.weight_dtype, in_rows, d, nullptr, x, d, num_tokens, hidden,
                  in_rows, &ws.widen_scratch);
  cpu::ApplyActivation(w.activation, hidden, num_tokens, fs, in_rows);
  cpu::WeightGemm(w.shared_w_out, w.weight_dtype, d, fs, nullptr, hidden, in_rows, num_tokens, y, d,
                  &ws.widen_scratch);
#pragma omp parallel for schedule(static) if (num_tokens * d > 65536)
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* xt = x + t * d;
    float gate = 1.0f;
    if (w.shared_gate != nullptr) {
      float dot = 0.0f;
      for (int64_t j = 0; j < d; ++j) dot += xt[j] * w.shared_gate[j];
      gate = 1.0f / (1.0f + std::exp(-dot));
    }
    float* out = output + t * d;
    const float* yt = y + t * d;
    for (int64_t j = 0; j < d; ++j) out[j] += gate * yt[j];
  }
}

}  // namespace

absl::Status MoEForwardCpu(const MoELayerWeightsView& w, const RouterConfig& router,
                           const float* input, int64_t num_tokens, const MoELayerOutputs& outputs,
                           CpuMoEWorkspace* workspace) {
  MOE_RETURN_IF_ERROR(ValidateMoEForward(w, router, num_tokens, outputs));
  if (num_tokens > 0 && input == nullptr) {
    return absl::InvalidArgumentError("MoE forward: input is null");
  }
  if (workspace == nullptr) return absl::InvalidArgumentError("MoE forward: workspace is null");
  const int64_t num_experts = w.num_experts;
  if (num_tokens == 0) {
    if (outputs.expert_token_counts != nullptr) {
      std::fill_n(outputs.expert_token_counts, num_experts, 0);
    }
    if (outputs.dropped_assignments != nullptr) *outputs.dropped_assignments = 0;
    return absl::OkStatus();
  }
  CpuMoEWorkspace::Buffers& ws = workspace->buffers();
  const int64_t d = w.hidden_size;
  const int64_t f = w.ffn_size;
  const int k = router.top_k;
  const int64_t in_rows = w.in_rows();
  const int64_t num_assignments = num_tokens * k;

  // 1. Router logits [T, E] = x [T, d] * router^T.
  float* logits = outputs.router_logits != nullptr ? outputs.router_logits
                                                   : Ensure(ws.logits, num_tokens * num_experts);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(num_tokens),
              static_cast<blasint>(num_experts), static_cast<blasint>(d), 1.0f, input,
              static_cast<blasint>(d), w.router_weight, static_cast<blasint>(d), 0.0f, logits,
              static_cast<blasint>(num_experts));

  // 2. Scores and top-k.
  int32_t* ids = outputs.topk_ids != nullptr ? outputs.topk_ids : Ensure(ws.ids, num_assignments);
  float* weights =
      outputs.topk_weights != nullptr ? outputs.topk_weights : Ensure(ws.weights, num_assignments);
  RouteTopKCpu(logits, w.router_bias, num_tokens, num_experts, router, ids, weights);

  // 3. Permutation into expert order (capacity applied here).
  ExpertPermutation permutation{Ensure(ws.offsets, num_experts + 1),
                                Ensure(ws.to_assignment, num_assignments),
                                Ensure(ws.to_permuted, num_assignments)};
  const int64_t dropped =
      BuildExpertPermutationCpu(ids, num_tokens, k, num_experts,
                                ExpertCapacity(router, num_tokens, num_experts), permutation);
  const int64_t* offsets = permutation.expert_offsets;
  const int64_t num_rows = offsets[num_experts];

  // 4. Gather rows in expert order.
  float* permuted_x = Ensure(ws.permuted_x, num_rows * d);
#pragma omp parallel for schedule(static) if (num_rows * d > 65536)
  for (int64_t p = 0; p < num_rows; ++p) {
    const int64_t token = permutation.permuted_to_assignment[p] / k;
    std::memcpy(permuted_x + p * d, input + token * d, static_cast<size_t>(d) * sizeof(float));
  }

  // 5. Experts: fused gate|up GEMM, activation in place, down GEMM straight into permuted_y.
  int64_t max_rows = 0;
  for (int64_t e = 0; e < num_experts; ++e)
    max_rows = std::max(max_rows, offsets[e + 1] - offsets[e]);
  float* hidden = Ensure(ws.hidden, max_rows * in_rows);
  float* permuted_y = Ensure(ws.permuted_y, num_rows * d);
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t begin = offsets[e];
    const int64_t rows = offsets[e + 1] - begin;
    if (rows == 0) continue;
    cpu::WeightGemm(ExpertSlice(w.w_in, w.weight_dtype, e, in_rows * d), w.weight_dtype, in_rows, d,
                    w.b_in != nullptr ? w.b_in + e * in_rows : nullptr, permuted_x + begin * d, d,
                    rows, hidden, in_rows, &ws.widen_scratch);
    cpu::ApplyActivation(w.activation, hidden, rows, f, in_rows);
    cpu::WeightGemm(ExpertSlice(w.w_out, w.weight_dtype, e, d * f), w.weight_dtype, d, f,
                    w.b_out != nullptr ? w.b_out + e * d : nullptr, hidden, in_rows, rows,
                    permuted_y + begin * d, d, &ws.widen_scratch);
  }

  // 6. Weighted combine in fixed slot order (deterministic), dropped assignments add nothing.
  float* output = outputs.output;
#pragma omp parallel for schedule(static) if (num_tokens * d > 65536)
  for (int64_t t = 0; t < num_tokens; ++t) {
    float* out = output + t * d;
    std::fill_n(out, d, 0.0f);
    for (int s = 0; s < k; ++s) {
      const int64_t row = permutation.assignment_to_permuted[t * k + s];
      if (row < 0) continue;
      const float weight = weights[t * k + s];
      const float* y = permuted_y + row * d;
      for (int64_t j = 0; j < d; ++j) out[j] += weight * y[j];
    }
  }

  if (w.shared_ffn_size > 0) AddSharedExpert(w, input, num_tokens, output, ws);

  if (outputs.expert_token_counts != nullptr) {
    for (int64_t e = 0; e < num_experts; ++e) {
      outputs.expert_token_counts[e] = offsets[e + 1] - offsets[e];
    }
  }
  if (outputs.dropped_assignments != nullptr) *outputs.dropped_assignments = dropped;
  return absl::OkStatus();
}

}  // namespace moe::kernels
