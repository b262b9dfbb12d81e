// Router logits in float32: the router must pick the same experts as the CPU reference.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "moe/kernels/dtype.h"

namespace moe::kernels::cuda_internal {

// logits [T, E] = widen(x [T, d], compute dtype) · router_weight [E, d]^T, float32 GEMM.
// `x_f32` [T, d] is scratch for the widened input (widening bf16/f16 is exact).
absl::Status LaunchRouterLogits(cudaStream_t stream, cublasHandle_t cublas, const void* x,
                                DType dtype, int64_t num_tokens, int64_t hidden_size,
                                const float* router_weight, int64_t num_experts, float* x_f32,
                                float* logits);

}  // namespace moe::kernels::cuda_internal
