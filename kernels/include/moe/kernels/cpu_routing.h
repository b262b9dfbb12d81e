// CPU routing: scores from router logits, top-k selection, renormalisation, and the permutation
// of token assignments into expert order (histogram -> exclusive scan -> stable scatter).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "moe/kernels/moe_layer.h"

namespace moe::kernels {

// From logits [T, E] to ids/weights [T, k]. Selection order is by descending selection score,
// exact ties going to the lower expert index. The selection score is the sigmoid score (+ bias)
// for sigmoid routers and the softmax score + bias when a bias is given; for softmax without a
// bias it is the logit itself (softmax is monotonic, so the same experts are chosen, and two
// logits whose probabilities round to the same float still rank by their exact values). NaN
// ranks below every number (below -inf too), so ids are always distinct and in [0, E) whatever
// the logits hold. Weights are the (unbiased) scores of the chosen experts, renormalised over
// the k when `router.renormalize`, times `routed_scaling_factor`. Softmax rows holding +inf
// take the limit: the +inf experts share probability 1, the others get 0. Deterministic and
// independent of the other rows.
void RouteTopKCpu(const float* logits, const float* bias, int64_t num_tokens, int64_t num_experts,
                  const RouterConfig& router, int32_t* topk_ids, float* topk_weights);

// The permutation of T*k assignments into expert order.
struct ExpertPermutation {
  // [E + 1] exclusive prefix sums of the per-expert counts (after capacity): expert e's rows
  // are permuted rows [offsets[e], offsets[e+1]).
  int64_t* expert_offsets = nullptr;
  // [T*k] for permuted row p, the assignment index (token * k + slot) it came from; stable:
  // within an expert, assignments keep token order.
  int64_t* permuted_to_assignment = nullptr;
  // [T*k] for assignment a, its permuted row, or -1 when the capacity limit dropped it.
  int64_t* assignment_to_permuted = nullptr;
};

// Builds the permutation from ids [T, k]. Returns the number of dropped assignments.
int64_t BuildExpertPermutationCpu(const int32_t* topk_ids, int64_t num_tokens, int top_k,
                                  int64_t num_experts, int64_t capacity,
                                  const ExpertPermutation& permutation);

}  // namespace moe::kernels
