// Combine: one block per token. The slot sum runs in fixed order 0..k-1 and the shared-gate dot
// product in a fixed reduction tree, so results are bit-identical run to run.
#include <cub/cub.cuh>

#include <algorithm>
#include <cstdint>

#include "combine.cuh"
#include "compute_types.cuh"
#include "cuda_check.cuh"

namespace moe::kernels::cuda_internal {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxTopK = 64;

// Each thread produces kVec consecutive columns of the token's row.
template <typename T, int kVec>
__global__ void CombineKernel(CombineParams p) {
  using BlockReduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename BlockReduce::TempStorage reduce_storage;
  __shared__ float gate_shared;
  __shared__ int32_t rows[kMaxTopK];
  __shared__ float weights[kMaxTopK];
  __shared__ int32_t experts[kMaxTopK];
  const int64_t d = p.hidden_size;
  const int k = p.top_k;
  const T* y = static_cast<const T*>(p.expert_y);
  const T* shared_y = static_cast<const T*>(p.shared_y);
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);

  for (int64_t t = blockIdx.x; t < p.num_tokens; t += gridDim.x) {
    if (threadIdx.x < k) {
      rows[threadIdx.x] = p.assignment_to_permuted[t * k + threadIdx.x];
      weights[threadIdx.x] = p.topk_weights[t * k + threadIdx.x];
      experts[threadIdx.x] = p.topk_ids[t * k + threadIdx.x];
    }
    float gate = 1.0f;
    if (shared_y != nullptr && p.shared_gate != nullptr) {
      float dot = 0.0f;
      for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
        dot += ToFloat(x[t * d + j]) * p.shared_gate[j];
      }
      dot = BlockReduce(reduce_storage).Sum(dot);
      if (threadIdx.x == 0) gate_shared = 1.0f / (1.0f + expf(-dot));
    }
    __syncthreads();
    if (shared_y != nullptr && p.shared_gate != nullptr) gate = gate_shared;
    for (int64_t j0 = static_cast<int64_t>(threadIdx.x) * kVec; j0 < d;
         j0 += static_cast<int64_t>(blockDim.x) * kVec) {
      float acc[kVec];
#pragma unroll
      for (int v = 0; v < kVec; ++v) acc[v] = 0.0f;
      for (int s = 0; s < k; ++s) {
        const int32_t row = rows[s];
        if (row < 0) continue;  // dropped by the capacity limit
        alignas(16) T values[kVec];
        LoadVec<T, kVec>(y + row * p.y_ld + j0, values);
        const float* bias = p.b_out != nullptr ? p.b_out + experts[s] * d + j0 : nullptr;
#pragma unroll
        for (int v = 0; v < kVec; ++v) {
          float value = ToFloat(values[v]);
          if (bias != nullptr) value += bias[v];
          acc[v] += weights[s] * value;
        }
      }
      alignas(16) T result[kVec];
      if (shared_y != nullptr) {
        alignas(16) T shared[kVec];
        LoadVec<T, kVec>(shared_y + t * p.shared_ld + j0, shared);
#pragma unroll
        for (int v = 0; v < kVec; ++v) acc[v] += gate * ToFloat(shared[v]);
      }
#pragma unroll
      for (int v = 0; v < kVec; ++v) result[v] = FromFloat<T>(acc[v]);
      StoreVec<T, kVec>(result, out + t * d + j0);
    }
    __syncthreads();  // rows/weights/gate are rewritten for the next token
  }
}

}  // namespace

// Bytes: kept rows*d*2 read (expert outputs) + T*d*2 written, + T*d*2*2 with a gated shared
// expert (x and shared_y), + T*k*12 routing. FLOPs: 2*T*k*d (+ 4*T*d shared). Memory-bound.
absl::Status LaunchCombine(cudaStream_t stream, const CombineParams& p) {
  if (p.num_tokens == 0) return absl::OkStatus();
  if (p.top_k > kMaxTopK) return absl::InvalidArgumentError("combine: top_k above 64");
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(p.num_tokens, 65535));
  // 16-byte vectors when every row segment starts 16-byte aligned.
  const bool vectorized =
      p.hidden_size % 8 == 0 && p.y_ld % 8 == 0 &&
      reinterpret_cast<uintptr_t>(p.expert_y) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(p.out) % 16 == 0 &&
      (p.shared_y == nullptr ||
       (p.shared_ld % 8 == 0 && reinterpret_cast<uintptr_t>(p.shared_y) % 16 == 0));
  return DispatchComputeDType(p.dtype, [&](auto tag) -> absl::Status {
    using T = typename decltype(tag)::type;
    if (vectorized) {
      CombineKernel<T, 8><<<blocks, kThreads, 0, stream>>>(p);
    } else {
      CombineKernel<T, 1><<<blocks, kThreads, 0, stream>>>(p);
    }
    MOE_CUDA_RETURN_IF_LAUNCH_ERROR("CombineKernel");
    return absl::OkStatus();
  });
}

}  // namespace moe::kernels::cuda_internal
