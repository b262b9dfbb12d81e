#include "bench/backend_cuda.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/backend_cpu.h"
#include "bench/host_layer.h"
#include "bench/report.h"
#include "moe/kernels/cuda_moe.h"

namespace moe::bench {
namespace {

using kernels::CudaContext;
using kernels::CudaMoELayer;
using kernels::DeviceBuffer;
using kernels::DType;

constexpr int64_t kDefaultGemmSize = 8192;
constexpr int64_t kDefaultCopyBytes = int64_t{1} << 30;
constexpr int64_t kDefaultReadBytes = int64_t{1} << 30;

class CudaBackend final : public BenchBackend {
 public:
  explicit CudaBackend(std::unique_ptr<CudaContext> context) : context_(std::move(context)) {}

  std::string Name() const override { return "cuda"; }
  std::string Description() const override { return context_->device_info().Describe(); }

  absl::Status CheckFits(const MoEShape& shape, DType dtype, int64_t max_tokens,
                         const CeilingOptions& ceilings) const override {
    if (dtype != DType::kBF16 && dtype != DType::kF16) {
      return absl::InvalidArgumentError(absl::StrCat("--dtype=", DTypeLabel(dtype),
                                                     ": the CUDA backend computes in bf16 or f16"));
    }
    // Device: weights, x and y in the compute dtype, the scratch arena (permuted rows, gate|up
    // activations, router logits; about T*k*(2d + 2f)*2 + T*E*4 bytes) and the ceilings' buffers
    // (freed before the layer is created).
    const int64_t weights = LayerWeightBytes(shape, dtype);
    const int64_t assignments = max_tokens * shape.top_k;
    const int64_t activations = 2 * max_tokens * shape.hidden * 2 +
                                assignments * (2 * shape.hidden + 3 * shape.ffn) * 2 +
                                max_tokens * shape.experts * 4 + assignments * 32;
    const int64_t gemm = ceilings.gemm_size > 0 ? ceilings.gemm_size : kDefaultGemmSize;
    const int64_t copy = ceilings.copy_bytes > 0 ? ceilings.copy_bytes : kDefaultCopyBytes;
    const int64_t read = ceilings.read_bytes > 0 ? ceilings.read_bytes : kDefaultReadBytes;
    const int64_t needed = std::max(
        {weights + activations + (int64_t{256} << 20), 2 * copy, read, 3 * gemm * gemm * 2});
    const int64_t available = context_->device_info().free_memory_bytes;
    if (needed > available) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%s (d=%d f=%d E=%d) in %s at T=%d needs about %.2f GB of device memory (weights %.2f "
          "GB), but only %.2f GB is free on %s",
          shape.name, shape.hidden, shape.ffn, shape.experts, DTypeLabel(dtype), max_tokens,
          needed * 1e-9, weights * 1e-9, available * 1e-9, Description()));
    }
    // The weights are generated on the host first.
    const std::optional<int64_t> host = AvailableHostMemory();
    if (host.has_value() && weights > *host) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%s in %s: generating %.2f GB of weights on the host, but only %.2f GB is available",
          shape.name, DTypeLabel(dtype), weights * 1e-9, *host * 1e-9));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Ceilings> MeasureCeilings(const CeilingOptions& options) override {
    const int64_t gemm_size = options.gemm_size > 0 ? options.gemm_size : kDefaultGemmSize;
    const int64_t copy_bytes = options.copy_bytes > 0 ? options.copy_bytes : kDefaultCopyBytes;
    const int64_t read_bytes = options.read_bytes > 0 ? options.read_bytes : kDefaultReadBytes;
    const int repeats = std::max(options.repeats, 20);
    Ceilings ceilings;
    absl::StatusOr<kernels::CopyBandwidth> copy =
        kernels::MeasureCopyBandwidth(*context_, static_cast<size_t>(copy_bytes), repeats);
    if (!copy.ok()) return copy.status();
    ceilings.copy_gbps = copy->gigabytes_per_second;
    ceilings.copy_method = absl::StrCat(
        "device-to-device cudaMemcpyAsync ", copy_bytes >> 20,
        " MiB, (read + write bytes) / time as STREAM Copy counts, median of ", repeats);
    absl::StatusOr<kernels::ReadBandwidth> read =
        kernels::MeasureReadBandwidth(*context_, static_cast<size_t>(read_bytes), repeats);
    if (!read.ok()) return read.status();
    ceilings.read_gbps = read->gigabytes_per_second;
    ceilings.read_method =
        absl::StrCat("read-and-sum kernel over ", read_bytes >> 20,
                     " MiB in 16-byte loads, bytes read / time, median of ", repeats);
    absl::StatusOr<kernels::GemmRate> gemm =
        kernels::MeasureDenseGemmRate(*context_, options.dtype, gemm_size, repeats);
    if (!gemm.ok()) return gemm.status();
    ceilings.dense_gemm_tflops = gemm->teraflops;
    ceilings.dense_gemm_method =
        absl::StrCat("cublasGemmEx ", gemm_size, "x", gemm_size, "x", gemm_size, " ",
                     DTypeLabel(options.dtype), " with f32 accumulation, median of ", repeats);
    return ceilings;
  }

  absl::Status PrepareLayer(const MoEShape& shape, DType dtype, uint64_t seed) override {
    layer_.reset();
    absl::StatusOr<std::unique_ptr<HostMoELayer>> host = HostMoELayer::Create(shape, dtype, seed);
    if (!host.ok()) return host.status();
    kernels::CudaLayerOptions options;
    options.compute_dtype = dtype;
    absl::StatusOr<std::unique_ptr<CudaMoELayer>> layer =
        CudaMoELayer::Upload(*context_, (*host)->view(), (*host)->router(), options);
    if (!layer.ok()) return layer.status();
    layer_ = *std::move(layer);
    shape_ = shape;
    dtype_ = dtype;
    return absl::OkStatus();
  }

  void ReleaseLayer() override { layer_.reset(); }

  absl::StatusOr<CaseResult> Run(int64_t tokens, const RunOptions& options) override {
    if (layer_ == nullptr) return absl::FailedPreconditionError("no layer prepared");
    const size_t elem = kernels::DTypeSize(dtype_);
    const size_t act_bytes = static_cast<size_t>(tokens * shape_.hidden) * elem;
    absl::StatusOr<DeviceBuffer> x = DeviceBuffer::Allocate(*context_, act_bytes);
    if (!x.ok()) return x.status();
    absl::StatusOr<DeviceBuffer> y = DeviceBuffer::Allocate(*context_, act_bytes);
    if (!y.ok()) return y.status();
    if (absl::Status status = kernels::FillRandomNormal(*context_, x->data(), dtype_,
                                                        tokens * shape_.hidden, options.seed);
        !status.ok()) {
      return status;
    }
    CaseResult result;
    result.expert_token_counts.assign(static_cast<size_t>(shape_.experts), 0);
    kernels::CudaMoEOutputs outputs;
    outputs.output = y->data();
    outputs.host_expert_token_counts = result.expert_token_counts.data();

    auto fast = [&]() { return layer_->Forward(x->data(), tokens, outputs); };
    absl::StatusOr<std::vector<double>> fast_ms =
        kernels::TimeOnStreamMs(*context_, fast, options.warmup, options.repeats);
    if (!fast_ms.ok()) return fast_ms.status();
    result.fast = Summarize(*std::move(fast_ms));

    if (options.expert_timing) {
      result.expert_seconds.assign(static_cast<size_t>(shape_.experts), 0.0);
      kernels::CudaMoEOutputs profiled_outputs = outputs;
      profiled_outputs.host_expert_seconds = result.expert_seconds.data();
      auto profiled = [&]() { return layer_->Forward(x->data(), tokens, profiled_outputs); };
      absl::StatusOr<std::vector<double>> profiled_ms =
          kernels::TimeOnStreamMs(*context_, profiled, options.warmup, options.repeats);
      if (!profiled_ms.ok()) return profiled_ms.status();
      result.profiled = Summarize(*std::move(profiled_ms));
    }

    if (options.naive) {
      std::vector<int64_t> naive_counts(static_cast<size_t>(shape_.experts), 0);
      kernels::CudaMoEOutputs naive_outputs = outputs;
      naive_outputs.host_expert_token_counts = naive_counts.data();
      auto naive = [&]() { return layer_->ForwardNaiveLoop(x->data(), tokens, naive_outputs); };
      absl::StatusOr<std::vector<double>> naive_ms =
          kernels::TimeOnStreamMs(*context_, naive, options.warmup, options.repeats);
      if (!naive_ms.ok()) return naive_ms.status();
      result.naive = Summarize(*std::move(naive_ms));
    }
    return result;
  }

 private:
  std::unique_ptr<CudaContext> context_;
  std::unique_ptr<CudaMoELayer> layer_;
  MoEShape shape_;
  DType dtype_ = DType::kBF16;
};

}  // namespace

absl::StatusOr<std::unique_ptr<BenchBackend>> MakeCudaBackend() {
  std::string why_none;
  if (kernels::CudaDeviceCount(&why_none) == 0) {
    return absl::FailedPreconditionError(absl::StrCat("no usable CUDA device (", why_none, ")"));
  }
  absl::StatusOr<std::unique_ptr<CudaContext>> context = CudaContext::Create(0);
  if (!context.ok()) return context.status();
  return std::unique_ptr<BenchBackend>(std::make_unique<CudaBackend>(*std::move(context)));
}

}  // namespace moe::bench
