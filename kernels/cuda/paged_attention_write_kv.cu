// Scatter of a step's new K/V rows into the paged cache: one thread block per (sequence, new
// token), threads over the kv heads' elements.
#include <cuda_bf16.h>

#include <cstdint>

#include "compute_types.cuh"
#include "cuda_check.cuh"
#include "cuda_context.cuh"
#include "moe/common/status_macros.h"
#include "moe/kernels/cuda_paged_attention.h"
#include "paged_attention_common.cuh"

namespace moe::kernels {
namespace {

using cuda_internal::BatchView;
using cuda_internal::PagedGeometry;
using cuda_internal::SequenceRows;

constexpr int kThreads = 128;

struct WriteKvArgs {
  BatchView batch;
  PagedGeometry geometry;
  int num_blocks;
  int block_tokens;
  int head_dim;
  int kv_elems;    // num_kv_heads * head_dim
  const float* k;  // [rows, k_stride]
  int64_t k_stride;
  const float* v;  // [rows, v_stride]
  int64_t v_stride;
};

template <typename CacheT>
__global__ void __launch_bounds__(kThreads)
    WritePagedKvKernel(const WriteKvArgs a,
                       CacheT* __restrict__ cache) {  // [blocks, layers, 2, KV, bt, hd]
  const int s = blockIdx.x / a.batch.max_query_len;
  const int i = blockIdx.x % a.batch.max_query_len;
  const SequenceRows seq = cuda_internal::LoadSequenceRows(a.batch, s);
  if (i >= seq.rows) return;
  const int64_t position = static_cast<int64_t>(seq.context) - seq.new_tokens + i;
  if (position < 0 || position >= seq.context) return;  // inconsistent metadata: skip
  const int32_t block =
      a.batch
          .block_tables[static_cast<int64_t>(s) * a.batch.max_blocks + position / a.block_tokens];
  if (block < 0 || block >= a.num_blocks) return;
  const int64_t base = block * a.geometry.block_elems + a.geometry.layer_offset +
                       (position % a.block_tokens) * a.head_dim;
  const int64_t row = seq.row0 + i;
  const float* k = a.k + row * a.k_stride;
  const float* v = a.v + row * a.v_stride;
  for (int e = threadIdx.x; e < a.kv_elems; e += blockDim.x) {
    const int head = e / a.head_dim;
    const int64_t at = base + head * a.geometry.head_elems + (e - head * a.head_dim);
    cache[at] = cuda_internal::FromFloat<CacheT>(k[e]);
    cache[at + a.geometry.layer_elems] = cuda_internal::FromFloat<CacheT>(v[e]);
  }
}

template <typename CacheT>
absl::Status Launch(cudaStream_t stream, const CudaWritePagedKvParams& p) {
  const PagedKvCacheView& c = p.cache;
  WriteKvArgs a;
  a.batch = cuda_internal::MakeBatchView(p.batch);
  a.geometry = cuda_internal::MakePagedGeometry(c, p.layer);
  a.num_blocks = static_cast<int>(c.num_blocks);
  a.block_tokens = static_cast<int>(c.block_tokens);
  a.head_dim = static_cast<int>(c.head_dim);
  a.kv_elems = static_cast<int>(c.num_kv_heads * c.head_dim);
  a.k = p.k;
  a.k_stride = p.k_stride;
  a.v = p.v;
  a.v_stride = p.v_stride;
  const unsigned blocks = static_cast<unsigned>(p.batch.num_seqs * p.batch.max_query_len);
  WritePagedKvKernel<CacheT><<<blocks, kThreads, 0, stream>>>(a, static_cast<CacheT*>(c.data));
  MOE_CUDA_RETURN_IF_LAUNCH_ERROR("WritePagedKvKernel");
  return absl::OkStatus();
}

}  // namespace

// Bytes: rows * KV * hd * 2 * (4 read + sizeof(cache dtype) written), plus the metadata. No
// FLOPs.
absl::Status CudaWritePagedKv(CudaContext& context, const CudaWritePagedKvParams& p) {
  constexpr const char* kOp = "CudaWritePagedKv";
  MOE_RETURN_IF_ERROR(cuda_internal::CheckPagedCache(kOp, p.cache, p.layer));
  MOE_RETURN_IF_ERROR(cuda_internal::CheckPagedBatch(kOp, p.batch, p.cache));
  if (p.batch.num_seqs == 0 || p.batch.num_query_rows == 0) return absl::OkStatus();
  const int64_t width = p.cache.num_kv_heads * p.cache.head_dim;
  if (p.k == nullptr || p.v == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": k and v must be set for ", p.batch.num_query_rows, " rows"));
  }
  if (p.k_stride < width || p.v_stride < width) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": k_stride (", p.k_stride, ") and v_stride (", p.v_stride,
                     ") must be >= num_kv_heads x head_dim = ", width));
  }
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  switch (p.cache.dtype) {  // the op's one dtype dispatch
    case DType::kF32:
      return Launch<float>(ctx.stream, p);
    case DType::kBF16:
      return Launch<__nv_bfloat16>(ctx.stream, p);
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          kOp, ": cache dtype ", std::string(DTypeName(p.cache.dtype)), " is not supported"));
  }
}

}  // namespace moe::kernels
