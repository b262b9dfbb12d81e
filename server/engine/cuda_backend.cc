// The CUDA backend: layers live on one device, forward passes run through the CUDA MoE layer
// (kernels/cuda) on host float32 rows. Compiled only when the build has CUDA.
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
#include "server/engine/moe_backend.h"

namespace moe::engine {
namespace {

// One device context shared by the backend and every layer prepared on it: layers may outlive
// the backend object, and forward passes of different layers must not interleave on the
// context's stream and scratch memory.
struct SharedCudaContext {
  absl::Mutex mu;
  std::unique_ptr<kernels::CudaContext> context ABSL_PT_GUARDED_BY(mu);
};

class CudaPreparedLayer : public PreparedMoELayer {
 public:
  CudaPreparedLayer(std::shared_ptr<SharedCudaContext> shared,
                    std::unique_ptr<kernels::CudaMoELayer> layer,
                    const kernels::MoELayerWeightsView& host_weights,
                    const kernels::RouterConfig& router)
      : shared_(std::move(shared)),
        layer_(std::move(layer)),
        host_weights_(host_weights),
        router_(router) {}

  ~CudaPreparedLayer() override {
    absl::MutexLock lock(&shared_->mu);
    layer_.reset();  // frees device memory while the context is alive
  }

  absl::Status Forward(const float* input, int64_t num_tokens,
                       const kernels::MoELayerOutputs& outputs) override {
    absl::MutexLock lock(&shared_->mu);
    MOE_RETURN_IF_ERROR(layer_->ForwardHost(input, num_tokens, outputs));
    if (!fallback_logged_ && layer_->grouped_gemm_unsupported()) {
      fallback_logged_ = true;
      common::LogWarning("cuda_grouped_gemm_fallback",
                         {{"path", "per_expert"},
                          {"reason", "cuBLAS reports cublasGemmGroupedBatchedEx unsupported"}});
    }
    return absl::OkStatus();
  }

  // The caller's host view (the device copy is private); its pointers are valid as long as the
  // caller keeps the host weights.
  const kernels::MoELayerWeightsView& host_weights() const override { return host_weights_; }
  const kernels::RouterConfig& router() const override { return router_; }

 private:
  std::shared_ptr<SharedCudaContext> shared_;
  std::unique_ptr<kernels::CudaMoELayer> layer_;
  kernels::MoELayerWeightsView host_weights_;
  kernels::RouterConfig router_;
  bool fallback_logged_ = false;
};

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
