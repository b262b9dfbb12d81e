// The CPU backend: weights stay where the loader put them (host memory, checkpoint dtype);
// each prepared layer owns its scratch workspace.
#include <cblas.h>
#include <omp.h>

#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "moe/common/status_macros.h"
#include "moe/kernels/cpu_moe.h"
#include "server/engine/moe_backend.h"

namespace moe::engine {
namespace {

class CpuMoELayer final : public PreparedMoELayer {
 public:
  CpuMoELayer(const kernels::MoELayerWeightsView& weights, const kernels::RouterConfig& router)
      : weights_(weights), router_(router) {}

  absl::Status Forward(const float* input, int64_t num_tokens,
                       const kernels::MoELayerOutputs& outputs) override {
    return kernels::MoEForwardCpu(weights_, router_, input, num_tokens, outputs, &workspace_);
  }
  const kernels::MoELayerWeightsView& host_weights() const override { return weights_; }
  const kernels::RouterConfig& router() const override { return router_; }

 private:
  kernels::MoELayerWeightsView weights_;
  kernels::RouterConfig router_;
  kernels::CpuMoEWorkspace workspace_;
};

class CpuBackend final : public MoEBackend {
 public:
  BackendKind kind() const override { return BackendKind::kCpu; }

  std::string device_description() const override {
    // The layer runs on one OpenMP team with BLAS single-threaded inside it.
    return absl::StrCat("cpu (", omp_get_max_threads(), " threads, ", openblas_get_config(), ")");
  }

  absl::StatusOr<DeviceMemoryUsage> DeviceMemory() const override {
    // /proc/self/statm: total program size, then resident pages.
    std::ifstream statm("/proc/self/statm");
    uint64_t size_pages = 0;
    uint64_t resident_pages = 0;
    if (!(statm >> size_pages >> resident_pages)) {
      return absl::UnavailableError("cannot read /proc/self/statm");
    }
    const long page = sysconf(_SC_PAGESIZE);
    const long pages = sysconf(_SC_PHYS_PAGES);
    if (page <= 0 || pages <= 0)
      return absl::UnavailableError("sysconf cannot tell the memory size");
    return DeviceMemoryUsage{
        .used_bytes = resident_pages * static_cast<uint64_t>(page),
        .total_bytes = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page)};
  }

  absl::StatusOr<std::unique_ptr<PreparedMoELayer>> PrepareLayer(
      const kernels::MoELayerWeightsView& host_weights,
      const kernels::RouterConfig& router) override {
    MOE_RETURN_IF_ERROR(kernels::ValidateMoELayer(host_weights, router));
    return std::make_unique<CpuMoELayer>(host_weights, router);
  }
};

}  // namespace

std::unique_ptr<MoEBackend> CreateCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace moe::engine
