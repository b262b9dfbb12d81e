// Fast, seeded, thread-count-independent random fills for benchmark weights and inputs.
#pragma once

#include <cstdint>

#include "moe/kernels/dtype.h"

namespace moe::bench {

// Fills `count` elements of `dtype` (F32, BF16 or F16) at `dst` with values uniform in
// [-scale, scale). The stream is cut into fixed blocks, each seeded from (seed, block index)
// and filled by an OpenMP thread, so the result depends only on `seed` and `count`, and the
// pages are first touched in parallel. A few hundred million elements per second per core.
void FillUniform(kernels::DType dtype, void* dst, int64_t count, float scale, uint64_t seed);

}  // namespace moe::bench
