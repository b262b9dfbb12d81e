// What the CUDA backend shares with the CUDA decoder (decoder/cuda_decoder.cc): the device
// context, and the layers prepared on it. CUDA builds only.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "moe/common/status_macros.h"
#include "moe/kernels/cuda_moe.h"
#include "server/common/logging.h"
#include "server/engine/moe_backend.h"

namespace moe::engine {

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

  // The device layer, for the CUDA decoder, which runs it on device rows under shared()->mu.
  kernels::CudaMoELayer& device_layer() { return *layer_; }
  const std::shared_ptr<SharedCudaContext>& shared() const { return shared_; }

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

}  // namespace moe::engine
