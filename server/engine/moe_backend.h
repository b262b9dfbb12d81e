// One interface over the compute backends. The engine prepares each MoE layer's weights for a
// backend once (copy to device, convert) and then runs forward passes on host float32 rows.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "moe/kernels/moe_layer.h"
#include "server/engine/decoder/device_decoder.h"

namespace moe::engine {

enum class BackendKind { kCpu, kCuda };

std::string_view BackendKindName(BackendKind kind);

// A layer's weights as one backend holds them.
class PreparedMoELayer {
 public:
  virtual ~PreparedMoELayer() = default;

  // Runs the layer on `num_tokens` rows of `input` ([T, d] float32, host). All pointers in
  // `outputs` are host pointers. Thread-compatible: one call at a time per layer object.
  virtual absl::Status Forward(const float* input, int64_t num_tokens,
                               const kernels::MoELayerOutputs& outputs) = 0;

  virtual const kernels::MoELayerWeightsView& host_weights() const = 0;
  virtual const kernels::RouterConfig& router() const = 0;
};

// Memory of the device a backend computes on.
struct DeviceMemoryUsage {
  uint64_t used_bytes = 0;
  uint64_t total_bytes = 0;
};

class MoEBackend {
 public:
  virtual ~MoEBackend() = default;

  virtual BackendKind kind() const = 0;
  // Human-readable device description ("cpu (2 threads, OpenBLAS)", "NVIDIA H100 ...").
  virtual std::string device_description() const = 0;
  // Memory now. CUDA: the device's memory in use (all processes) and its size. CPU: this
  // process's resident memory and the machine's memory. Thread-safe.
  virtual absl::StatusOr<DeviceMemoryUsage> DeviceMemory() const = 0;

  // Prepares a layer. `host_weights` must stay valid for the returned object's lifetime on
  // backends that read weights in place (CPU); device backends copy them.
  virtual absl::StatusOr<std::unique_ptr<PreparedMoELayer>> PrepareLayer(
      const kernels::MoELayerWeightsView& host_weights, const kernels::RouterConfig& router) = 0;

  // Makes a decoder run whole steps on this backend's device, with `inputs.moe_layers` prepared
  // by this backend. Null (the CPU backend) where the dense parts run on the host.
  virtual absl::StatusOr<std::unique_ptr<DeviceDecoder>> CreateDeviceDecoder(
      const DeviceDecoderInputs& inputs) {
    (void)inputs;
    return std::unique_ptr<DeviceDecoder>();
  }
};

enum class BackendChoice { kAuto, kCpu, kCuda };

absl::StatusOr<BackendChoice> ParseBackendChoice(std::string_view text);

struct BackendOptions {
  BackendChoice choice = BackendChoice::kAuto;
  int cuda_device = 0;
  // Activation dtype on the CUDA backend (kBF16 or kF16); the CPU backend computes in float32.
  kernels::DType cuda_compute_dtype = kernels::DType::kBF16;
};

// kAuto picks CUDA when this build has it and a device is present, else the CPU with a log
// line saying why. kCuda without a usable device is an error (FAILED_PRECONDITION).
absl::StatusOr<std::unique_ptr<MoEBackend>> CreateBackend(const BackendOptions& options);

std::unique_ptr<MoEBackend> CreateCpuBackend();
// Defined in cuda_backend.cc when built with CUDA; otherwise returns UNIMPLEMENTED.
absl::StatusOr<std::unique_ptr<MoEBackend>> CreateCudaBackend(const BackendOptions& options);
// Number of usable CUDA devices; 0 when built without CUDA or when the runtime reports none or
// fails (a machine without a driver is not an error).
int CudaDeviceCount(std::string* why_none);

}  // namespace moe::engine
