// Scores (softmax or sigmoid) and top-k selection from router logits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "moe/kernels/moe_layer.h"

namespace moe::kernels::cuda_internal {

struct RouterTopKParams {
  const float* logits = nullptr;  // [T, E]
  const float* bias = nullptr;    // [E] or null: added to the scores for selection only
  int64_t num_tokens = 0;
  int num_experts = 0;
  RouterConfig router;
  int32_t* topk_ids = nullptr;    // [T, k] descending selection score, ties -> lower index
  float* topk_weights = nullptr;  // [T, k] unbiased scores, renormalised/scaled per `router`
};

// Same semantics as RouteTopKCpu: NaN ranks below every number, so the k ids are distinct and
// in [0, E) whatever the logits hold.
absl::Status LaunchRouterTopK(cudaStream_t stream, const RouterTopKParams& params);

}  // namespace moe::kernels::cuda_internal
