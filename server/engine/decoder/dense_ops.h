// The dense pieces of a decoder layer on the host in float32: linear projections, RMSNorm and
// the SwiGLU of dense MLP layers. Each runs on one OpenMP team with BLAS single-threaded inside
// (the caller holds kernels::cpu::ScopedSingleThreadedBlas for the step), the way the MoE
// layer's CPU fast path does, so that two thread pools never compete for the cores.
#pragma once

#include <cstdint>

namespace moe::engine {

// y[n, out] = x[n, in] W^T (+ bias), W [out, in] row-major float32. Threads split the weight
// rows in chunks of fixed size, so every output element is computed the same way whatever the
// thread count. bias may be null.
void LinearRows(const float* w, const float* bias, int64_t out, int64_t in, const float* x,
                int64_t n, float* y);

// y[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * weight, for `rows` rows of `width` values at a
// stride of `stride` floats (in place allowed). Mean in double precision.
void RmsNormRows(const float* x, int64_t rows, int64_t width, int64_t stride, const float* weight,
                 double eps, float* y, int64_t y_stride);

// h [n, 2f] (gate | up) -> out [n, f] = silu(gate) * up.
void SwiGluRows(const float* h, int64_t n, int64_t f, float* out);

// y[i] += x[i] for i < count.
void AddInPlace(float* y, const float* x, int64_t count);

}  // namespace moe::engine
