// The expert GEMMs: many independent problems of the form out = in · W^T, run as one cuBLAS
// grouped GEMM or as a loop of cublasGemmEx calls.
#pragma once

#include <cublas_v2.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "moe/kernels/cuda_moe.h"
#include "moe/kernels/dtype.h"

namespace moe::kernels::cuda_internal {

// Row-major: output [n, ld_output] (columns [0, m)) = input [n, ld_input] (columns [0, k)) ·
// weight^T, weight [m, ld_weight] (columns [0, k)). All in the compute dtype, float32
// accumulation. In cuBLAS's column-major terms: C[m, n] = op_T(A)[m, k] · B[k, n].
struct GemmProblem {
  const void* weight = nullptr;
  const void* input = nullptr;
  void* output = nullptr;
  int m = 0, n = 0, k = 0;
  int ld_weight = 0, ld_input = 0, ld_output = 0;
};

// One problem with cublasGemmEx (CUBLAS_COMPUTE_32F).
absl::Status RunGemm(cublasHandle_t cublas, DType dtype, const GemmProblem& problem);

// Runs many problems. Keeps the per-group argument arrays between calls, so steady-state calls
// allocate nothing. Not thread-safe.
class ExpertGemmRunner {
 public:
  // Writes the problems' pointers as three arrays (weights, inputs, outputs), each `stride`
  // long, into `host_pointers` [3 * stride]: the layout kGrouped expects on the device.
  static void WritePointerArrays(const std::vector<GemmProblem>& problems, int64_t stride,
                                 void** host_pointers);

  // kGrouped: one cublasGemmGroupedBatchedEx with each problem its own group; needs
  // `device_pointers` [3 * stride], a device copy of WritePointerArrays' output.
  // kPerExpert: one cublasGemmEx per problem (device_pointers unused). Where cuBLAS reports the
  // grouped call unsupported (CUBLAS_STATUS_NOT_SUPPORTED), kGrouped falls back to kPerExpert
  // for this runner's lifetime.
  absl::Status Run(cublasHandle_t cublas, DType dtype, const std::vector<GemmProblem>& problems,
                   const void* const* device_pointers, int64_t stride, CudaExpertGemm mode);

  // Whether the grouped call was found unsupported (every kGrouped request now runs per problem).
  bool grouped_unsupported() const { return grouped_unsupported_; }

 private:
  std::vector<cublasOperation_t> trans_a_, trans_b_;
  std::vector<int> m_, n_, k_, lda_, ldb_, ldc_, group_size_;
  std::vector<float> alpha_, beta_;
  bool grouped_unsupported_ = false;
};

}  // namespace moe::kernels::cuda_internal
