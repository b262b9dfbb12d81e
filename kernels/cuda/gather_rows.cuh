// Copies token rows into expert order ahead of the grouped GEMMs.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace moe::kernels::cuda_internal {

struct GatherRowsParams {
  const void* x = nullptr;  // [T, d] 2-byte elements (bf16 / f16), row pitch d
  int64_t hidden_size = 0;
  int top_k = 1;
  const int32_t* permuted_to_assignment = nullptr;  // [max_rows]
  const int32_t* num_rows = nullptr;  // device scalar (offsets[E]): rows past it are skipped
  int64_t max_rows = 0;               // launch bound (T*k); the count is not known on the host
  void* out = nullptr;                // [max_rows, out_ld]
  int64_t out_ld = 0;
};

// out[p, :d] = x[permuted_to_assignment[p] / k, :d] for p < *num_rows.
absl::Status LaunchGatherRows(cudaStream_t stream, const GatherRowsParams& params);

}  // namespace moe::kernels::cuda_internal
