// RAII for a CUDA event (timing enabled): stream timing in timing.cu and the per-expert timing
// of a profiling forward pass.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "absl/status/status.h"
#include "cuda_check.cuh"

namespace moe::kernels::cuda_internal {

// Owns one cudaEvent_t, created by Create() on the current device. Movable, not copyable.
class CudaEvent {
 public:
  CudaEvent() = default;
  ~CudaEvent() { Reset(); }
  CudaEvent(CudaEvent&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&& other) noexcept {
    if (this != &other) {
      Reset();
      event_ = std::exchange(other.event_, nullptr);
    }
    return *this;
  }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  absl::Status Create() {
    Reset();
    MOE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&event_));
    return absl::OkStatus();
  }
  cudaEvent_t get() const { return event_; }

 private:
  void Reset() {
    if (event_ != nullptr) (void)cudaEventDestroy(event_);
    event_ = nullptr;
  }

  cudaEvent_t event_ = nullptr;
};

}  // namespace moe::kernels::cuda_internal
