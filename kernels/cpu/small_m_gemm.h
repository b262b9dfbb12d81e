// out[n, ldo] = x[n, cols] * W^T for a few dozen token rows at most, W [rows, cols] float32
// row-major. BLAS packs the weight panel before multiplying, which at such row counts costs
// about as much as the product itself; this kernel streams each block of 4 weight rows once
// from memory and multiplies it against all n token rows while it sits in L1.
#pragma once

#include <cstdint>

namespace moe::kernels::cpu {

// True when the CPU has AVX2 and FMA (checked once).
bool SmallMGemmAvailable();

// Requires SmallMGemmAvailable(). Accumulates each dot product in float32 lanes, in a fixed
// order (deterministic, independent of threads).
void SmallMGemm(const float* w, int64_t rows, int64_t cols, const float* x, int64_t ldx, int64_t n,
                float* out, int64_t ldo);

}  // namespace moe::kernels::cpu
