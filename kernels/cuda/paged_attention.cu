// Grouped-query paged attention, decode and prefill in one kernel (decode is a chunk of one
// token), float32 scores and softmax, K/V read through each sequence's block table.
//
// Work split. One thread block per (sequence, tile of its new tokens, kv head, key split): it
// holds the tile's queries for the kv head's group of query heads (rows = tokens x group, so K
// and V are read once for all of them) and walks its split's key partitions of
// partition_tokens keys with an online softmax:
//   1. block ids -> element offsets of the partition's keys       (shared memory)
//   2. scores: one warp per key, lanes over head_dim, every row    (shared memory [rows, P])
//   3. per row: running max, rescale factor, exponentials, sum     (one warp per row)
//   4. acc[row, c] = acc * rescale + sum_t p[row, t] V[t, c]       (threads over (row, c))
// Each row only sees keys at positions <= its own (causal within the chunk). With one split
// the block writes acc / sum; with several it writes (acc, max, sum) partials that
// CombineSplitsKernel merges (flash-decoding), so that a few long sequences still fill the
// device.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
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

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxLaneElems = static_cast<int>(kMaxPagedHeadDim / 32);  // head_dim / 32
// Query rows (tokens x group) a prefill tile aims for: K/V loads are shared by this many rows.
constexpr int64_t kTargetRows = 16;
constexpr int64_t kDefaultPartition = 256;
constexpr int64_t kMinAutoPartition = 32;
constexpr size_t kDefaultSharedBytes = 48 * 1024;

struct AttentionArgs {
  BatchView batch;
  PagedGeometry geometry;
  int num_blocks;
  int block_tokens;
  int head_dim;
  int num_heads;
  int group;            // query heads per kv head
  int q_tile;           // new tokens per thread block
  int q_tiles_per_seq;  // ceil(max_query_len / q_tile)
  int partition;        // keys per partition (P)
  int num_partitions;   // ceil(max_context_len / P)
  int parts_per_split;
  int num_splits;
  float scale;
  const float* q;  // [rows, q_stride], head h at h * head_dim
  int64_t q_stride;
  float* out;            // [rows, H, hd]
  float* partial_acc;    // [rows, H, splits, hd]   (num_splits > 1)
  float* partial_stats;  // [rows, H, splits, 2]    (max, sum)
};

// Max that propagates NaN (fmaxf drops it), so a NaN score poisons its row instead of
// vanishing.
__device__ __forceinline__ float NanMax(float a, float b) {
  return (a != a || b != b) ? __int_as_float(0x7fc00000) : fmaxf(a, b);
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = NanMax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Shared memory of one thread block, for `rows` query rows and partitions of P keys.
struct SharedLayout {
  size_t offsets = 0;  // int64 [P]: element offset of each key's K row (-1: bad block id)
  size_t q = 0;        // float [rows, hd]
  size_t acc = 0;      // float [rows, hd]
  size_t scores = 0;   // float [rows, P]
  size_t stats = 0;    // float [rows, 3]: running max, running sum, this partition's rescale
  size_t limits = 0;   // int [rows]: keys the row sees (its position + 1)
  size_t total = 0;
};

__host__ __device__ inline SharedLayout MakeSharedLayout(int64_t rows, int64_t head_dim,
                                                         int64_t partition) {
  SharedLayout l;
  size_t at = 0;
  l.offsets = at;
  at += sizeof(int64_t) * partition;
  l.q = at;
  at += sizeof(float) * rows * head_dim;
  l.acc = at;
  at += sizeof(float) * rows * head_dim;
  l.scores = at;
  at += sizeof(float) * rows * partition;
  l.stats = at;
  at += sizeof(float) * rows * 3;
  l.limits = at;
  at += sizeof(int) * rows;
  l.total = at;
  return l;
}

template <typename CacheT>
__global__ void __launch_bounds__(kThreads)
    PagedAttentionKernel(const AttentionArgs a,
                         const CacheT* __restrict__ cache) {  // [blocks, layers, 2, KV, bt, hd]
  const int s = blockIdx.x / a.q_tiles_per_seq;
  const int tile = blockIdx.x % a.q_tiles_per_seq;
  const int kv_head = blockIdx.y;
  const int split = blockIdx.z;
  const int hd = a.head_dim;
  const int P = a.partition;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;

  const SequenceRows seq = cuda_internal::LoadSequenceRows(a.batch, s);
  const int q_begin = tile * a.q_tile;
  if (q_begin >= seq.rows) return;  // uniform over the block
  const int q_count = min(a.q_tile, seq.rows - q_begin);
  const int rows = q_count * a.group;
  // Keys the tile's last (longest-seeing) row sees; row r (token q_begin + r / group) sees
  // positions [0, context - new_tokens + token].
  const int tile_keys = max(0, min(seq.context, seq.context - seq.new_tokens + q_begin + q_count));

  extern __shared__ __align__(16) unsigned char shared_raw[];
  const SharedLayout layout = MakeSharedLayout(a.q_tile * a.group, hd, P);
  int64_t* offsets = reinterpret_cast<int64_t*>(shared_raw + layout.offsets);
  float* q_s = reinterpret_cast<float*>(shared_raw + layout.q);
  float* acc_s = reinterpret_cast<float*>(shared_raw + layout.acc);
  float* scores = reinterpret_cast<float*>(shared_raw + layout.scores);
  float* stats = reinterpret_cast<float*>(shared_raw + layout.stats);
  int* limits = reinterpret_cast<int*>(shared_raw + layout.limits);

  for (int e = threadIdx.x; e < rows * hd; e += blockDim.x) {
    const int r = e / hd, c = e - r * hd;
    const int64_t row = seq.row0 + q_begin + r / a.group;
    const int head = kv_head * a.group + r % a.group;
    q_s[e] = a.q[row * a.q_stride + static_cast<int64_t>(head) * hd + c];
    acc_s[e] = 0.0f;
  }
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    stats[r * 3 + 0] = -INFINITY;
    stats[r * 3 + 1] = 0.0f;
    stats[r * 3 + 2] = 1.0f;
    const int token = q_begin + r / a.group;
    limits[r] = max(0, min(seq.context, seq.context - seq.new_tokens + token + 1));
  }
  __syncthreads();

  const int32_t* table = a.batch.block_tables + static_cast<int64_t>(s) * a.batch.max_blocks;
  const int part_end = min(a.num_partitions, (split + 1) * a.parts_per_split);
  for (int part = split * a.parts_per_split; part < part_end; ++part) {
    const int start = part * P;
    if (start >= tile_keys) break;  // uniform over the block
    const int keys = min(P, tile_keys - start);

    // 1. Where each key's K row starts (V is layer_elems further).
    for (int t = threadIdx.x; t < keys; t += blockDim.x) {
      const int position = start + t;
      const int32_t block = table[position / a.block_tokens];
      offsets[t] = (block >= 0 && block < a.num_blocks)
                       ? block * a.geometry.block_elems + a.geometry.layer_offset +
                             kv_head * a.geometry.head_elems +
                             static_cast<int64_t>(position % a.block_tokens) * hd
                       : -1;
    }
    __syncthreads();

    // 2. Scores: a warp per key, each lane holding head_dim / 32 of its elements.
    for (int t = warp; t < keys; t += kWarps) {
      const int64_t offset = offsets[t];
      float k[kMaxLaneElems];
#pragma unroll
      for (int j = 0; j < kMaxLaneElems; ++j) {
        const int c = lane + 32 * j;
        k[j] = c >= hd       ? 0.0f
               : offset >= 0 ? cuda_internal::ToFloat(cache[offset + c])
                             : __int_as_float(0x7fc00000);
      }
      for (int r = 0; r < rows; ++r) {
        if (start + t >= limits[r]) continue;  // uniform over the warp
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < kMaxLaneElems; ++j) {
          const int c = lane + 32 * j;
          if (c < hd) dot = fmaf(q_s[r * hd + c], k[j], dot);
        }
        dot = WarpSum(dot);
        if (lane == 0) scores[r * P + t] = dot * a.scale;
      }
    }
    __syncthreads();

    // 3. Online softmax: new running max, rescale of what was summed so far, exponentials.
    for (int r = warp; r < rows; r += kWarps) {
      const int row_keys = max(0, min(keys, limits[r] - start));
      if (row_keys == 0) {
        if (lane == 0) stats[r * 3 + 2] = 1.0f;
        continue;
      }
      float part_max = -INFINITY;
      for (int t = lane; t < row_keys; t += 32) part_max = NanMax(part_max, scores[r * P + t]);
      part_max = WarpMax(part_max);
      const float old_max = stats[r * 3 + 0];
      const float new_max = NanMax(old_max, part_max);
      float sum = 0.0f;
      for (int t = lane; t < row_keys; t += 32) {
        const float p = expf(scores[r * P + t] - new_max);
        scores[r * P + t] = p;
        sum += p;
      }
      sum = WarpSum(sum);
      if (lane == 0) {
        const float rescale = old_max == -INFINITY ? 0.0f : expf(old_max - new_max);
        stats[r * 3 + 0] = new_max;
        stats[r * 3 + 1] = stats[r * 3 + 1] * rescale + sum;
        stats[r * 3 + 2] = rescale;
      }
    }
    __syncthreads();

    // 4. acc = acc * rescale + P V; consecutive threads read consecutive elements of a V row.
    for (int e = threadIdx.x; e < rows * hd; e += blockDim.x) {
      const int r = e / hd, c = e - r * hd;
      const int row_keys = max(0, min(keys, limits[r] - start));
      float acc = acc_s[e] * stats[r * 3 + 2];
      const float* p = scores + r * P;
#pragma unroll 4
      for (int t = 0; t < row_keys; ++t) {
        const int64_t offset = offsets[t];
        const float v = offset >= 0
                            ? cuda_internal::ToFloat(cache[offset + a.geometry.layer_elems + c])
                            : __int_as_float(0x7fc00000);
        acc = fmaf(p[t], v, acc);
      }
      acc_s[e] = acc;
    }
    __syncthreads();
  }

  // Results. A row that saw no key (max still -inf) gets zeros.
  for (int e = threadIdx.x; e < rows * hd; e += blockDim.x) {
    const int r = e / hd, c = e - r * hd;
    const int64_t row = seq.row0 + q_begin + r / a.group;
    const int head = kv_head * a.group + r % a.group;
    const float row_max = stats[r * 3 + 0];
    const float row_sum = stats[r * 3 + 1];
    if (a.num_splits == 1) {
      a.out[(row * a.num_heads + head) * hd + c] = row_max == -INFINITY ? 0.0f : acc_s[e] / row_sum;
    } else {
      const int64_t slot = (row * a.num_heads + head) * a.num_splits + split;
      a.partial_acc[slot * hd + c] = acc_s[e];
      if (c == 0) {
        a.partial_stats[slot * 2 + 0] = row_max;
        a.partial_stats[slot * 2 + 1] = row_sum;
      }
    }
  }
}

// out[row, h, :] from the splits' partials: rescaled to the largest max and normalised. Every
// split's thread block writes partials for every row of its tile (a split past a row's keys
// writes max -inf, ignored here), so each slot read was written for rows of valid sequences.
__global__ void __launch_bounds__(128)
    CombineSplitsKernel(const float* __restrict__ partial_acc,    // [rows, H, splits, hd]
                        const float* __restrict__ partial_stats,  // [rows, H, splits, 2]
                        int num_heads, int num_splits, int head_dim,
                        float* __restrict__ out) {  // [rows, H, hd]
  const int64_t slot0 = (static_cast<int64_t>(blockIdx.x) * num_heads + blockIdx.y) * num_splits;
  float global_max = -INFINITY;
  for (int z = 0; z < num_splits; ++z) {
    const float m = partial_stats[(slot0 + z) * 2];
    if (m != -INFINITY) global_max = NanMax(global_max, m);
  }
  float total = 0.0f;
  for (int z = 0; z < num_splits; ++z) {
    const float m = partial_stats[(slot0 + z) * 2];
    if (m != -INFINITY) total += partial_stats[(slot0 + z) * 2 + 1] * expf(m - global_max);
  }
  float* dst = out + (static_cast<int64_t>(blockIdx.x) * num_heads + blockIdx.y) * head_dim;
  for (int c = threadIdx.x; c < head_dim; c += blockDim.x) {
    if (global_max == -INFINITY) {
      dst[c] = 0.0f;
      continue;
    }
    float acc = 0.0f;
    for (int z = 0; z < num_splits; ++z) {
      const float m = partial_stats[(slot0 + z) * 2];
      if (m != -INFINITY) acc += partial_acc[(slot0 + z) * head_dim + c] * expf(m - global_max);
    }
    dst[c] = acc / total;
  }
}

// How a launch is cut up; the same for the workspace query and the launch.
struct Plan {
  int64_t group = 0;
  int64_t q_tile = 0;
  int64_t q_tiles_per_seq = 0;
  int64_t partition = 0;
  int64_t num_partitions = 0;
  int64_t parts_per_split = 0;
  int64_t num_splits = 0;
  size_t shared_bytes = 0;
  size_t workspace_bytes = 0;
  // Offsets of the partials in the workspace.
  size_t stats_offset = 0;
};

absl::StatusOr<Plan> MakePlan(CudaContext::Impl& ctx, const CudaPagedAttentionParams& p) {
  constexpr const char* kOp = "CudaPagedAttention";
  MOE_RETURN_IF_ERROR(cuda_internal::CheckPagedCache(kOp, p.cache, p.layer));
  MOE_RETURN_IF_ERROR(cuda_internal::CheckPagedBatch(kOp, p.batch, p.cache));
  const PagedKvCacheView& c = p.cache;
  const PagedBatch& b = p.batch;
  if (c.num_kv_heads > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": num_kv_heads = ", c.num_kv_heads, " exceeds 65535"));
  }
  if (p.num_heads < 1 || p.num_heads % c.num_kv_heads != 0 ||
      p.num_heads / c.num_kv_heads > kMaxPagedGqaRatio || p.num_heads > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        kOp, ": num_heads = ", p.num_heads, " must be a positive multiple of num_kv_heads (",
        c.num_kv_heads, ") at most ", kMaxPagedGqaRatio, " times it and at most 65535"));
  }
  if (b.num_query_rows > 0 && (p.q == nullptr || p.out == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": q and out must be set for ", b.num_query_rows, " rows"));
  }
  if (p.q_stride < p.num_heads * c.head_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": q_stride = ", p.q_stride,
                     " is less than num_heads x head_dim = ", p.num_heads * c.head_dim));
  }
  if (p.partition_tokens < 0 || p.partition_tokens > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": partition_tokens = ", p.partition_tokens, " is outside [0, 1024]"));
  }
  if (p.num_splits < 0 || p.num_splits > kMaxPagedSplits) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": num_splits = ", p.num_splits,
                                                   " is outside [0, ", kMaxPagedSplits, "]"));
  }
  if (!(p.scale >= 0.0f) || !std::isfinite(p.scale)) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": scale = ", p.scale, " must be finite and >= 0 (0: 1/sqrt(head_dim))"));
  }

  Plan plan;
  plan.group = p.num_heads / c.num_kv_heads;
  plan.q_tile = std::min(b.max_query_len, std::max<int64_t>(1, kTargetRows / plan.group));
  plan.q_tiles_per_seq = (b.max_query_len + plan.q_tile - 1) / plan.q_tile;
  const int64_t rows = plan.q_tile * plan.group;

  // Read once with the context's device info: planning runs for every layer of every step.
  const int64_t max_shared = ctx.info.max_shared_memory_per_block_optin;
  if (p.partition_tokens > 0) {
    plan.partition = p.partition_tokens;
  } else {
    // Halve the partition while the block would need more than the default shared memory.
    plan.partition = kDefaultPartition;
    while (plan.partition > kMinAutoPartition &&
           MakeSharedLayout(rows, c.head_dim, plan.partition).total > kDefaultSharedBytes) {
      plan.partition /= 2;
    }
  }
  plan.shared_bytes = MakeSharedLayout(rows, c.head_dim, plan.partition).total;
  if (plan.shared_bytes > static_cast<size_t>(max_shared)) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": ", rows, " query rows x head_dim ", c.head_dim, " with partitions of ",
                     plan.partition, " keys need ", plan.shared_bytes,
                     " bytes of shared memory; the device allows ", max_shared));
  }
  plan.num_partitions =
      std::max<int64_t>(1, (b.max_context_len + plan.partition - 1) / plan.partition);
  int64_t splits = p.num_splits;
  if (splits == 0) {
    // Enough thread blocks for two waves over the device, no more partials than that.
    const int64_t blocks = std::max<int64_t>(1, b.num_seqs * plan.q_tiles_per_seq * c.num_kv_heads);
    const int64_t wanted = 2 * std::max(1, ctx.info.multiprocessor_count);
    splits = std::clamp<int64_t>((wanted + blocks - 1) / blocks, 1, kMaxPagedSplits);
  }
  splits = std::min(splits, plan.num_partitions);
  plan.parts_per_split = (plan.num_partitions + splits - 1) / splits;
  plan.num_splits = (plan.num_partitions + plan.parts_per_split - 1) / plan.parts_per_split;

  if (plan.num_splits > 1) {
    const double slots =
        static_cast<double>(b.num_query_rows) * p.num_heads * static_cast<double>(plan.num_splits);
    if (slots * (c.head_dim + 2) * sizeof(float) > 0x1p62) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": split partials too large"));
    }
    const size_t n = static_cast<size_t>(b.num_query_rows) * p.num_heads * plan.num_splits;
    const size_t acc_bytes = n * c.head_dim * sizeof(float);
    plan.stats_offset = (acc_bytes + 255) / 256 * 256;
    plan.workspace_bytes = plan.stats_offset + n * 2 * sizeof(float);
  }
  return plan;
}

template <typename CacheT>
absl::Status Launch(cudaStream_t stream, const CudaPagedAttentionParams& p, const Plan& plan) {
  const PagedKvCacheView& c = p.cache;
  AttentionArgs a;
  a.batch = cuda_internal::MakeBatchView(p.batch);
  a.geometry = cuda_internal::MakePagedGeometry(c, p.layer);
  a.num_blocks = static_cast<int>(c.num_blocks);
  a.block_tokens = static_cast<int>(c.block_tokens);
  a.head_dim = static_cast<int>(c.head_dim);
  a.num_heads = static_cast<int>(p.num_heads);
  a.group = static_cast<int>(plan.group);
  a.q_tile = static_cast<int>(plan.q_tile);
  a.q_tiles_per_seq = static_cast<int>(plan.q_tiles_per_seq);
  a.partition = static_cast<int>(plan.partition);
  a.num_partitions = static_cast<int>(plan.num_partitions);
  a.parts_per_split = static_cast<int>(plan.parts_per_split);
  a.num_splits = static_cast<int>(plan.num_splits);
  a.scale = p.scale > 0.0f ? p.scale : 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  a.q = p.q;
  a.q_stride = p.q_stride;
  a.out = p.out;
  a.partial_acc = static_cast<float*>(p.workspace);
  a.partial_stats =
      plan.num_splits > 1
          ? reinterpret_cast<float*>(static_cast<char*>(p.workspace) + plan.stats_offset)
          : nullptr;

  if (plan.shared_bytes > kDefaultSharedBytes) {
    MOE_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(PagedAttentionKernel<CacheT>,
                                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                  static_cast<int>(plan.shared_bytes)));
  }
  const dim3 grid(static_cast<unsigned>(p.batch.num_seqs * plan.q_tiles_per_seq),
                  static_cast<unsigned>(c.num_kv_heads), static_cast<unsigned>(plan.num_splits));
  PagedAttentionKernel<CacheT>
      <<<grid, kThreads, plan.shared_bytes, stream>>>(a, static_cast<const CacheT*>(c.data));
  MOE_CUDA_RETURN_IF_LAUNCH_ERROR("PagedAttentionKernel");
  if (plan.num_splits > 1) {
    const dim3 combine_grid(static_cast<unsigned>(p.batch.num_query_rows),
                            static_cast<unsigned>(p.num_heads));
    CombineSplitsKernel<<<combine_grid, 128, 0, stream>>>(
        a.partial_acc, a.partial_stats, a.num_heads, a.num_splits, a.head_dim, p.out);
    MOE_CUDA_RETURN_IF_LAUNCH_ERROR("CombineSplitsKernel");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<size_t> CudaPagedAttentionWorkspaceBytes(CudaContext& context,
                                                        const CudaPagedAttentionParams& params) {
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  MOE_ASSIGN_OR_RETURN(const Plan plan, MakePlan(ctx, params));
  return plan.workspace_bytes;
}

// Bytes: each thread block reads its tile's keys' K and V rows once (sum over sequences and
// tiles of keys x KV x hd x 2 x sizeof(cache dtype)); decode reads each sequence's context
// once. Plus q and out (rows x H x hd x 4 each) and, split, the partials twice.
// FLOPs: 4 x hd per (query row, head, visible key): the q.k dot and the p.v accumulation.
absl::Status CudaPagedAttention(CudaContext& context, const CudaPagedAttentionParams& p) {
  CudaContext::Impl& ctx = context.impl();
  MOE_RETURN_IF_ERROR(ctx.Activate());
  MOE_ASSIGN_OR_RETURN(const Plan plan, MakePlan(ctx, p));
  if (p.batch.num_seqs == 0 || p.batch.num_query_rows == 0) return absl::OkStatus();
  if (plan.workspace_bytes > 0 &&
      (p.workspace == nullptr || p.workspace_bytes < plan.workspace_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaPagedAttention: workspace of ", p.workspace_bytes, " bytes",
                     p.workspace == nullptr ? " (null)" : "", "; these shapes need ",
                     plan.workspace_bytes, " (CudaPagedAttentionWorkspaceBytes)"));
  }
  switch (p.cache.dtype) {  // the op's one dtype dispatch
    case DType::kF32:
      return Launch<float>(ctx.stream, p, plan);
    case DType::kBF16:
      return Launch<__nv_bfloat16>(ctx.stream, p, plan);
    default:
      return absl::InvalidArgumentError(absl::StrCat("CudaPagedAttention: cache dtype ",
                                                     std::string(DTypeName(p.cache.dtype)),
                                                     " is not supported"));
  }
}

}  // namespace moe::kernels
