// Row gather: one block per permuted row, 16-byte copies when rows are 16-byte aligned.
#include <algorithm>
#include <cstdint>

#include "compute_types.cuh"
#include "cuda_check.cuh"
#include "gather_rows.cuh"

namespace moe::kernels::cuda_internal {
namespace {

constexpr int kThreads = 128;

// Elem is uint4 (8 halves) on the aligned path, uint16_t otherwise; `width` counts Elems.
template <typename Elem>
__global__ void GatherRowsKernel(const Elem* __restrict__ x,  // [T, x_ld]
                                 int64_t x_ld, int64_t width, int top_k,
                                 const int32_t* __restrict__ permuted_to_assignment,  // [rows]
                                 const int32_t* __restrict__ num_rows,
                                 Elem* __restrict__ out,  // [rows, out_ld]
                                 int64_t out_ld) {
  const int64_t rows = *num_rows;
  for (int64_t p = blockIdx.x; p < rows; p += gridDim.x) {
    const int64_t token = permuted_to_assignment[p] / top_k;
    const Elem* src = x + token * x_ld;
    Elem* dst = out + p * out_ld;
    for (int64_t c = threadIdx.x; c < width; c += blockDim.x) dst[c] = src[c];
  }
}

}  // namespace

// Bytes: rows*d*2 read + rows*d*2 written (+ rows*4 indices). No FLOPs.
absl::Status LaunchGatherRows(cudaStream_t stream, const GatherRowsParams& p) {
  if (p.max_rows == 0) return absl::OkStatus();
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(p.max_rows, 65535));
  const bool aligned = p.hidden_size % 8 == 0 && p.out_ld % 8 == 0 &&
                       reinterpret_cast<uintptr_t>(p.x) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
  if (aligned) {
    GatherRowsKernel<uint4><<<blocks, kThreads, 0, stream>>>(
        static_cast<const uint4*>(p.x), p.hidden_size / 8, p.hidden_size / 8, p.top_k,
        p.permuted_to_assignment, p.num_rows, static_cast<uint4*>(p.out), p.out_ld / 8);
  } else {
    GatherRowsKernel<uint16_t><<<blocks, kThreads, 0, stream>>>(
        static_cast<const uint16_t*>(p.x), p.hidden_size, p.hidden_size, p.top_k,
        p.permuted_to_assignment, p.num_rows, static_cast<uint16_t*>(p.out), p.out_ld);
  }
  MOE_CUDA_RETURN_IF_LAUNCH_ERROR("GatherRowsKernel");
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda_internal
