// Router GEMM: widen the activations to float32, then one SGEMM (no TF32: the context keeps
// cuBLAS in default math mode, which never lowers float32 precision).
#include "convert.cuh"
#include "cuda_check.cuh"
#include "moe/common/status_macros.h"
#include "router_logits.cuh"

namespace moe::kernels::cuda_internal {

// Bytes: T*d*(2 + 4) widening, then T*d*4 + E*d*4 read and T*E*4 written by the GEMM.
// FLOPs: 2*T*d*E.
absl::Status LaunchRouterLogits(cudaStream_t stream, cublasHandle_t cublas, const void* x,
                                DType dtype, int64_t num_tokens, int64_t hidden_size,
                                const float* router_weight, int64_t num_experts, float* x_f32,
                                float* logits) {
  if (num_tokens == 0) return absl::OkStatus();
  MOE_RETURN_IF_ERROR(LaunchConvertRows(stream, x, dtype, hidden_size, x_f32, DType::kF32,
                                        hidden_size, num_tokens, hidden_size));
  // Column-major view: logits^T [E, T] = W^T(op T of W stored [d, E]) · x^T [d, T].
  const float alpha = 1.0f, beta = 0.0f;
  MOE_CUBLAS_RETURN_IF_ERROR(cublasSgemm(
      cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(num_experts), static_cast<int>(num_tokens),
      static_cast<int>(hidden_size), &alpha, router_weight, static_cast<int>(hidden_size), x_f32,
      static_cast<int>(hidden_size), &beta, logits, static_cast<int>(num_experts)));
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda_internal
