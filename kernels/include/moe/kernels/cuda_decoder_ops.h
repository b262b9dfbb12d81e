// The dense pieces of a decoder layer on a CUDA device, in float32, mirroring the host versions
// (server/engine/decoder/dense_ops.h, rotary_embedding.h) so that a decoder step can run on the
// device from the embedding lookup to the logits: projections (cuBLAS), RMSNorm, rotary
// embeddings, SwiGLU, residual adds and the embedding gather. The host API has no CUDA types;
// every pointer is device memory. Each call queues its work on the context's stream and returns
// without waiting.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "moe/kernels/cuda_moe.h"
#include "moe/kernels/dtype.h"

namespace moe::kernels {

// y[n, out] = x[n, in] W^T (+ bias), W [out, in] row-major. cuBLAS SGEMM in full float32
// (no TF32), so that the device's logits match the host's within float rounding. bias may be
// null. INVALID_ARGUMENT for non-positive sizes or null operands; n = 0 does nothing.
absl::Status CudaLinear(CudaContext& context, const float* w, const float* bias, int64_t out,
                        int64_t in, const float* x, int64_t n, float* y);

struct CudaRmsNormParams {
  // Output row r reads token rows[r] (null: token r) of x. Each token holds `groups` groups of
  // `width` values back to back from x + token * x_stride; each group is normalised on its own
  // (groups > 1: per-head q/k norms) with the same `weight` [width].
  const float* x = nullptr;
  int64_t x_stride = 0;           // floats between tokens, >= groups * width
  const int32_t* rows = nullptr;  // [num_rows] token indices, or null
  int64_t num_rows = 0;
  int64_t groups = 1;
  int64_t width = 0;
  const float* weight = nullptr;  // [width]
  double eps = 1e-6;
  // y row r at y + r * y_stride (elements), in y_dtype (kF32, kBF16 or kF16). May alias x when
  // both are float32 with the same stride and rows is null.
  void* y = nullptr;
  DType y_dtype = DType::kF32;
  int64_t y_stride = 0;
};

// y = x * rsqrt(mean(x^2) + eps) * weight per group; the mean in double precision, as on the
// host.
absl::Status CudaRmsNorm(CudaContext& context, const CudaRmsNormParams& params);

struct CudaRotaryParams {
  // `num_heads` heads of head_dim values back to back at x + token * stride, in place.
  float* x = nullptr;
  int64_t num_tokens = 0;
  int64_t stride = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;                // even
  const int32_t* positions = nullptr;  // [num_tokens]
  // [head_dim / 2] device doubles: theta^(-2i / head_dim), or as a RoPE scaling sets them.
  const double* inv_freq = nullptr;
  double scale = 1.0;  // cos and sin are multiplied by it (YaRN's attention factor)
};

// Rotate-half rotary embedding: channel i pairs with i + head_dim/2 and both turn by
// position * inv_freq[i]; angles in double precision, cos/sin scaled and rounded to float, as
// the host table does.
absl::Status CudaApplyRotary(CudaContext& context, const CudaRotaryParams& params);

// out[t, :] = table[ids[t], :] for t < n, table [vocab, d]. An id outside [0, vocab) gives a
// row of NaN (the caller validates ids before; the kernel never reads out of bounds).
absl::Status CudaEmbedRows(CudaContext& context, const float* table, int64_t vocab, int64_t d,
                           const int32_t* ids, int64_t n, float* out);

// h [n, 2f] (gate | up) -> out [n, f] = silu(gate) * up.
absl::Status CudaSwiGlu(CudaContext& context, const float* h, int64_t n, int64_t f, float* out);

// y[i] += x[i] for i < count; x in x_dtype (kF32, kBF16 or kF16), y float32.
absl::Status CudaAddInPlace(CudaContext& context, float* y, const void* x, DType x_dtype,
                            int64_t count);

}  // namespace moe::kernels
