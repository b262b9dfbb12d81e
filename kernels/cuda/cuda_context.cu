// Devices and the context: device discovery, stream, cuBLAS/cuBLASLt handles, scratch arenas.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cuda_check.cuh"
#include "cuda_context.cuh"
#include "moe/common/status_macros.h"
#include "moe/kernels/cuda_moe.h"

namespace moe::kernels {
namespace {

// cuBLAS workspace per context; 32 MiB is what cuBLAS recommends for Hopper.
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

#ifndef MOE_CUDA_ARCHITECTURES
#define MOE_CUDA_ARCHITECTURES "unknown"
#endif

// Compiled for the same architectures as every other kernel of this library (one target, one
// CMAKE_CUDA_ARCHITECTURES), so whether the device can load it says whether it can run them.
__global__ void KernelImageProbe() {}

// FAILED_PRECONDITION naming the device when this build holds neither machine code for the
// current device's architecture nor PTX it can compile; without this check every launch would
// fail later with "no kernel image is available". Call with the device current.
absl::Status CheckKernelImage(const CudaDeviceInfo& info) {
  cudaFuncAttributes attributes{};
  const cudaError_t error =
      cudaFuncGetAttributes(&attributes, reinterpret_cast<const void*>(&KernelImageProbe));
  if (error == cudaSuccess) return absl::OkStatus();
  (void)cudaGetLastError();  // not sticky; clear it for later calls
  if (error == cudaErrorNoKernelImageForDevice || error == cudaErrorInvalidDeviceFunction ||
      error == cudaErrorInvalidPtx || error == cudaErrorUnsupportedPtxVersion) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "CUDA device %d (%s) has compute capability %d.%d, but this build's kernels were "
        "compiled for CUDA architectures %s only (%s); rebuild with "
        "-DCMAKE_CUDA_ARCHITECTURES=%d%d (or add it to the list)",
        info.index, info.name, info.compute_capability_major, info.compute_capability_minor,
        MOE_CUDA_ARCHITECTURES, cudaGetErrorName(error), info.compute_capability_major,
        info.compute_capability_minor));
  }
  return cuda_internal::CudaErrorStatus(error, "cudaFuncGetAttributes(KernelImageProbe)", __FILE__,
                                        __LINE__);
}

}  // namespace

const char* CudaBuildArchitectures() { return MOE_CUDA_ARCHITECTURES; }

int CudaDeviceCount(std::string* why_none) {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    // No driver, no device, or a driver older than the runtime: report, clear, go on.
    if (why_none != nullptr) {
      *why_none = absl::StrCat("cudaGetDeviceCount: ", cudaGetErrorName(error), " (",
                               cudaGetErrorString(error), ")");
    }
    (void)cudaGetLastError();
    return 0;
  }
  if (count == 0 && why_none != nullptr) *why_none = "the CUDA runtime reports no devices";
  return count;
}

std::string CudaDeviceInfo::Describe() const {
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  return absl::StrFormat("%s (sm_%d%d, %d SMs, %.1f/%.1f GiB used)", name, compute_capability_major,
                         compute_capability_minor, multiprocessor_count, used_memory_bytes() / kGiB,
                         total_memory_bytes / kGiB);
}

absl::StatusOr<CudaDeviceInfo> GetCudaDeviceInfo(int device) {
  std::string why;
  const int count = CudaDeviceCount(&why);
  if (count == 0) return absl::FailedPreconditionError(absl::StrCat("no CUDA device: ", why));
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", device, " does not exist (", count, " present)"));
  }
  cudaDeviceProp props{};
  MOE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&props, device));
  int previous = 0;
  MOE_CUDA_RETURN_IF_ERROR(cudaGetDevice(&previous));
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t mem_error = cudaMemGetInfo(&free_bytes, &total_bytes);
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(previous));
  MOE_CUDA_RETURN_IF_ERROR(mem_error);
  CudaDeviceInfo info;
  info.index = device;
  info.name = props.name;
  info.compute_capability_major = props.major;
  info.compute_capability_minor = props.minor;
  info.multiprocessor_count = props.multiProcessorCount;
  info.max_shared_memory_per_block_optin = static_cast<int64_t>(props.sharedMemPerBlockOptin);
  info.total_memory_bytes = static_cast<int64_t>(total_bytes);
  info.free_memory_bytes = static_cast<int64_t>(free_bytes);
  return info;
}

namespace cuda_internal {

StreamArena::~StreamArena() { Release(); }

void StreamArena::Release() {
  if (data_ == nullptr) return;
  (void)cudaFreeAsync(data_, stream_);
  (void)cudaStreamSynchronize(stream_);
  data_ = nullptr;
  capacity_ = 0;
}

absl::Status StreamArena::Reserve(size_t bytes, cudaStream_t stream) {
  if (bytes <= capacity_ && stream == stream_) return absl::OkStatus();
  // Grow by at least 1/4 so that slowly rising batch sizes do not reallocate every call.
  const size_t grown = std::max(bytes, capacity_ + capacity_ / 4);
  if (data_ != nullptr) {
    MOE_CUDA_RETURN_IF_ERROR(cudaFreeAsync(data_, stream_));
    data_ = nullptr;
    capacity_ = 0;
  }
  void* data = nullptr;
  MOE_CUDA_RETURN_IF_ERROR(cudaMallocAsync(&data, std::max<size_t>(grown, 256), stream));
  data_ = static_cast<char*>(data);
  capacity_ = std::max<size_t>(grown, 256);
  stream_ = stream;
  return absl::OkStatus();
}

}  // namespace cuda_internal

CudaContext::Impl::~Impl() {
  (void)cudaSetDevice(device);
  if (stream != nullptr) (void)cudaStreamSynchronize(stream);
  scratch.Release();  // before the stream they are ordered on goes away
  staging.Release();
  if (cublas_lt != nullptr) (void)cublasLtDestroy(cublas_lt);
  if (cublas != nullptr) (void)cublasDestroy(cublas);
  if (cublas_workspace != nullptr) (void)cudaFree(cublas_workspace);
  if (pinned != nullptr) (void)cudaFreeHost(pinned);
  if (stream != nullptr) (void)cudaStreamDestroy(stream);
}

absl::Status CudaContext::Impl::Activate() const {
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  return absl::OkStatus();
}

absl::Status CudaContext::Impl::ReservePinned(size_t bytes) {
  if (bytes <= pinned_bytes) return absl::OkStatus();
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  if (pinned != nullptr) {
    MOE_CUDA_RETURN_IF_ERROR(cudaFreeHost(pinned));
    pinned = nullptr;
    pinned_bytes = 0;
  }
  const size_t grown = std::max(bytes, size_t{64} << 10);
  MOE_CUDA_RETURN_IF_ERROR(cudaMallocHost(&pinned, grown));
  pinned_bytes = grown;
  return absl::OkStatus();
}

CudaContext::CudaContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaContext::~CudaContext() = default;

absl::StatusOr<std::unique_ptr<CudaContext>> CudaContext::Create(int device) {
  MOE_ASSIGN_OR_RETURN(CudaDeviceInfo info, GetCudaDeviceInfo(device));
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  impl->info = std::move(info);
  MOE_RETURN_IF_ERROR(impl->Activate());
  MOE_RETURN_IF_ERROR(CheckKernelImage(impl->info));
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  MOE_CUBLAS_RETURN_IF_ERROR(cublasCreate(&impl->cublas));
  MOE_CUBLAS_RETURN_IF_ERROR(cublasSetStream(impl->cublas, impl->stream));
  // Default math: float32 GEMMs (the router) stay float32, never TF32.
  MOE_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(impl->cublas, CUBLAS_DEFAULT_MATH));
  MOE_CUBLAS_RETURN_IF_ERROR(cublasSetPointerMode(impl->cublas, CUBLAS_POINTER_MODE_HOST));
  MOE_CUDA_RETURN_IF_ERROR(cudaMalloc(&impl->cublas_workspace, kCublasWorkspaceBytes));
  impl->cublas_workspace_bytes = kCublasWorkspaceBytes;
  MOE_CUBLAS_RETURN_IF_ERROR(
      cublasSetWorkspace(impl->cublas, impl->cublas_workspace, impl->cublas_workspace_bytes));
  MOE_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&impl->cublas_lt));
  return std::unique_ptr<CudaContext>(new CudaContext(std::move(impl)));
}

int CudaContext::device() const { return impl_->device; }
const CudaDeviceInfo& CudaContext::device_info() const { return impl_->info; }
void* CudaContext::stream_handle() const { return impl_->stream; }

absl::Status CudaContext::Synchronize() {
  MOE_RETURN_IF_ERROR(impl_->Activate());
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl_->stream));
  return absl::OkStatus();
}

}  // namespace moe::kernels
