#include "bench/backend_cpu.h"

#include <omp.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/ceilings_cpu.h"
#include "bench/host_layer.h"
#include "bench/random_fill.h"
#include "bench/report.h"
#include "moe/kernels/cpu_moe.h"

namespace moe::bench {
namespace {

using kernels::DType;

std::string CpuModelName() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

// Host bytes of one forward pass over `tokens` beyond the weights: input, output, logits,
// routing, permuted rows in and out, one expert's hidden activations, the naive loop's
// per-expert copies, and the half-precision widening scratch (~4 MiB).
int64_t ActivationBytes(const MoEShape& s, int64_t tokens) {
  const int64_t assignments = tokens * s.top_k;
  const int64_t floats = 2 * tokens * s.hidden + tokens * s.experts + 2 * assignments * s.hidden +
                         tokens * 2 * s.ffn + tokens * (2 * s.hidden + 2 * s.ffn);
  return floats * 4 + assignments * 24 + (int64_t{8} << 20);
}

class CpuBackend final : public BenchBackend {
 public:
  std::string Name() const override { return "cpu"; }

  // The layer runs on one OpenMP team (BLAS single-threaded inside its tasks), so the OpenMP
  // thread count is the parallelism the figures had.
  std::string Description() const override {
    return absl::StrCat(CpuModelName(), ", ", omp_get_num_procs(), " logical CPUs, ",
                        omp_get_max_threads(), " OpenMP threads");
  }

  absl::Status CheckFits(const MoEShape& shape, DType dtype, int64_t max_tokens,
                         const CeilingOptions& requested) const override {
    const CeilingOptions ceilings = ResolveCpuCeilingOptions(requested);
    const int64_t weights = LayerWeightBytes(shape, dtype);
    // The ceilings run one after another, before the layer is created and after it is freed.
    const int64_t needed =
        std::max({weights + ActivationBytes(shape, max_tokens), 2 * ceilings.copy_bytes,
                  ceilings.read_bytes, 3 * ceilings.gemm_size * ceilings.gemm_size * 4});
    const std::optional<int64_t> available = AvailableHostMemory();
    if (available.has_value() && needed > *available) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%s (d=%d f=%d E=%d) in %s at T=%d needs about %.2f GB of host memory (weights %.2f "
          "GB), but only %.2f GB is available",
          shape.name, shape.hidden, shape.ffn, shape.experts, DTypeLabel(dtype), max_tokens,
          needed * 1e-9, weights * 1e-9, *available * 1e-9));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Ceilings> MeasureCeilings(const CeilingOptions& options) override {
    return MeasureCpuCeilings(options);
  }

  absl::Status PrepareLayer(const MoEShape& shape, DType dtype, uint64_t seed) override {
    layer_.reset();  // free the previous layer before allocating the next
    absl::StatusOr<std::unique_ptr<HostMoELayer>> layer = HostMoELayer::Create(shape, dtype, seed);
    if (!layer.ok()) return layer.status();
    layer_ = *std::move(layer);
    return absl::OkStatus();
  }

  void ReleaseLayer() override { layer_.reset(); }

  absl::StatusOr<CaseResult> Run(int64_t tokens, const RunOptions& options) override {
    if (layer_ == nullptr) return absl::FailedPreconditionError("no layer prepared");
    const MoEShape& shape = layer_->shape();
    const kernels::MoELayerWeightsView& weights = layer_->view();
    const kernels::RouterConfig router = layer_->router();

    std::vector<float> input(static_cast<size_t>(tokens * shape.hidden));
    FillUniform(DType::kF32, input.data(), tokens * shape.hidden, 1.0f, options.seed);
    std::vector<float> output(static_cast<size_t>(tokens * shape.hidden));
    CaseResult result;
    result.expert_token_counts.assign(static_cast<size_t>(shape.experts), 0);
    kernels::MoELayerOutputs outputs;
    outputs.output = output.data();
    outputs.expert_token_counts = result.expert_token_counts.data();

    kernels::CpuMoEWorkspace workspace;
    auto fast = [&]() {
      return kernels::MoEForwardCpu(weights, router, input.data(), tokens, outputs, &workspace);
    };
    absl::StatusOr<TimingStats> fast_stats =
        Measure(HostTimed(fast), options.warmup, options.repeats);
    if (!fast_stats.ok()) return fast_stats.status();
    result.fast = *fast_stats;

    if (options.expert_timing) {
      result.expert_seconds.assign(static_cast<size_t>(shape.experts), 0.0);
      kernels::MoELayerOutputs profiled_outputs = outputs;
      profiled_outputs.expert_seconds = result.expert_seconds.data();
      auto profiled = [&]() {
        return kernels::MoEForwardCpu(weights, router, input.data(), tokens, profiled_outputs,
                                      &workspace);
      };
      absl::StatusOr<TimingStats> profiled_stats =
          Measure(HostTimed(profiled), options.warmup, options.repeats);
      if (!profiled_stats.ok()) return profiled_stats.status();
      result.profiled = *profiled_stats;
    }

    if (options.naive) {
      std::vector<int64_t> naive_counts(static_cast<size_t>(shape.experts), 0);
      kernels::MoELayerOutputs naive_outputs = outputs;
      naive_outputs.expert_token_counts = naive_counts.data();
      kernels::CpuMoEWorkspace naive_workspace;
      auto naive = [&]() {
        return kernels::MoEForwardNaiveLoopCpu(weights, router, input.data(), tokens, naive_outputs,
                                               &naive_workspace);
      };
      absl::StatusOr<TimingStats> naive_stats =
          Measure(HostTimed(naive), options.warmup, options.repeats);
      if (!naive_stats.ok()) return naive_stats.status();
      if (naive_counts != result.expert_token_counts) {
        return absl::InternalError("naive loop routed tokens differently from the fast path");
      }
      result.naive = *naive_stats;
    }
    return result;
  }

 private:
  std::unique_ptr<HostMoELayer> layer_;
};

}  // namespace

std::optional<int64_t> AvailableHostMemory() {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    // "MemAvailable:   23456789 kB"
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream fields(line.substr(13));
    int64_t value_kb = 0;
    if (fields >> value_kb) return value_kb * 1024;
  }
  return std::nullopt;
}

std::optional<double> HostLoadAverage() {
  std::ifstream loadavg("/proc/loadavg");
  double one_minute = 0.0;
  if (loadavg >> one_minute) return one_minute;
  return std::nullopt;
}

std::unique_ptr<BenchBackend> MakeCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace moe::bench
