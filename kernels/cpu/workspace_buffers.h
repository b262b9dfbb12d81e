// The CPU workspace's buffers, shared by the fast path and the naive baseline.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/kernels/cpu_moe.h"

namespace moe::kernels {

struct CpuMoEWorkspace::Buffers {
  std::vector<float> logits;           // [T, E] when the caller does not want them
  std::vector<int32_t> ids;            // [T, k]
  std::vector<float> weights;          // [T, k]
  std::vector<int64_t> offsets;        // [E + 1]
  std::vector<int64_t> to_assignment;  // [T*k]
  std::vector<int64_t> to_permuted;    // [T*k]
  std::vector<float> permuted_x;       // [N, d] rows in expert order
  std::vector<float> hidden;           // [max n_e, in_rows] one expert's gate|up then activation
  std::vector<float> permuted_y;       // [N, d] expert outputs in expert order
  std::vector<float> shared_hidden;    // [T, shared in_rows]
  std::vector<float> shared_y;         // [T, d]
  std::vector<float> widen_scratch;    // widened half-precision weight rows
};

}  // namespace moe::kernels
