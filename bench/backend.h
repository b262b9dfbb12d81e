// What moe-bench needs from a backend: its three measured ceilings, and timed forward passes of
// the fast MoE layer and of the naive per-expert loop on one prepared layer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/shapes.h"
#include "bench/timing.h"
#include "moe/kernels/dtype.h"

namespace moe::bench {

struct CeilingOptions {
  // M = N = K of the dense GEMM; 0 = the backend's default (cpu 2048, cuda 8192).
  int64_t gemm_size = 0;
  // Bytes copied per call (source and destination each); 0 = the backend's default (cpu 512 MiB,
  // cuda 1 GiB).
  int64_t copy_bytes = 0;
  // Bytes read per call by the read-only stream; 0 = the backend's default (cpu 512 MiB, cuda
  // 1 GiB).
  int64_t read_bytes = 0;
  // Operand dtype of the dense GEMM where the backend has a choice (CUDA: the layer's compute
  // dtype); the CPU GEMM is always f32 (sgemm), as the CPU layer computes in f32.
  kernels::DType dtype = kernels::DType::kF32;
  int warmup = 1;
  int repeats = 5;
};

struct Ceilings {
  double dense_gemm_tflops = 0.0;  // median rate of the dense GEMM
  std::string dense_gemm_method;   // "OpenBLAS sgemm 2048x2048x2048 f32, median of 5"
  double copy_gbps = 0.0;          // (bytes read + bytes written) / median time
  std::string copy_method;
  double read_gbps = 0.0;  // bytes read / median time of a read-only stream (nothing written)
  std::string read_method;
  // Every measurement behind the three values above, in the order taken (see BestCeilings).
  std::vector<double> dense_gemm_tflops_each;
  std::vector<double> copy_gbps_each;
  std::vector<double> read_gbps_each;
};

struct RunOptions {
  int warmup = 1;
  int repeats = 5;
  bool naive = true;  // also time the naive per-expert loop
  // Also time profiling passes of the fast path (MoELayerOutputs::expert_seconds set), to show
  // what the server's sampled per-expert timing costs over a normal pass.
  bool expert_timing = false;
  uint64_t seed = 0;  // of the input activations
};

struct CaseResult {
  TimingStats fast;
  std::optional<TimingStats> naive;
  std::optional<TimingStats> profiled;       // the fast path with per-expert timing on
  std::vector<double> expert_seconds;        // [E] from the last profiled call (empty: none)
  std::vector<int64_t> expert_token_counts;  // [E] from the fast path's last timed call
};

class BenchBackend {
 public:
  virtual ~BenchBackend() = default;

  virtual std::string Name() const = 0;         // "cpu", "cuda"
  virtual std::string Description() const = 0;  // the machine, for the report header

  // OK when the layer, its activations for `max_tokens` and the ceiling buffers fit in the
  // backend's free memory; RESOURCE_EXHAUSTED saying how much is needed and available otherwise.
  virtual absl::Status CheckFits(const MoEShape& shape, kernels::DType dtype, int64_t max_tokens,
                                 const CeilingOptions& ceilings) const = 0;

  virtual absl::StatusOr<Ceilings> MeasureCeilings(const CeilingOptions& options) = 0;

  // Creates random weights for `shape` (replacing any previous layer).
  virtual absl::Status PrepareLayer(const MoEShape& shape, kernels::DType dtype, uint64_t seed) = 0;

  // Frees the prepared layer.
  virtual void ReleaseLayer() = 0;

  // Times forward passes over `tokens` random tokens on the prepared layer.
  virtual absl::StatusOr<CaseResult> Run(int64_t tokens, const RunOptions& options) = 0;
};

}  // namespace moe::bench
