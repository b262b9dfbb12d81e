// RAII device buffers and host<->device float transfers with on-device dtype conversion.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "compute_types.cuh"
#include "convert.cuh"
#include "cuda_check.cuh"
#include "cuda_context.cuh"
#include "moe/common/status_macros.h"
#include "moe/kernels/cuda_moe.h"

namespace moe::kernels {
namespace {

absl::Status CheckFloatDType(DType dtype) {
  if (dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dtype ", std::string(DTypeName(dtype)), " unsupported (F32, BF16 or F16)"));
}

}  // namespace

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(CudaContext& context, size_t bytes) {
  MOE_RETURN_IF_ERROR(context.impl().Activate());
  void* data = nullptr;
  if (bytes > 0) MOE_CUDA_RETURN_IF_ERROR(cudaMalloc(&data, bytes));
  return DeviceBuffer(&context, data, bytes);
}

DeviceBuffer::~DeviceBuffer() { Release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : context_(std::exchange(other.context_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    context_ = std::exchange(other.context_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::Release() {
  if (data_ != nullptr) {
    // Work queued on the context's stream may still use the memory.
    (void)context_->impl().Activate();
    (void)cudaStreamSynchronize(context_->impl().stream);
    (void)cudaFree(data_);
  }
  data_ = nullptr;
  bytes_ = 0;
}

absl::Status DeviceBuffer::CopyFromHost(const void* src, size_t bytes, size_t offset) {
  if (bytes == 0) return absl::OkStatus();
  if (offset > bytes_ || bytes > bytes_ - offset) {
    return absl::OutOfRangeError(absl::StrCat("copy of ", bytes, " bytes at offset ", offset,
                                              " into a device buffer of ", bytes_, " bytes"));
  }
  CudaContext::Impl& ctx = context_->impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(static_cast<char*>(data_) + offset, src, bytes,
                                           cudaMemcpyHostToDevice, ctx.stream));
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream));
  return absl::OkStatus();
}

absl::Status DeviceBuffer::CopyToHost(void* dst, size_t bytes, size_t offset) const {
  if (bytes == 0) return absl::OkStatus();
  if (offset > bytes_ || bytes > bytes_ - offset) {
    return absl::OutOfRangeError(absl::StrCat("copy of ", bytes, " bytes at offset ", offset,
                                              " out of a device buffer of ", bytes_, " bytes"));
  }
  CudaContext::Impl& ctx = context_->impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, static_cast<const char*>(data_) + offset, bytes,
                                           cudaMemcpyDeviceToHost, ctx.stream));
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream));
  return absl::OkStatus();
}

absl::Status DeviceBuffer::FillBytes(uint8_t value) {
  if (bytes_ == 0) return absl::OkStatus();
  CudaContext::Impl& ctx = context_->impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  MOE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(data_, value, bytes_, ctx.stream));
  return absl::OkStatus();
}

absl::Status UploadFloats(CudaContext& context, const float* host, int64_t count, DType dtype,
                          void* device) {
  MOE_RETURN_IF_ERROR(CheckFloatDType(dtype));
  if (count <= 0) return absl::OkStatus();
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  const size_t bytes = static_cast<size_t>(count) * sizeof(float);
  if (dtype == DType::kF32) {
    MOE_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, ctx.stream));
  } else {
    MOE_RETURN_IF_ERROR(ctx.staging.Reserve(bytes, ctx.stream));
    MOE_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(ctx.staging.data(), host, bytes, cudaMemcpyHostToDevice, ctx.stream));
    MOE_RETURN_IF_ERROR(cuda_internal::LaunchConvertRows(
        ctx.stream, ctx.staging.data(), DType::kF32, count, device, dtype, count, 1, count));
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream));
  return absl::OkStatus();
}

absl::Status DownloadFloats(CudaContext& context, const void* device, DType dtype, int64_t count,
                            float* host) {
  MOE_RETURN_IF_ERROR(CheckFloatDType(dtype));
  if (count <= 0) return absl::OkStatus();
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  const size_t bytes = static_cast<size_t>(count) * sizeof(float);
  const void* src = device;
  if (dtype != DType::kF32) {
    MOE_RETURN_IF_ERROR(ctx.staging.Reserve(bytes, ctx.stream));
    MOE_RETURN_IF_ERROR(cuda_internal::LaunchConvertRows(
        ctx.stream, device, dtype, count, ctx.staging.data(), DType::kF32, count, 1, count));
    src = ctx.staging.data();
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, ctx.stream));
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream));
  return absl::OkStatus();
}

absl::Status FillRandomNormal(CudaContext& context, void* device, DType dtype, int64_t count,
                              uint64_t seed, float scale) {
  MOE_RETURN_IF_ERROR(CheckFloatDType(dtype));
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  return cuda_internal::LaunchFillRandomNormal(ctx.stream, device, dtype, count, seed, scale);
}

}  // namespace moe::kernels
