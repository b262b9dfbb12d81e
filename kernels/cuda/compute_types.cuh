// Device element types of the compute dtypes and the one place that maps our DType onto them.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <library_types.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "moe/kernels/dtype.h"

namespace moe::kernels::cuda_internal {

template <typename T>
struct TypeTag {
  using type = T;
};

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}

// Copies kVec consecutive elements; with kVec * sizeof(T) == 16 as one 16-byte access (the
// caller guarantees 16-byte alignment).
template <typename T, int kVec>
__device__ __forceinline__ void LoadVec(const T* src, T (&dst)[kVec]) {
  if constexpr (kVec * sizeof(T) == 16) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) dst[i] = src[i];
  }
}

template <typename T, int kVec>
__device__ __forceinline__ void StoreVec(const T (&src)[kVec], T* dst) {
  if constexpr (kVec * sizeof(T) == 16) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) dst[i] = src[i];
  }
}

inline bool IsComputeDType(DType dtype) { return dtype == DType::kBF16 || dtype == DType::kF16; }

inline cudaDataType_t CudaDataType(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

// Calls fn(TypeTag<T>{}) with T the device type of a compute dtype (kBF16, kF16).
template <typename Fn>
absl::Status DispatchComputeDType(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kBF16:
      return fn(TypeTag<__nv_bfloat16>{});
    case DType::kF16:
      return fn(TypeTag<__half>{});
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "CUDA compute dtype ", std::string(DTypeName(dtype)), " unsupported (BF16 or F16)"));
  }
}

// Calls fn(TypeTag<T>{}) with T the device type of a storage dtype (kF32, kBF16, kF16).
template <typename Fn>
absl::Status DispatchFloatDType(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32:
      return fn(TypeTag<float>{});
    case DType::kBF16:
      return fn(TypeTag<__nv_bfloat16>{});
    case DType::kF16:
      return fn(TypeTag<__half>{});
    default:
      return absl::InvalidArgumentError(absl::StrCat("dtype ", std::string(DTypeName(dtype)),
                                                     " unsupported here (F32, BF16 or F16)"));
  }
}

// Row pitch, in elements, that makes every row of a 2-byte matrix start on a 16-byte boundary:
// cuBLAS's grouped GEMM requires aligned pointers and tensor-core kernels want them.
inline int64_t PaddedLd(int64_t cols) { return (cols + 7) / 8 * 8; }

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace moe::kernels::cuda_internal
