// Expert GEMMs on cuBLAS. The grouped call takes every active expert's problem at once (one
// launch for all experts, sizes differing per expert); its pointer arrays live on the device.
#include <cublas_v2.h>

#include "compute_types.cuh"
#include "cuda_check.cuh"
#include "expert_gemm.cuh"

namespace moe::kernels::cuda_internal {

// Bytes: (m*k + n*k + n*m) * 2. FLOPs: 2*m*n*k.
absl::Status RunGemm(cublasHandle_t cublas, DType dtype, const GemmProblem& p) {
  if (p.m == 0 || p.n == 0) return absl::OkStatus();
  const cudaDataType_t type = CudaDataType(dtype);
  const float alpha = 1.0f, beta = 0.0f;
  MOE_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, p.m, p.n, p.k, &alpha,
                                          p.weight, type, p.ld_weight, p.input, type, p.ld_input,
                                          &beta, p.output, type, p.ld_output, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

void ExpertGemmRunner::WritePointerArrays(const std::vector<GemmProblem>& problems, int64_t stride,
                                          void** host_pointers) {
  for (size_t i = 0; i < problems.size(); ++i) {
    host_pointers[i] = const_cast<void*>(problems[i].weight);
    host_pointers[stride + i] = const_cast<void*>(problems[i].input);
    host_pointers[2 * stride + i] = problems[i].output;
  }
}

// Bytes: sum over problems of (m*k + n*k + n*m) * 2 — for the expert GEMMs each active
// expert's weights are read once. FLOPs: sum of 2*m*n*k.
absl::Status ExpertGemmRunner::Run(cublasHandle_t cublas, DType dtype,
                                   const std::vector<GemmProblem>& problems,
                                   const void* const* device_pointers, int64_t stride,
                                   CudaExpertGemm mode) {
  if (problems.empty()) return absl::OkStatus();
  if (mode == CudaExpertGemm::kPerExpert || grouped_unsupported_) {
    for (const GemmProblem& p : problems) {
      absl::Status status = RunGemm(cublas, dtype, p);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }
  const size_t count = problems.size();
  trans_a_.assign(count, CUBLAS_OP_T);
  trans_b_.assign(count, CUBLAS_OP_N);
  group_size_.assign(count, 1);
  alpha_.assign(count, 1.0f);
  beta_.assign(count, 0.0f);
  m_.resize(count);
  n_.resize(count);
  k_.resize(count);
  lda_.resize(count);
  ldb_.resize(count);
  ldc_.resize(count);
  for (size_t i = 0; i < count; ++i) {
    m_[i] = problems[i].m;
    n_[i] = problems[i].n;
    k_[i] = problems[i].k;
    lda_[i] = problems[i].ld_weight;
    ldb_[i] = problems[i].ld_input;
    ldc_[i] = problems[i].ld_output;
  }
  const cudaDataType_t type = CudaDataType(dtype);
  const cublasStatus_t status = cublasGemmGroupedBatchedEx(
      cublas, trans_a_.data(), trans_b_.data(), m_.data(), n_.data(), k_.data(), alpha_.data(),
      device_pointers, type, lda_.data(), device_pointers + stride, type, ldb_.data(), beta_.data(),
      const_cast<void* const*>(device_pointers + 2 * stride), type, ldc_.data(),
      static_cast<int>(count), group_size_.data(), CUBLAS_COMPUTE_32F);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    // This cuBLAS/GPU has no grouped kernel for the dtype: use per-problem GEMMs from now on.
    grouped_unsupported_ = true;
    return Run(cublas, dtype, problems, device_pointers, stride, CudaExpertGemm::kPerExpert);
  }
  MOE_CUBLAS_RETURN_IF_ERROR(status);
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda_internal
