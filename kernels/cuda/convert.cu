// Conversion between the float storage types, and the seeded normal fill used by tests and the
// benchmark.
#include <algorithm>
#include <cstdint>

#include "compute_types.cuh"
#include "convert.cuh"
#include "cuda_check.cuh"

namespace moe::kernels::cuda_internal {
namespace {

constexpr int kThreads = 256;

// Rows are strided over blockIdx.y (gridDim.y is capped at 65535), columns over x.
template <typename Src, typename Dst>
__global__ void ConvertRowsKernel(const Src* __restrict__ src,  // [rows, src_ld]
                                  int64_t src_ld,
                                  Dst* __restrict__ dst,  // [rows, dst_ld]
                                  int64_t dst_ld, int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const Src* in = src + r * src_ld;
    Dst* out = dst + r * dst_ld;
    for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < cols;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      out[c] = FromFloat<Dst>(ToFloat(in[c]));
    }
  }
}

__device__ __forceinline__ uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

template <typename T>
__global__ void FillRandomNormalKernel(T* __restrict__ dst,  // [count]
                                       int64_t count, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t bits = SplitMix64(seed ^ SplitMix64(static_cast<uint64_t>(i)));
    // Box-Muller from two 24-bit uniforms in (0, 1].
    const float u1 = (static_cast<float>(bits >> 40) + 1.0f) * (1.0f / 16777216.0f);
    const float u2 = static_cast<float>((bits >> 8) & 0xffffffu) * (1.0f / 16777216.0f);
    const float normal = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
    dst[i] = FromFloat<T>(normal * scale);
  }
}

}  // namespace

// Bytes: rows*cols*(sizeof(src)+sizeof(dst)); no FLOPs. Memory-bound.
absl::Status LaunchConvertRows(cudaStream_t stream, const void* src, DType src_dtype,
                               int64_t src_ld, void* dst, DType dst_dtype, int64_t dst_ld,
                               int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return absl::OkStatus();
  if (src_ld == cols && dst_ld == cols) {  // contiguous: one long row
    cols *= rows;
    src_ld = dst_ld = cols;
    rows = 1;
  }
  const int64_t max_column_blocks = rows == 1 ? 8192 : 64;
  const dim3 grid(
      static_cast<unsigned>(std::min<int64_t>(CeilDiv(cols, kThreads), max_column_blocks)),
      static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  return DispatchFloatDType(src_dtype, [&](auto src_tag) -> absl::Status {
    using Src = typename decltype(src_tag)::type;
    return DispatchFloatDType(dst_dtype, [&](auto dst_tag) -> absl::Status {
      using Dst = typename decltype(dst_tag)::type;
      ConvertRowsKernel<Src, Dst><<<grid, kThreads, 0, stream>>>(
          static_cast<const Src*>(src), src_ld, static_cast<Dst*>(dst), dst_ld, rows, cols);
      MOE_CUDA_RETURN_IF_LAUNCH_ERROR("ConvertRowsKernel");
      return absl::OkStatus();
    });
  });
}

// Bytes: count*sizeof(T) written; ~30 FLOPs per element (hash, log, sqrt, cos).
absl::Status LaunchFillRandomNormal(cudaStream_t stream, void* dst, DType dtype, int64_t count,
                                    uint64_t seed, float scale) {
  if (count <= 0) return absl::OkStatus();
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(CeilDiv(count, kThreads), 8192));
  return DispatchFloatDType(dtype, [&](auto tag) -> absl::Status {
    using T = typename decltype(tag)::type;
    FillRandomNormalKernel<T>
        <<<blocks, kThreads, 0, stream>>>(static_cast<T*>(dst), count, seed, scale);
    MOE_CUDA_RETURN_IF_LAUNCH_ERROR("FillRandomNormalKernel");
    return absl::OkStatus();
  });
}

}  // namespace moe::kernels::cuda_internal
