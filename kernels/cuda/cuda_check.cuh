// Turns CUDA runtime and cuBLAS failures into absl::Status with the failing expression,
// file:line and the library's error string. A server must report a device error to its caller,
// never abort; exit code 0 proves nothing, so every call and every launch is checked.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe::kernels::cuda_internal {

// The runtime also records a failed call's error as the thread's last error, which the next
// launch check (cudaGetLastError) would report again: a failed allocation would fail the next,
// healthy step. The status returned here is where the error goes, so the record is cleared.
// Sticky errors (a kernel fault) still fail every later call on their own.
inline void ClearLastCudaError() { (void)cudaGetLastError(); }

inline absl::Status CudaErrorStatus(cudaError_t error, const char* expr, const char* file,
                                    int line) {
  ClearLastCudaError();
  std::string message =
      absl::StrCat(file, ":", line, ": ", expr, " failed: ", cudaGetErrorName(error), " (",
                   cudaGetErrorString(error), ")");
  if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  if (error == cudaErrorNoDevice || error == cudaErrorInsufficientDriver) {
    return absl::FailedPreconditionError(message);
  }
  return absl::InternalError(message);
}

inline absl::Status CublasErrorStatus(cublasStatus_t status, const char* expr, const char* file,
                                      int line) {
  ClearLastCudaError();  // cuBLAS's own failed allocations and launches leave one too
  std::string message =
      absl::StrCat(file, ":", line, ": ", expr, " failed: ", cublasGetStatusName(status), " (",
                   cublasGetStatusString(status), ")");
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(message);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) return absl::UnimplementedError(message);
  if (status == CUBLAS_STATUS_INVALID_VALUE) return absl::InvalidArgumentError(message);
  return absl::InternalError(message);
}

}  // namespace moe::kernels::cuda_internal

// Evaluates a cudaError_t expression; returns a Status from the enclosing function on failure.
#define MOE_CUDA_RETURN_IF_ERROR(expr)                                                        \
  do {                                                                                        \
    const cudaError_t moe_cuda_error_ = (expr);                                               \
    if (moe_cuda_error_ != cudaSuccess) {                                                     \
      return ::moe::kernels::cuda_internal::CudaErrorStatus(moe_cuda_error_, #expr, __FILE__, \
                                                            __LINE__);                        \
    }                                                                                         \
  } while (0)

// Same for a cublasStatus_t expression.
#define MOE_CUBLAS_RETURN_IF_ERROR(expr)                                                           \
  do {                                                                                             \
    const cublasStatus_t moe_cublas_status_ = (expr);                                              \
    if (moe_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                             \
      return ::moe::kernels::cuda_internal::CublasErrorStatus(moe_cublas_status_, #expr, __FILE__, \
                                                              __LINE__);                           \
    }                                                                                              \
  } while (0)

// After a kernel launch (`kernel_name` a string literal): reports launch-configuration errors
// and any earlier asynchronous error still pending.
#define MOE_CUDA_RETURN_IF_LAUNCH_ERROR(kernel_name)                      \
  do {                                                                    \
    const cudaError_t moe_cuda_error_ = cudaGetLastError();               \
    if (moe_cuda_error_ != cudaSuccess) {                                 \
      return ::moe::kernels::cuda_internal::CudaErrorStatus(              \
          moe_cuda_error_, "launch of " kernel_name, __FILE__, __LINE__); \
    }                                                                     \
  } while (0)
