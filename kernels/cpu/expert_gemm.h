// Building blocks of the CPU expert computation: a GEMM against one weight matrix stored in
// any of the weight dtypes, and the activations.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/kernels/moe_layer.h"

namespace moe::kernels::cpu {

// out[n, ldo] (columns [0, rows)) = x[n, cols] * W^T (+ bias), with W [rows, cols] row-major
// in `dtype` (F32, BF16 or F16). F32 weights go straight to BLAS (sgemv for one row). Half
// weights are widened in row chunks into `scratch` and multiplied chunk by chunk, so each
// weight is read from memory once per call and the scratch stays small.
void WeightGemm(const void* weights, DType dtype, int64_t rows, int64_t cols, const float* bias,
                const float* x, int64_t ldx, int64_t n, float* out, int64_t ldo,
                std::vector<float>* scratch);

// In place over h [n, ldh]: for gated activations the first f columns become
// act(h[:, :f]) * h[:, f:2f]; otherwise the first f columns become act(h[:, :f]).
void ApplyActivation(Activation activation, float* h, int64_t n, int64_t f, int64_t ldh);

}  // namespace moe::kernels::cpu
