// Paged attention on a CUDA device: grouped-query causal attention of a step's new tokens over
// a paged KV cache, and the scatter that writes their keys and values into it. The host API has
// no CUDA types; every pointer below is device memory unless named host_*.
//
// The cache has the decoder's layout (server/engine/decoder/kv_cache.h), so a device mirror of
// the host pool is one memcpy: block b holds, for each layer l, K then V, each
// [num_kv_heads, block_tokens, head_dim]:
//
//   element (b, l, K=0|V=1, kv_head, slot, c) at
//     ((((b * num_layers + l) * 2 + kv) * num_kv_heads + kv_head) * block_tokens + slot) * head_dim
//     + c
//
// A step is a batch of sequences, each with a block table and a chunk of new tokens (decode: one
// token per sequence; prefill: a chunk of its prompt). New token i of sequence s sits at
// position context_lens[s] - n_s + i (n_s its new tokens) and attends to positions
// [0, that position]: everything cached before the chunk plus the chunk causally. The cache
// must already hold the chunk's own keys and values (CudaWritePagedKv first), as on the CPU.
//
// Usage for one layer of one step, all on the context's stream:
//   CudaWritePagedKv(ctx, {cache, layer, batch, k, k_stride, v, v_stride});
//   bytes = CudaPagedAttentionWorkspaceBytes(ctx, params);  // once per step shape
//   CudaPagedAttention(ctx, params);                         // params.workspace >= bytes
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "moe/kernels/cuda_moe.h"
#include "moe/kernels/dtype.h"

namespace moe::kernels {

// The whole paged pool on the device.
struct PagedKvCacheView {
  void* data = nullptr;       // [num_blocks, num_layers, 2, num_kv_heads, block_tokens, head_dim]
  DType dtype = DType::kF32;  // kF32 (the decoder's cache) or kBF16
  int64_t num_blocks = 0;
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t block_tokens = 16;
  int64_t head_dim = 0;  // at most kMaxPagedHeadDim
};

inline constexpr int64_t kMaxPagedHeadDim = 256;
// Query heads sharing one kv head, at most.
inline constexpr int64_t kMaxPagedGqaRatio = 64;

// A step's sequences. Arrays are device int32; the int64 bounds are host values the launch is
// sized by. The kernels never read or write out of bounds whatever the arrays hold: a sequence
// whose values break the bounds below is clamped to them or skipped (its rows are then not
// meaningful), and a block id outside [0, num_blocks) reads as NaN and is never written.
struct PagedBatch {
  int64_t num_seqs = 0;
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq], in position order
  int64_t max_blocks_per_seq = 0;
  // [num_seqs] tokens cached for each sequence once this step's new tokens are written,
  // each <= max_context_len and <= max_blocks_per_seq * block_tokens.
  const int32_t* context_lens = nullptr;
  // [num_seqs + 1] rows of each sequence's new tokens in q/k/v/out: sequence s owns rows
  // [query_start_loc[s], query_start_loc[s + 1]). Null for decode: one new token per sequence,
  // in row s (then num_query_rows == num_seqs and max_query_len == 1).
  const int32_t* query_start_loc = nullptr;
  int64_t num_query_rows = 0;   // rows of q/k/v/out (query_start_loc[num_seqs])
  int64_t max_query_len = 1;    // >= every sequence's new tokens
  int64_t max_context_len = 0;  // >= every context_lens[s]
};

struct CudaWritePagedKvParams {
  PagedKvCacheView cache;
  int64_t layer = 0;
  PagedBatch batch;
  // New keys and values, float32: row r's kv head h at k + r * k_stride + h * head_dim (the
  // decoder's qkv rows: k = qkv + H * hd, v = k + KV * hd, both strides H*hd + 2*KV*hd).
  const float* k = nullptr;
  int64_t k_stride = 0;  // floats between rows, >= num_kv_heads * head_dim
  const float* v = nullptr;
  int64_t v_stride = 0;
};

// Writes every new token's K and V rows into its sequence's block at its position (converted
// to the cache dtype, round to nearest even). INVALID_ARGUMENT for bad shapes or null pointers.
absl::Status CudaWritePagedKv(CudaContext& context, const CudaWritePagedKvParams& params);

struct CudaPagedAttentionParams {
  PagedKvCacheView cache;
  int64_t layer = 0;
  PagedBatch batch;
  int64_t num_heads = 0;  // H, a multiple of cache.num_kv_heads; head h reads kv head h / (H/KV)
  // float32: row r's head h at q + r * q_stride + h * head_dim (after RoPE).
  const float* q = nullptr;
  int64_t q_stride = 0;  // floats between rows, >= num_heads * head_dim
  float* out = nullptr;  // [num_query_rows, num_heads, head_dim] float32
  // Caller-owned scratch of at least CudaPagedAttentionWorkspaceBytes (may be null when that
  // is 0).
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // Tuning (0: automatic). Keys are processed in partitions of partition_tokens (online softmax
  // across partitions); the partitions are split over num_splits thread blocks per query tile,
  // whose partial results a second kernel combines (split-K, for long contexts and few
  // sequences). Tests set them to exercise every path.
  int64_t partition_tokens = 0;  // 1..1024
  int64_t num_splits = 0;        // 1..kMaxPagedSplits
  float scale = 0.0f;            // 0: 1 / sqrt(head_dim)
};

inline constexpr int64_t kMaxPagedSplits = 64;

// Device scratch CudaPagedAttention needs for these shapes and tuning (0 when one thread block
// covers every query's keys). INVALID_ARGUMENT as CudaPagedAttention for bad shapes.
absl::StatusOr<size_t> CudaPagedAttentionWorkspaceBytes(CudaContext& context,
                                                        const CudaPagedAttentionParams& params);

// out[r, h, :] = softmax(scale * q[r, h, :] . K[j, h/(H/KV), :]) V over the row's positions j
// (see the top of this file); scores, softmax (max-subtracted) and sums in float32. A row with
// no keys (context length 0) gets zeros. INVALID_ARGUMENT for bad shapes, null pointers or a
// workspace smaller than CudaPagedAttentionWorkspaceBytes.
absl::Status CudaPagedAttention(CudaContext& context, const CudaPagedAttentionParams& params);

}  // namespace moe::kernels
