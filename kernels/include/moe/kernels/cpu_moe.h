// CPU MoE layer: the fast path (OpenBLAS GEMMs, threaded routing/permute/combine) and the plain
// reference with the same interface that tests compare it against.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "moe/kernels/moe_layer.h"

namespace moe::kernels {

// Scratch memory reused across forward calls (routing buffers, permuted rows, per-expert
// activations, widened half-precision weights). Grows to the largest call seen; one workspace
// must not be used by two calls at once.
class CpuMoEWorkspace {
 public:
  CpuMoEWorkspace();
  ~CpuMoEWorkspace();
  CpuMoEWorkspace(const CpuMoEWorkspace&) = delete;
  CpuMoEWorkspace& operator=(const CpuMoEWorkspace&) = delete;

  struct Buffers;
  Buffers& buffers() { return *buffers_; }

 private:
  std::unique_ptr<Buffers> buffers_;
};

// Forward of one MoE layer over `num_tokens` rows of `input` ([T, d] float32), host memory.
// Weights may be F32, BF16 or F16 (half weights are widened per active expert, once per call).
absl::Status MoEForwardCpu(const MoELayerWeightsView& weights, const RouterConfig& router,
                           const float* input, int64_t num_tokens, const MoELayerOutputs& outputs,
                           CpuMoEWorkspace* workspace);

// Obviously-correct reference: per-token loops in double precision accumulation, no BLAS, no
// threads. Same semantics (routing, ties, renormalisation, capacity, shared expert).
absl::Status MoEForwardReference(const MoELayerWeightsView& weights, const RouterConfig& router,
                                 const float* input, int64_t num_tokens,
                                 const MoELayerOutputs& outputs);

// Naive fast-ish baseline for benchmarks: per expert, gather its tokens and run BLAS on them
// one expert at a time without fusing gate/up (what a straightforward framework loop does).
// Covers what the benchmark measures: gated experts (SwiGLU, GeGLU) without capacity limit,
// expert biases or shared expert; anything else is UNIMPLEMENTED.
absl::Status MoEForwardNaiveLoopCpu(const MoELayerWeightsView& weights, const RouterConfig& router,
                                    const float* input, int64_t num_tokens,
                                    const MoELayerOutputs& outputs, CpuMoEWorkspace* workspace);

}  // namespace moe::kernels
