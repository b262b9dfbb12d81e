// Activation: one block per row, float32 math on compute-dtype inputs, same formulas as the
// CPU path (silu(x) = x / (1 + e^-x), GeGLU uses the tanh GELU, GELU the erf form).
#include <algorithm>
#include <cstdint>

#include "activation.cuh"
#include "compute_types.cuh"
#include "cuda_check.cuh"

namespace moe::kernels::cuda_internal {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float Silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float GeluTanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float GeluErf(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
}

// Each thread handles kVec consecutive columns of a row.
template <typename T, int kVec>
__global__ void ActivationKernel(ActivationParams p) {
  __shared__ int64_t row_expert;
  const T* h = static_cast<const T*>(p.h);
  T* out = static_cast<T*>(p.out);
  const int64_t f = p.ffn_size;
  const bool gated = p.activation == Activation::kSwiGLU || p.activation == Activation::kGeGLU;
  for (int64_t i = blockIdx.x; i < p.num_rows; i += gridDim.x) {
    const int64_t row = p.row_begin + i;
    const float* bias = nullptr;
    if (p.bias != nullptr) {
      if (threadIdx.x == 0) {
        // The expert whose rows contain `row`: offsets[lo] <= row < offsets[lo + 1] (empty
        // experts share an offset with the next one).
        int lo = 0, hi = p.num_experts;
        while (hi - lo > 1) {
          const int mid = (lo + hi) / 2;
          if (p.expert_offsets[mid] <= row) {
            lo = mid;
          } else {
            hi = mid;
          }
        }
        row_expert = lo;
      }
      __syncthreads();
      bias = p.bias + row_expert * p.bias_ld;
    }
    const T* in = h + row * p.h_ld;
    T* o = out + row * p.out_ld;
    for (int64_t j0 = static_cast<int64_t>(threadIdx.x) * kVec; j0 < f;
         j0 += static_cast<int64_t>(blockDim.x) * kVec) {
      alignas(16) T gate[kVec];
      alignas(16) T up[kVec];
      alignas(16) T result[kVec];
      LoadVec<T, kVec>(in + j0, gate);
      if (gated) LoadVec<T, kVec>(in + f + j0, up);
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        float a = ToFloat(gate[v]);
        if (bias != nullptr) a += bias[j0 + v];
        float r;
        if (gated) {
          float u = ToFloat(up[v]);
          if (bias != nullptr) u += bias[f + j0 + v];
          r = (p.activation == Activation::kSwiGLU ? Silu(a) : GeluTanh(a)) * u;
        } else {
          r = p.activation == Activation::kReLU ? fmaxf(a, 0.0f) : GeluErf(a);
        }
        result[v] = FromFloat<T>(r);
      }
      StoreVec<T, kVec>(result, o + j0);
    }
    if (p.bias != nullptr) __syncthreads();  // row_expert is rewritten for the next row
  }
}

}  // namespace

// Bytes: rows*in_rows*2 read + rows*f*2 written (+ bias reads, L2-resident). FLOPs: ~rows*f*6
// (exp/tanh/erf count as one). Memory-bound.
absl::Status LaunchActivation(cudaStream_t stream, const ActivationParams& p) {
  if (p.num_rows <= 0) return absl::OkStatus();
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(p.num_rows, 65535));
  // 16-byte vectors when every row segment starts 16-byte aligned.
  const bool vectorized = p.ffn_size % 8 == 0 && p.h_ld % 8 == 0 && p.out_ld % 8 == 0 &&
                          reinterpret_cast<uintptr_t>(p.h) % 16 == 0 &&
                          reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
  const int64_t per_row = vectorized ? p.ffn_size / 8 : p.ffn_size;
  const int threads = static_cast<int>(std::min<int64_t>(kThreads, (per_row + 31) / 32 * 32));
  return DispatchComputeDType(p.dtype, [&](auto tag) -> absl::Status {
    using T = typename decltype(tag)::type;
    if (vectorized) {
      ActivationKernel<T, 8><<<blocks, threads, 0, stream>>>(p);
    } else {
      ActivationKernel<T, 1><<<blocks, threads, 0, stream>>>(p);
    }
    MOE_CUDA_RETURN_IF_LAUNCH_ERROR("ActivationKernel");
    return absl::OkStatus();
  });
}

}  // namespace moe::kernels::cuda_internal
