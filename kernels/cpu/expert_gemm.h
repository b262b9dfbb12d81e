// Building blocks of the CPU expert computation: GEMMs against (a slice of) a weight matrix
// stored in any of the weight dtypes, and the activations.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/kernels/moe_layer.h"

namespace moe::kernels::cpu {

// out[n, ldo] (columns [0, rows)) = x[n, cols] * W^T (+ bias), with W [rows, cols] row-major
// in `dtype` (F32, BF16 or F16). F32 weights go straight to BLAS (sgemv for one row). Half
// weights are widened in row chunks into `scratch` and multiplied chunk by chunk, so each
// weight is read from memory once per call and the scratch stays small. Uses BLAS's own
// threading; for the naive baseline and other callers outside a parallel region.
void WeightGemm(const void* weights, DType dtype, int64_t rows, int64_t cols, const float* bias,
                const float* x, int64_t ldx, int64_t n, float* out, int64_t ldo,
                std::vector<float>* scratch);

// The same product restricted to weight rows [row_begin, row_begin + row_count), written to
// out[:, 0 : row_count), on the calling thread only (no OpenMP region of its own): the unit of
// work of the parallel fast path.
void WeightGemmRowsSerial(const void* weights, DType dtype, int64_t row_begin, int64_t row_count,
                          int64_t cols, const float* bias, const float* x, int64_t ldx, int64_t n,
                          float* out, int64_t ldo, std::vector<float>* scratch);

// In place over h [n, ldh]: for gated activations the first f columns become
// act(h[:, :f]) * h[:, f:2f]; otherwise the first f columns become act(h[:, :f]).
void ApplyActivation(Activation activation, float* h, int64_t n, int64_t f, int64_t ldh);

// Serial form over columns [col_begin, col_begin + col_count) of the first f: for gated
// activations column j combines h[:, j] and h[:, f + j].
void ApplyActivationColumnsSerial(Activation activation, float* h, int64_t n, int64_t f,
                                  int64_t ldh, int64_t col_begin, int64_t col_count);

// Keeps BLAS single-threaded for its lifetime, restoring the previous thread count after. The
// fast path parallelises over (expert, weight-row chunk) with its own OpenMP threads; a
// threaded BLAS call inside would queue behind OpenBLAS's global pool lock and two thread
// pools would fight for the same cores. Safe to nest and to hold from several threads at once:
// the first holder parks BLAS's pool and the last one restores it.
class ScopedSingleThreadedBlas {
 public:
  ScopedSingleThreadedBlas();
  ~ScopedSingleThreadedBlas();
  ScopedSingleThreadedBlas(const ScopedSingleThreadedBlas&) = delete;
  ScopedSingleThreadedBlas& operator=(const ScopedSingleThreadedBlas&) = delete;
};

}  // namespace moe::kernels::cpu
