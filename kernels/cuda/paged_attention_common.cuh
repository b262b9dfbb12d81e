// What the paged-attention ops share: the host-side shape checks (INVALID_ARGUMENT naming the
// bad value), the cache geometry in elements, and the per-sequence metadata the kernels read
// (clamped so that no value in the device arrays can make a kernel leave its buffers).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "moe/kernels/cuda_paged_attention.h"
#include "moe/kernels/dtype.h"

namespace moe::kernels::cuda_internal {

// Each cache dimension at most this (as the host KvCache), so that element offsets fit int64.
inline constexpr int64_t kMaxPagedDimension = int64_t{1} << 16;
inline constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// Strides of the pool in elements (see cuda_paged_attention.h for the layout).
struct PagedGeometry {
  int64_t head_elems = 0;    // one kv head of K (or V) of one layer of one block: bt * hd
  int64_t layer_elems = 0;   // K (or V) of one layer of one block: KV * bt * hd
  int64_t block_elems = 0;   // everything of one block: num_layers * 2 * layer_elems
  int64_t layer_offset = 0;  // K of layer `layer` within its block: layer * 2 * layer_elems
};

inline PagedGeometry MakePagedGeometry(const PagedKvCacheView& cache, int64_t layer) {
  PagedGeometry g;
  g.head_elems = cache.block_tokens * cache.head_dim;
  g.layer_elems = cache.num_kv_heads * g.head_elems;
  g.block_elems = cache.num_layers * 2 * g.layer_elems;
  g.layer_offset = layer * 2 * g.layer_elems;
  return g;
}

inline absl::Status CheckPagedCache(const char* op, const PagedKvCacheView& cache, int64_t layer) {
  if (cache.data == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(op, ": cache.data is null"));
  if (cache.dtype != DType::kF32 && cache.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": cache dtype ",
                                                   std::string(DTypeName(cache.dtype)),
                                                   " is not supported (F32 or BF16)"));
  }
  if (cache.num_blocks < 1 || cache.num_blocks > kInt32Max) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": cache.num_blocks = ", cache.num_blocks,
                                                   " is outside [1, ", kInt32Max, "]"));
  }
  for (const auto& [name, value] : {std::pair<const char*, int64_t>{"num_layers", cache.num_layers},
                                    {"num_kv_heads", cache.num_kv_heads},
                                    {"block_tokens", cache.block_tokens}}) {
    if (value < 1 || value > kMaxPagedDimension) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": cache.", name, " = ", value,
                                                     " is outside [1, ", kMaxPagedDimension, "]"));
    }
  }
  if (cache.head_dim < 1 || cache.head_dim > kMaxPagedHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": cache.head_dim = ", cache.head_dim,
                                                   " is outside [1, ", kMaxPagedHeadDim, "]"));
  }
  // num_blocks < 2^31 and every other factor <= 2^16 (head_dim <= 2^8): the pool's element
  // count is below 2^31 * 2^16 * 2 * 2^16 * 2^16 * 2^8... which could overflow, so check it.
  const double elements = static_cast<double>(cache.num_blocks) * cache.num_layers * 2.0 *
                          cache.num_kv_heads * cache.block_tokens * cache.head_dim;
  if (elements > 0x1p62) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": the cache's ", elements, " elements overflow 64-bit offsets"));
  }
  if (layer < 0 || layer >= cache.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": layer ", layer, " is outside [0, ", cache.num_layers, ")"));
  }
  return absl::OkStatus();
}

inline absl::Status CheckPagedBatch(const char* op, const PagedBatch& batch,
                                    const PagedKvCacheView& cache) {
  if (batch.num_seqs < 0 || batch.num_seqs > kInt32Max) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": num_seqs = ", batch.num_seqs, " is outside [0, ", kInt32Max, "]"));
  }
  if (batch.num_query_rows < 0 || batch.num_query_rows > kInt32Max) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": num_query_rows = ", batch.num_query_rows,
                                                   " is outside [0, ", kInt32Max, "]"));
  }
  if (batch.max_query_len < 1 || batch.max_query_len > kInt32Max) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": max_query_len = ", batch.max_query_len,
                                                   " is outside [1, ", kInt32Max, "]"));
  }
  if (batch.query_start_loc == nullptr) {
    if (batch.num_query_rows != batch.num_seqs || batch.max_query_len != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          op, ": without query_start_loc (decode: one new token per sequence) num_query_rows (",
          batch.num_query_rows, ") must equal num_seqs (", batch.num_seqs, ") and max_query_len (",
          batch.max_query_len, ") must be 1"));
    }
  }
  if (batch.num_seqs == 0) return absl::OkStatus();
  if (batch.block_tables == nullptr || batch.context_lens == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": block_tables and context_lens must be set for ", batch.num_seqs, " sequences"));
  }
  if (batch.max_blocks_per_seq < 1 || batch.max_blocks_per_seq > kInt32Max) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": max_blocks_per_seq = ", batch.max_blocks_per_seq, " is outside [1, ",
                     kInt32Max, "]"));
  }
  if (static_cast<double>(batch.num_seqs) * batch.max_blocks_per_seq > 0x1p62) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": block table [", batch.num_seqs, ", ",
                                                   batch.max_blocks_per_seq, "] is too large"));
  }
  const int64_t table_tokens = batch.max_blocks_per_seq * cache.block_tokens;
  if (batch.max_context_len < 0 || batch.max_context_len > table_tokens ||
      batch.max_context_len > kInt32Max) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": max_context_len = ", batch.max_context_len, " is outside [0, ",
                     table_tokens, "] (max_blocks_per_seq ", batch.max_blocks_per_seq,
                     " x block_tokens ", cache.block_tokens, ")"));
  }
  // One thread block per (sequence, new token) in the write, per (sequence, query tile) in
  // attention: grid.x bound.
  if (static_cast<double>(batch.num_seqs) * batch.max_query_len > kInt32Max) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": num_seqs x max_query_len = ", batch.num_seqs, " x ",
                     batch.max_query_len, " exceeds ", kInt32Max));
  }
  return absl::OkStatus();
}

// One sequence's new rows as a kernel sees them, clamped to the launch's bounds.
struct SequenceRows {
  int row0 = 0;        // first row of its new tokens
  int new_tokens = 0;  // n_s as the metadata says (positions are counted from it)
  int rows = 0;        // rows actually inside [0, num_query_rows) and <= max_query_len
  int context = 0;     // context length clamped to [0, max_context_len]
};

struct BatchView {
  const int32_t* block_tables;     // [num_seqs, max_blocks]
  const int32_t* context_lens;     // [num_seqs]
  const int32_t* query_start_loc;  // [num_seqs + 1] or null (decode)
  int max_blocks;
  int num_query_rows;
  int max_query_len;
  int max_context_len;
};

inline BatchView MakeBatchView(const PagedBatch& batch) {
  return {batch.block_tables,
          batch.context_lens,
          batch.query_start_loc,
          static_cast<int>(batch.max_blocks_per_seq),
          static_cast<int>(batch.num_query_rows),
          static_cast<int>(batch.max_query_len),
          static_cast<int>(batch.max_context_len)};
}

__device__ __forceinline__ SequenceRows LoadSequenceRows(const BatchView& b, int s) {
  SequenceRows out;
  int64_t row0 = s, n = 1;
  if (b.query_start_loc != nullptr) {
    row0 = b.query_start_loc[s];
    n = static_cast<int64_t>(b.query_start_loc[s + 1]) - row0;
  }
  const int64_t context = b.context_lens[s];
  out.context = static_cast<int>(
      context < 0 ? 0 : (context > b.max_context_len ? b.max_context_len : context));
  if (row0 < 0 || row0 >= b.num_query_rows || n <= 0) return out;  // rows = 0
  int64_t rows = n < b.max_query_len ? n : b.max_query_len;
  if (row0 + rows > b.num_query_rows) rows = b.num_query_rows - row0;
  out.row0 = static_cast<int>(row0);
  out.new_tokens = static_cast<int>(n);
  out.rows = static_cast<int>(rows);
  return out;
}

}  // namespace moe::kernels::cuda_internal
