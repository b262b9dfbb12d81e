// Assignments into expert order: histogram, exclusive scan, stable scatter. Sequential on
// purpose: it is O(T*k) integer work, and token order inside each expert is what makes the
// capacity limit (first come, first served) and the results deterministic.
#include <cstdint>

#include "moe/kernels/cpu_routing.h"

namespace moe::kernels {

int64_t BuildExpertPermutationCpu(const int32_t* topk_ids, int64_t num_tokens, int top_k,
                                  int64_t num_experts, int64_t capacity,
                                  const ExpertPermutation& permutation) {
  int64_t* offsets = permutation.expert_offsets;
  int64_t* to_permuted = permutation.assignment_to_permuted;
  int64_t* to_assignment = permutation.permuted_to_assignment;
  const int64_t num_assignments = num_tokens * top_k;

  // Histogram; the rank of each kept assignment within its expert goes to to_permuted for now.
  for (int64_t e = 0; e <= num_experts; ++e) offsets[e] = 0;
  int64_t dropped = 0;
  for (int64_t a = 0; a < num_assignments; ++a) {
    const int32_t expert = topk_ids[a];
    int64_t& count = offsets[expert + 1];
    if (count < capacity) {
      to_permuted[a] = count++;
    } else {
      to_permuted[a] = -1;
      ++dropped;
    }
  }
  // Inclusive scan over counts shifted by one = exclusive offsets.
  for (int64_t e = 0; e < num_experts; ++e) offsets[e + 1] += offsets[e];
  for (int64_t a = 0; a < num_assignments; ++a) {
    if (to_permuted[a] < 0) continue;
    const int64_t row = offsets[topk_ids[a]] + to_permuted[a];
    to_permuted[a] = row;
    to_assignment[row] = a;
  }
  return dropped;
}

}  // namespace moe::kernels
