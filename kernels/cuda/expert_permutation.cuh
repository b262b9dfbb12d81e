// The permutation of the T*k token->expert assignments into expert order, with the capacity
// limit applied first come, first served in token order.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moe::kernels::cuda_internal {

struct ExpertPermutationBuffers {
  // Results.
  int32_t* expert_offsets = nullptr;          // [E + 1] exclusive scan of the kept counts
  int32_t* permuted_to_assignment = nullptr;  // [N] for kept row p < offsets[E]: token*k + slot
  int32_t* assignment_to_permuted = nullptr;  // [N] its row, or -1 when dropped
  // Scratch.
  int32_t* raw_counts = nullptr;          // [E]     assignments per expert before capacity
  int32_t* raw_offsets = nullptr;         // [E]     their exclusive scan
  int32_t* kept_counts = nullptr;         // [E + 1] min(raw, capacity), then 0
  uint32_t* sorted_experts = nullptr;     // [N]
  int32_t* assignment_index = nullptr;    // [N]     0, 1, ..., N-1
  int32_t* sorted_assignments = nullptr;  // [N]
  void* temp = nullptr;                   // CUB temporary storage
  size_t temp_bytes = 0;
};

// CUB temporary storage the permutation needs for N assignments over E experts.
absl::StatusOr<size_t> ExpertPermutationTempBytes(int64_t num_assignments, int64_t num_experts);

// From expert ids [N] (each in [0, E)) to the permutation. Within an expert, rows keep
// assignment order (token-major): a stable radix sort on the expert id, so the result is
// deterministic and the capacity drops exactly the assignments the CPU drops.
absl::Status LaunchExpertPermutation(cudaStream_t stream, const int32_t* expert_ids,
                                     int64_t num_assignments, int64_t num_experts, int64_t capacity,
                                     const ExpertPermutationBuffers& buffers);

// counts [E] (int64) = offsets[e+1] - offsets[e]; dropped [1] = N - offsets[E]. Either may be
// null.
absl::Status LaunchWriteExpertCounts(cudaStream_t stream, const int32_t* expert_offsets,
                                     int64_t num_experts, int64_t num_assignments, int64_t* counts,
                                     int64_t* dropped);

}  // namespace moe::kernels::cuda_internal
