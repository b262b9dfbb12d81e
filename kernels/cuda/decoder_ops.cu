// The dense decoder pieces on the device (moe/kernels/cuda_decoder_ops.h). Simple kernels, one
// block per row where a row needs a reduction: the decoder's dense work is dominated by the
// cuBLAS projections, and these follow the host formulas operation for operation so that the
// two paths agree within float rounding.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "compute_types.cuh"
#include "cuda_check.cuh"
#include "cuda_context.cuh"
#include "moe/common/status_macros.h"
#include "moe/kernels/cuda_decoder_ops.h"

namespace moe::kernels {
namespace {

constexpr int kThreads = 256;
// Grid-stride loops cap their grids here; enough blocks to fill any current device.
constexpr int64_t kMaxBlocks = 65535;

int GridFor(int64_t work, int64_t per_block) {
  return static_cast<int>(std::clamp<int64_t>((work + per_block - 1) / per_block, 1, kMaxBlocks));
}

// One block per (output row, group): sum of squares in double, then the scaled copy.
template <typename Out>
__global__ void RmsNormKernel(CudaRmsNormParams p) {
  __shared__ double partial[kThreads];
  const int64_t items = p.num_rows * p.groups;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t r = item / p.groups;
    const int64_t g = item % p.groups;
    const int64_t token = p.rows != nullptr ? p.rows[r] : r;
    const float* x = p.x + token * p.x_stride + g * p.width;
    double squares = 0.0;
    for (int64_t c = threadIdx.x; c < p.width; c += blockDim.x) {
      squares += static_cast<double>(x[c]) * x[c];
    }
    partial[threadIdx.x] = squares;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
      if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
      __syncthreads();
    }
    const float scale =
        static_cast<float>(1.0 / sqrt(partial[0] / static_cast<double>(p.width) + p.eps));
    Out* y = static_cast<Out*>(p.y) + r * p.y_stride + g * p.width;
    for (int64_t c = threadIdx.x; c < p.width; c += blockDim.x) {
      y[c] = cuda_internal::FromFloat<Out>(x[c] * scale * p.weight[c]);
    }
    __syncthreads();  // partial[0] is read above before the next item overwrites it
  }
}

// One thread per (token, head, pair).
__global__ void RotaryKernel(CudaRotaryParams p) {
  const int64_t half = p.head_dim / 2;
  const int64_t pairs = p.num_tokens * p.num_heads * half;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < pairs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % half;
    const int64_t head = (i / half) % p.num_heads;
    const int64_t t = i / (half * p.num_heads);
    const double angle = static_cast<double>(p.positions[t]) * p.inv_freq[c];
    const float cos_a = static_cast<float>(cos(angle) * p.scale);
    const float sin_a = static_cast<float>(sin(angle) * p.scale);
    float* h = p.x + t * p.stride + head * p.head_dim;
    const float x1 = h[c];
    const float x2 = h[c + half];
    h[c] = x1 * cos_a - x2 * sin_a;
    h[c + half] = x2 * cos_a + x1 * sin_a;
  }
}

__global__ void EmbedKernel(const float* table, int64_t vocab, int64_t d, const int32_t* ids,
                            int64_t n, float* out) {
  const int64_t total = n * d;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / d;
    const int64_t id = ids[t];
    out[i] = id >= 0 && id < vocab ? table[id * d + i % d] : __int_as_float(0x7fc00000);
  }
}

__global__ void SwiGluKernel(const float* h, int64_t n, int64_t f, float* out) {
  const int64_t total = n * f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / f;
    const int64_t c = i % f;
    const float gate = h[r * 2 * f + c];
    const float up = h[r * 2 * f + f + c];
    out[i] = gate / (1.0f + expf(-gate)) * up;
  }
}

template <typename T>
__global__ void AddKernel(float* y, const T* x, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] += cuda_internal::ToFloat(x[i]);
  }
}

// y[r, :] += bias for every row.
__global__ void AddBiasKernel(float* y, const float* bias, int64_t n, int64_t out) {
  const int64_t total = n * out;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] += bias[i % out];
  }
}

bool IsFloatType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

}  // namespace

absl::Status CudaLinear(CudaContext& context, const float* w, const float* bias, int64_t out,
                        int64_t in, const float* x, int64_t n, float* y) {
  if (out <= 0 || in <= 0 || n < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaLinear: bad sizes out=", out, " in=", in, " n=", n));
  }
  if (n == 0) return absl::OkStatus();
  if (w == nullptr || x == nullptr || y == nullptr) {
    return absl::InvalidArgumentError("CudaLinear: null operand");
  }
  constexpr int64_t kMaxInt = 2147483647;
  if (out > kMaxInt || in > kMaxInt || n > kMaxInt) {
    return absl::InvalidArgumentError("CudaLinear: a dimension exceeds cuBLAS's 32-bit sizes");
  }
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  // Column-major view: y^T [out, n] = W (stored [in, out] column-major, op T) · x^T [in, n].
  const float alpha = 1.0f, beta = 0.0f;
  MOE_CUBLAS_RETURN_IF_ERROR(cublasSgemm(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N,
                                         static_cast<int>(out), static_cast<int>(n),
                                         static_cast<int>(in), &alpha, w, static_cast<int>(in), x,
                                         static_cast<int>(in), &beta, y, static_cast<int>(out)));
  if (bias != nullptr) {
    AddBiasKernel<<<GridFor(n * out, kThreads), kThreads, 0, ctx.stream>>>(y, bias, n, out);
    MOE_CUDA_RETURN_IF_LAUNCH_ERROR("AddBiasKernel");
  }
  return absl::OkStatus();
}

absl::Status CudaRmsNorm(CudaContext& context, const CudaRmsNormParams& p) {
  if (p.num_rows < 0 || p.groups <= 0 || p.width <= 0 || p.x_stride < p.groups * p.width ||
      p.y_stride < p.groups * p.width || p.eps < 0 || !IsFloatType(p.y_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CudaRmsNorm: bad shape rows=", p.num_rows, " groups=", p.groups, " width=", p.width,
        " x_stride=", p.x_stride, " y_stride=", p.y_stride, " eps=", p.eps));
  }
  if (p.num_rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.weight == nullptr || p.y == nullptr) {
    return absl::InvalidArgumentError("CudaRmsNorm: null operand");
  }
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  const int grid = GridFor(p.num_rows * p.groups, 1);
  switch (p.y_dtype) {
    case DType::kF32:
      RmsNormKernel<float><<<grid, kThreads, 0, ctx.stream>>>(p);
      break;
    case DType::kBF16:
      RmsNormKernel<__nv_bfloat16><<<grid, kThreads, 0, ctx.stream>>>(p);
      break;
    default:
      RmsNormKernel<__half><<<grid, kThreads, 0, ctx.stream>>>(p);
      break;
  }
  MOE_CUDA_RETURN_IF_LAUNCH_ERROR("RmsNormKernel");
  return absl::OkStatus();
}

absl::Status CudaApplyRotary(CudaContext& context, const CudaRotaryParams& p) {
  if (p.num_tokens < 0 || p.num_heads <= 0 || p.head_dim <= 0 || p.head_dim % 2 != 0 ||
      p.stride < p.num_heads * p.head_dim || !(p.scale > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaApplyRotary: bad shape tokens=", p.num_tokens, " heads=", p.num_heads,
                     " head_dim=", p.head_dim, " stride=", p.stride, " scale=", p.scale));
  }
  if (p.num_tokens == 0) return absl::OkStatus();
  if (p.x == nullptr || p.positions == nullptr || p.inv_freq == nullptr) {
    return absl::InvalidArgumentError("CudaApplyRotary: null operand");
  }
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  RotaryKernel<<<GridFor(p.num_tokens * p.num_heads * (p.head_dim / 2), kThreads), kThreads, 0,
                 ctx.stream>>>(p);
  MOE_CUDA_RETURN_IF_LAUNCH_ERROR("RotaryKernel");
  return absl::OkStatus();
}

absl::Status CudaEmbedRows(CudaContext& context, const float* table, int64_t vocab, int64_t d,
                           const int32_t* ids, int64_t n, float* out) {
  if (vocab <= 0 || d <= 0 || n < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaEmbedRows: bad sizes vocab=", vocab, " d=", d, " n=", n));
  }
  if (n == 0) return absl::OkStatus();
  if (table == nullptr || ids == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("CudaEmbedRows: null operand");
  }
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  EmbedKernel<<<GridFor(n * d, kThreads), kThreads, 0, ctx.stream>>>(table, vocab, d, ids, n, out);
  MOE_CUDA_RETURN_IF_LAUNCH_ERROR("EmbedKernel");
  return absl::OkStatus();
}

absl::Status CudaSwiGlu(CudaContext& context, const float* h, int64_t n, int64_t f, float* out) {
  if (n < 0 || f <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("CudaSwiGlu: bad sizes n=", n, " f=", f));
  }
  if (n == 0) return absl::OkStatus();
  if (h == nullptr || out == nullptr) return absl::InvalidArgumentError("CudaSwiGlu: null operand");
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  SwiGluKernel<<<GridFor(n * f, kThreads), kThreads, 0, ctx.stream>>>(h, n, f, out);
  MOE_CUDA_RETURN_IF_LAUNCH_ERROR("SwiGluKernel");
  return absl::OkStatus();
}

absl::Status CudaAddInPlace(CudaContext& context, float* y, const void* x, DType x_dtype,
                            int64_t count) {
  if (count < 0 || !IsFloatType(x_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("CudaAddInPlace: bad count ", count,
                                                   " or dtype ", std::string(DTypeName(x_dtype))));
  }
  if (count == 0) return absl::OkStatus();
  if (y == nullptr || x == nullptr) {
    return absl::InvalidArgumentError("CudaAddInPlace: null operand");
  }
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  const int grid = GridFor(count, kThreads);
  switch (x_dtype) {
    case DType::kF32:
      AddKernel<<<grid, kThreads, 0, ctx.stream>>>(y, static_cast<const float*>(x), count);
      break;
    case DType::kBF16:
      AddKernel<<<grid, kThreads, 0, ctx.stream>>>(y, static_cast<const __nv_bfloat16*>(x), count);
      break;
    default:
      AddKernel<<<grid, kThreads, 0, ctx.stream>>>(y, static_cast<const __half*>(x), count);
      break;
  }
  MOE_CUDA_RETURN_IF_LAUNCH_ERROR("AddKernel");
  return absl::OkStatus();
}

}  // namespace moe::kernels
