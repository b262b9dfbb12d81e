// Histogram (shared-memory atomics; integer, so order-independent), CUB exclusive scans for the
// offsets, a stable CUB radix sort by expert id for the order within each expert, and a
// scatter that applies the capacity limit by rank within the expert.
#include <cub/cub.cuh>

#include <algorithm>
#include <climits>

#include "compute_types.cuh"
#include "cuda_check.cuh"
#include "expert_permutation.cuh"

namespace moe::kernels::cuda_internal {
namespace {

constexpr int kThreads = 256;

int SortEndBit(int64_t num_experts) {
  int bits = 1;
  while ((int64_t{1} << bits) < num_experts) ++bits;
  return bits;
}

__global__ void ExpertHistogramKernel(const int32_t* __restrict__ expert_ids,  // [N]
                                      int64_t num_assignments, int num_experts,
                                      int32_t* __restrict__ counts,              // [E]
                                      int32_t* __restrict__ assignment_index) {  // [N]
  extern __shared__ int32_t local_counts[];                                      // [E]
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) local_counts[e] = 0;
  __syncthreads();
  for (int64_t a = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; a < num_assignments;
       a += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    atomicAdd(&local_counts[expert_ids[a]], 1);
    assignment_index[a] = static_cast<int32_t>(a);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
    if (local_counts[e] != 0) atomicAdd(&counts[e], local_counts[e]);
  }
}

__global__ void CapCountsKernel(const int32_t* __restrict__ raw_counts,  // [E]
                                int num_experts, int32_t capacity,
                                int32_t* __restrict__ kept_counts) {  // [E + 1]
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e < num_experts) kept_counts[e] = min(raw_counts[e], capacity);
  if (e == num_experts) kept_counts[e] = 0;
}

__global__ void ScatterAssignmentsKernel(const uint32_t* __restrict__ sorted_experts,     // [N]
                                         const int32_t* __restrict__ sorted_assignments,  // [N]
                                         const int32_t* __restrict__ raw_offsets,         // [E]
                                         const int32_t* __restrict__ expert_offsets,      // [E + 1]
                                         int64_t num_assignments, int32_t capacity,
                                         int32_t* __restrict__ permuted_to_assignment,    // [N]
                                         int32_t* __restrict__ assignment_to_permuted) {  // [N]
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < num_assignments;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t expert = sorted_experts[p];
    const int32_t assignment = sorted_assignments[p];
    const int32_t rank = static_cast<int32_t>(p) - raw_offsets[expert];
    if (rank < capacity) {
      const int32_t row = expert_offsets[expert] + rank;
      permuted_to_assignment[row] = assignment;
      assignment_to_permuted[assignment] = row;
    } else {
      assignment_to_permuted[assignment] = -1;
    }
  }
}

__global__ void WriteExpertCountsKernel(const int32_t* __restrict__ expert_offsets,  // [E + 1]
                                        int num_experts, int64_t num_assignments,
                                        int64_t* __restrict__ counts,     // [E] or null
                                        int64_t* __restrict__ dropped) {  // [1] or null
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (counts != nullptr && e < num_experts) {
    counts[e] = expert_offsets[e + 1] - expert_offsets[e];
  }
  if (dropped != nullptr && e == 0) *dropped = num_assignments - expert_offsets[num_experts];
}

unsigned GridFor(int64_t items) {
  return static_cast<unsigned>(std::clamp<int64_t>(CeilDiv(items, kThreads), 1, 65535));
}

}  // namespace

absl::StatusOr<size_t> ExpertPermutationTempBytes(int64_t num_assignments, int64_t num_experts) {
  size_t scan_bytes = 0, sort_bytes = 0;
  MOE_CUDA_RETURN_IF_ERROR(cub::DeviceScan::ExclusiveSum(
      nullptr, scan_bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<int>(num_experts + 1)));
  MOE_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<int>(num_assignments), 0, SortEndBit(num_experts)));
  return std::max(scan_bytes, sort_bytes);
}

// Bytes: N*4 ids read twice, N*4*2 sort keys/values in, N*4*2 out per radix pass
// (ceil(log2 E / 8) passes, usually 1), N*4*2 scatter reads, N*4*2 scatter writes; E*4 small
// arrays. No FLOPs. For decode-sized N it is launch-latency bound (6 launches).
absl::Status LaunchExpertPermutation(cudaStream_t stream, const int32_t* expert_ids,
                                     int64_t num_assignments, int64_t num_experts, int64_t capacity,
                                     const ExpertPermutationBuffers& b) {
  if (num_assignments > INT_MAX || num_experts > 1 << 20) {
    return absl::InvalidArgumentError("expert permutation: too many assignments or experts");
  }
  const int n = static_cast<int>(num_assignments);
  const int e = static_cast<int>(num_experts);
  const int32_t cap = static_cast<int32_t>(std::min<int64_t>(capacity, INT_MAX));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(b.raw_counts, 0, sizeof(int32_t) * e, stream));
  if (n > 0) {
    ExpertHistogramKernel<<<std::min(GridFor(n), 1024u), kThreads, sizeof(int32_t) * e, stream>>>(
        expert_ids, n, e, b.raw_counts, b.assignment_index);
    MOE_CUDA_RETURN_IF_LAUNCH_ERROR("ExpertHistogramKernel");
  }
  size_t temp_bytes = b.temp_bytes;
  MOE_CUDA_RETURN_IF_ERROR(
      cub::DeviceScan::ExclusiveSum(b.temp, temp_bytes, b.raw_counts, b.raw_offsets, e, stream));
  CapCountsKernel<<<GridFor(e + 1), kThreads, 0, stream>>>(b.raw_counts, e, cap, b.kept_counts);
  MOE_CUDA_RETURN_IF_LAUNCH_ERROR("CapCountsKernel");
  temp_bytes = b.temp_bytes;
  MOE_CUDA_RETURN_IF_ERROR(cub::DeviceScan::ExclusiveSum(b.temp, temp_bytes, b.kept_counts,
                                                         b.expert_offsets, e + 1, stream));
  if (n == 0) return absl::OkStatus();
  temp_bytes = b.temp_bytes;
  MOE_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
      b.temp, temp_bytes, reinterpret_cast<const uint32_t*>(expert_ids), b.sorted_experts,
      b.assignment_index, b.sorted_assignments, n, 0, SortEndBit(e), stream));
  ScatterAssignmentsKernel<<<GridFor(n), kThreads, 0, stream>>>(
      b.sorted_experts, b.sorted_assignments, b.raw_offsets, b.expert_offsets, n, cap,
      b.permuted_to_assignment, b.assignment_to_permuted);
  MOE_CUDA_RETURN_IF_LAUNCH_ERROR("ScatterAssignmentsKernel");
  return absl::OkStatus();
}

// Bytes: (E+1)*4 read, E*8 + 8 written.
absl::Status LaunchWriteExpertCounts(cudaStream_t stream, const int32_t* expert_offsets,
                                     int64_t num_experts, int64_t num_assignments, int64_t* counts,
                                     int64_t* dropped) {
  if (counts == nullptr && dropped == nullptr) return absl::OkStatus();
  WriteExpertCountsKernel<<<GridFor(num_experts), kThreads, 0, stream>>>(
      expert_offsets, static_cast<int>(num_experts), num_assignments, counts, dropped);
  MOE_CUDA_RETURN_IF_LAUNCH_ERROR("WriteExpertCountsKernel");
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda_internal
