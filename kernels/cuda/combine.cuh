// Un-permute and weighted combine of the expert outputs back into token order, plus the
// shared expert.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "moe/kernels/dtype.h"

namespace moe::kernels::cuda_internal {

struct CombineParams {
  DType dtype = DType::kBF16;  // of expert_y, shared_y, x, out
  int64_t num_tokens = 0;
  int64_t hidden_size = 0;
  int top_k = 1;
  const void* expert_y = nullptr;  // [rows, y_ld] expert outputs in expert order
  int64_t y_ld = 0;
  const int32_t* assignment_to_permuted = nullptr;  // [T, k] row, or -1 when dropped
  const int32_t* topk_ids = nullptr;                // [T, k]
  const float* topk_weights = nullptr;              // [T, k]
  const float* b_out = nullptr;                     // [E, d] or null
  const void* shared_y = nullptr;                   // [T, shared_ld] or null (no shared expert)
  int64_t shared_ld = 0;
  const float* shared_gate = nullptr;  // [d] or null: shared output scaled by sigmoid(gate . x)
  const void* x = nullptr;             // [T, d] the layer input (for the shared gate)
  void* out = nullptr;                 // [T, d]
};

// out[t] = sum over slots s in order 0..k-1 of w[t,s] * (y[row(t,s)] + b_out[id(t,s)])
//          (+ sigmoid(shared_gate . x[t]) * shared_y[t]); float32 accumulation.
absl::Status LaunchCombine(cudaStream_t stream, const CombineParams& params);

}  // namespace moe::kernels::cuda_internal
