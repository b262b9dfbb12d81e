// The CUDA backend: layers live on one device. MoE-MLP models' forward passes run through the
// CUDA MoE layer (kernels/cuda) on host float32 rows; decoder language models run whole steps
// on the device (decoder/cuda_decoder.cc). Compiled only when the build has CUDA.
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "moe/common/status_macros.h"
#include "moe/kernels/cuda_moe.h"
#include "server/common/logging.h"
#include "server/engine/cuda_backend_internal.h"
#include "server/engine/decoder/cuda_decoder.h"
#include "server/engine/moe_backend.h"

namespace moe::engine {
namespace {

class CudaBackend : public MoEBackend {
 public:
  CudaBackend(std::shared_ptr<SharedCudaContext> shared, int device, kernels::DType compute_dtype,
              std::string description)
      : shared_(std::move(shared)),
        device_(device),
        compute_dtype_(compute_dtype),
        description_(std::move(description)) {}

  BackendKind kind() const override { return BackendKind::kCuda; }
  std::string device_description() const override { return description_; }

  absl::StatusOr<DeviceMemoryUsage> DeviceMemory() const override {
    MOE_ASSIGN_OR_RETURN(const kernels::CudaDeviceInfo info, kernels::GetCudaDeviceInfo(device_));
    return DeviceMemoryUsage{.used_bytes = static_cast<uint64_t>(info.used_memory_bytes()),
                             .total_bytes = static_cast<uint64_t>(info.total_memory_bytes)};
  }

  absl::StatusOr<std::unique_ptr<PreparedMoELayer>> PrepareLayer(
      const kernels::MoELayerWeightsView& host_weights,
      const kernels::RouterConfig& router) override {
    absl::MutexLock lock(&shared_->mu);
    kernels::CudaLayerOptions options;
    options.compute_dtype = compute_dtype_;
    MOE_ASSIGN_OR_RETURN(
        std::unique_ptr<kernels::CudaMoELayer> layer,
        kernels::CudaMoELayer::Upload(*shared_->context, host_weights, router, options));
    return std::make_unique<CudaPreparedLayer>(shared_, std::move(layer), host_weights, router);
  }

  absl::StatusOr<std::unique_ptr<DeviceDecoder>> CreateDeviceDecoder(
      const DeviceDecoderInputs& inputs) override {
    return CreateCudaDecoder(shared_, inputs);
  }

 private:
  std::shared_ptr<SharedCudaContext> shared_;
  int device_;
  kernels::DType compute_dtype_;
  std::string description_;
};

}  // namespace

int CudaDeviceCount(std::string* why_none) { return kernels::CudaDeviceCount(why_none); }

absl::StatusOr<std::unique_ptr<MoEBackend>> CreateCudaBackend(const BackendOptions& options) {
  if (options.cuda_compute_dtype != kernels::DType::kBF16 &&
      options.cuda_compute_dtype != kernels::DType::kF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA compute dtype ", std::string(DTypeName(options.cuda_compute_dtype)),
                     " unsupported (bf16 or f16)"));
  }
  std::string why_none;
  const int count = kernels::CudaDeviceCount(&why_none);
  if (count == 0) {
    return absl::FailedPreconditionError(absl::StrCat("no CUDA device: ", why_none));
  }
  if (options.cuda_device < 0 || options.cuda_device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", options.cuda_device, " does not exist (", count, " present)"));
  }
  auto shared = std::make_shared<SharedCudaContext>();
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<kernels::CudaContext> context,
                       kernels::CudaContext::Create(options.cuda_device));
  std::string description =
      absl::StrCat(context->device_info().Describe(), ", ",
                   options.cuda_compute_dtype == kernels::DType::kBF16 ? "bf16" : "f16");
  {
    absl::MutexLock lock(&shared->mu);
    shared->context = std::move(context);
  }
  return std::make_unique<CudaBackend>(std::move(shared), options.cuda_device,
                                       options.cuda_compute_dtype, std::move(description));
}

}  // namespace moe::engine
