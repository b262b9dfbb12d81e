// Hardware ceilings the benchmark reports achieved fractions of: device-to-device copy
// bandwidth, read-only streaming bandwidth and the dense cuBLAS GEMM rate.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "compute_types.cuh"
#include "cuda_check.cuh"
#include "cuda_context.cuh"
#include "moe/common/status_macros.h"
#include "moe/kernels/cuda_moe.h"

namespace moe::kernels {
namespace {

constexpr int kReadThreads = 256;
constexpr int kReadUnroll = 4;  // independent 16-byte loads in flight per thread

// partials[blockIdx.x] = sum of this block's share of data[count] (grid-stride). The sum is
// written so that the loads cannot be optimised away; its value is not used.
__global__ void __launch_bounds__(kReadThreads)
    ReadReduceKernel(const float4* __restrict__ data, int64_t count, float* partials) {
  __shared__ float warp_sums[kReadThreads / 32];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  float sum = 0.0f;
  for (; i + (kReadUnroll - 1) * stride < count; i += kReadUnroll * stride) {
    float4 v[kReadUnroll];
#pragma unroll
    for (int u = 0; u < kReadUnroll; ++u) v[u] = __ldg(data + i + u * stride);
#pragma unroll
    for (int u = 0; u < kReadUnroll; ++u) sum += (v[u].x + v[u].y) + (v[u].z + v[u].w);
  }
  for (; i < count; i += stride) {
    const float4 v = __ldg(data + i);
    sum += (v.x + v.y) + (v.z + v.w);
  }
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float block_sum = 0.0f;
    for (int w = 0; w < kReadThreads / 32; ++w) block_sum += warp_sums[w];
    partials[blockIdx.x] = block_sum;
  }
}

}  // namespace

// Bytes: buffer_bytes read per repeat (+ 4 bytes written per block). FLOPs: buffer_bytes / 4
// additions, far below the memory time.
absl::StatusOr<ReadBandwidth> MeasureReadBandwidth(CudaContext& context, size_t buffer_bytes,
                                                   int repeats) {
  if (buffer_bytes == 0 || buffer_bytes % 16 != 0 || repeats <= 0) {
    return absl::InvalidArgumentError(
        "read bandwidth: buffer size must be a positive multiple of 16 and repeats positive");
  }
  // Enough resident blocks to keep every SM's load units busy; each thread loops over the rest.
  const int blocks = std::max(1, context.device_info().multiprocessor_count) * 8;
  MOE_ASSIGN_OR_RETURN(DeviceBuffer src, DeviceBuffer::Allocate(context, buffer_bytes));
  MOE_ASSIGN_OR_RETURN(DeviceBuffer partials,
                       DeviceBuffer::Allocate(context, sizeof(float) * blocks));
  MOE_RETURN_IF_ERROR(src.FillBytes(0x3c));  // small finite floats
  cudaStream_t stream = context.impl().stream;
  const int64_t count = static_cast<int64_t>(buffer_bytes / sizeof(float4));
  MOE_ASSIGN_OR_RETURN(std::vector<double> times,
                       TimeOnStreamMs(
                           context,
                           [&]() -> absl::Status {
                             ReadReduceKernel<<<blocks, kReadThreads, 0, stream>>>(
                                 src.as<float4>(), count, partials.as<float>());
                             MOE_CUDA_RETURN_IF_LAUNCH_ERROR("ReadReduceKernel");
                             return absl::OkStatus();
                           },
                           /*warmup=*/3, repeats));
  ReadBandwidth result;
  result.buffer_bytes = buffer_bytes;
  result.median_ms = MedianOf(times);
  result.gigabytes_per_second =
      result.median_ms > 0 ? static_cast<double>(buffer_bytes) / (result.median_ms * 1e6) : 0.0;
  return result;
}

// Bytes: 2 * buffer_bytes per repeat (read + write). No FLOPs.
absl::StatusOr<CopyBandwidth> MeasureCopyBandwidth(CudaContext& context, size_t buffer_bytes,
                                                   int repeats) {
  if (buffer_bytes == 0 || repeats <= 0) {
    return absl::InvalidArgumentError("copy bandwidth: buffer size and repeats must be positive");
  }
  MOE_ASSIGN_OR_RETURN(DeviceBuffer src, DeviceBuffer::Allocate(context, buffer_bytes));
  MOE_ASSIGN_OR_RETURN(DeviceBuffer dst, DeviceBuffer::Allocate(context, buffer_bytes));
  MOE_RETURN_IF_ERROR(src.FillBytes(0x3c));
  cudaStream_t stream = context.impl().stream;
  MOE_ASSIGN_OR_RETURN(std::vector<double> times, TimeOnStreamMs(
                                                      context,
                                                      [&]() -> absl::Status {
                                                        MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
                                                            dst.data(), src.data(), buffer_bytes,
                                                            cudaMemcpyDeviceToDevice, stream));
                                                        return absl::OkStatus();
                                                      },
                                                      /*warmup=*/3, repeats));
  CopyBandwidth result;
  result.buffer_bytes = buffer_bytes;
  result.median_ms = MedianOf(times);
  result.gigabytes_per_second =
      result.median_ms > 0 ? 2.0 * static_cast<double>(buffer_bytes) / (result.median_ms * 1e6)
                           : 0.0;
  return result;
}

// FLOPs: 2 * size^3 per repeat; bytes: 3 * size^2 * 2 (compute-bound).
absl::StatusOr<GemmRate> MeasureDenseGemmRate(CudaContext& context, DType dtype, int64_t size,
                                              int repeats) {
  if (!cuda_internal::IsComputeDType(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GEMM rate: dtype ", std::string(DTypeName(dtype)), " unsupported (BF16 or F16)"));
  }
  if (size <= 0 || size > 65536 || repeats <= 0) {
    return absl::InvalidArgumentError("GEMM rate: size in [1, 65536] and repeats > 0 required");
  }
  const size_t bytes = static_cast<size_t>(size * size) * 2;
  MOE_ASSIGN_OR_RETURN(DeviceBuffer a, DeviceBuffer::Allocate(context, bytes));
  MOE_ASSIGN_OR_RETURN(DeviceBuffer b, DeviceBuffer::Allocate(context, bytes));
  MOE_ASSIGN_OR_RETURN(DeviceBuffer c, DeviceBuffer::Allocate(context, bytes));
  MOE_RETURN_IF_ERROR(FillRandomNormal(context, a.data(), dtype, size * size, 1, 1.0f));
  MOE_RETURN_IF_ERROR(FillRandomNormal(context, b.data(), dtype, size * size, 2, 1.0f));
  CudaContext::Impl& ctx = context.impl();
  const cudaDataType_t type = cuda_internal::CudaDataType(dtype);
  const int n = static_cast<int>(size);
  const float alpha = 1.0f, beta = 0.0f;
  MOE_ASSIGN_OR_RETURN(
      std::vector<double> times,
      TimeOnStreamMs(
          context,
          [&]() -> absl::Status {
            MOE_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
                ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, a.data(), type, n, b.data(),
                type, n, &beta, c.data(), type, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
            return absl::OkStatus();
          },
          /*warmup=*/3, repeats));
  GemmRate result;
  result.size = size;
  result.median_ms = MedianOf(times);
  const double flops = 2.0 * static_cast<double>(size) * size * size;
  result.teraflops = result.median_ms > 0 ? flops / (result.median_ms * 1e9) : 0.0;
  return result;
}

}  // namespace moe::kernels
