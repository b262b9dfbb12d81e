// Element-type conversion between float32, bfloat16 and float16 on the device.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "moe/kernels/dtype.h"

namespace moe::kernels::cuda_internal {

// dst [rows, dst_ld] (dst_dtype) = src [rows, src_ld] (src_dtype) over columns [0, cols);
// columns past `cols` in dst are left untouched. Round to nearest even; NaN stays NaN.
// Both dtypes among kF32, kBF16, kF16.
absl::Status LaunchConvertRows(cudaStream_t stream, const void* src, DType src_dtype,
                               int64_t src_ld, void* dst, DType dst_dtype, int64_t dst_ld,
                               int64_t rows, int64_t cols);

// dst [count] = normal(0, scale) from a counter-based generator keyed by (seed, index).
absl::Status LaunchFillRandomNormal(cudaStream_t stream, void* dst, DType dtype, int64_t count,
                                    uint64_t seed, float scale);

}  // namespace moe::kernels::cuda_internal
