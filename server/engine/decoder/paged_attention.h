// Grouped-query causal attention over the paged KV cache: each chunk of new tokens attends to
// everything its sequence has cached plus itself, causally, reading keys and values through the
// sequence's block table.
#pragma once

#include <cstdint>
#include <span>

#include "server/engine/decoder/kv_cache.h"

namespace moe::engine {

struct AttentionGeometry {
  int64_t num_heads = 0;     // H (query heads)
  int64_t num_kv_heads = 0;  // KV; every H / KV consecutive query heads share one
  int64_t head_dim = 0;      // hd
};

// One chunk of a step: `num_tokens` new tokens of `sequence` at positions
// [start, start + num_tokens), held in rows [first_row, first_row + num_tokens) of the step's
// q/k/v buffer.
struct AttentionChunk {
  const KvSequence* sequence = nullptr;
  int64_t start = 0;
  int64_t num_tokens = 0;
  int64_t first_row = 0;
};

// The step's projections: row r holds q [H hd], then k [KV hd], then v [KV hd] (after RoPE and
// any q/k norm), `stride` floats apart.
struct QkvRows {
  const float* data = nullptr;
  int64_t stride = 0;
};

// Copies every chunk's k and v rows into layer `layer` of its sequence's blocks (sequences may
// come from different caches of the same geometry). The blocks
// must be reserved (capacity >= start + num_tokens).
void WriteKv(int64_t layer, std::span<const AttentionChunk> chunks,
             const AttentionGeometry& geometry, QkvRows qkv);

// out[row, h hd .. (h+1) hd) = softmax(q k^T / sqrt(hd)) v over positions [0, position] of the
// row's sequence, for every row of every chunk; scores and softmax in float32, max-subtracted.
// Call after WriteKv for the same layer. Parallel over (chunk, head, block of queries).
void PagedAttention(int64_t layer, std::span<const AttentionChunk> chunks,
                    const AttentionGeometry& geometry, QkvRows qkv, float* out);

}  // namespace moe::engine
