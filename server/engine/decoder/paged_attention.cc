#include "server/engine/decoder/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include <omp.h>

namespace moe::engine {
namespace {

// Queries per task: enough work per task for a decode step's few heads and a long prefill alike.
constexpr int64_t kQueriesPerTask = 16;

struct Task {
  int32_t chunk;
  int32_t head;
  int64_t query_begin;  // within the chunk
};

float Dot(const float* a, const float* b, int64_t n) {
  // Four partial sums let the compiler keep several multiply-adds in flight.
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

// One query row against positions [0, position] of its sequence.
void AttendOne(KvCache& cache, int64_t layer, const KvSequence& sequence, int64_t kv_head,
               const float* q, int64_t position, int64_t head_dim, float scale, float* scores,
               float* out) {
  const int64_t block_tokens = cache.block_tokens();
  const std::span<const int32_t> table = sequence.blocks();
  const int64_t head_offset = kv_head * block_tokens * head_dim;
  const int64_t keys = position + 1;
  float max_score = -INFINITY;
  for (int64_t j = 0; j < keys; ++j) {
    const float* k =
        cache.keys(table[j / block_tokens], layer) + head_offset + (j % block_tokens) * head_dim;
    scores[j] = Dot(q, k, head_dim) * scale;
    max_score = std::max(max_score, scores[j]);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < keys; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    sum += scores[j];
  }
  std::fill_n(out, head_dim, 0.0f);
  for (int64_t j = 0; j < keys; ++j) {
    const float* v =
        cache.values(table[j / block_tokens], layer) + head_offset + (j % block_tokens) * head_dim;
    const float p = scores[j];
    for (int64_t c = 0; c < head_dim; ++c) out[c] += p * v[c];
  }
  const float inv_sum = 1.0f / sum;
  for (int64_t c = 0; c < head_dim; ++c) out[c] *= inv_sum;
}

}  // namespace

void WriteKv(int64_t layer, std::span<const AttentionChunk> chunks,
             const AttentionGeometry& geometry, QkvRows qkv) {
  const int64_t hd = geometry.head_dim;
  const int64_t k_offset = geometry.num_heads * hd;
  const int64_t v_offset = k_offset + geometry.num_kv_heads * hd;
  for (const AttentionChunk& chunk : chunks) {
    KvCache& cache = *chunk.sequence->cache();
    const int64_t block_tokens = cache.block_tokens();
    const std::span<const int32_t> table = chunk.sequence->blocks();
    for (int64_t i = 0; i < chunk.num_tokens; ++i) {
      const int64_t position = chunk.start + i;
      const int32_t block = table[position / block_tokens];
      const int64_t slot = position % block_tokens;
      const float* row = qkv.data + (chunk.first_row + i) * qkv.stride;
      for (int64_t h = 0; h < geometry.num_kv_heads; ++h) {
        const int64_t at = (h * block_tokens + slot) * hd;
        std::memcpy(cache.keys(block, layer) + at, row + k_offset + h * hd, hd * sizeof(float));
        std::memcpy(cache.values(block, layer) + at, row + v_offset + h * hd, hd * sizeof(float));
      }
    }
  }
}

void PagedAttention(int64_t layer, std::span<const AttentionChunk> chunks,
                    const AttentionGeometry& geometry, QkvRows qkv, float* out) {
  const int64_t hd = geometry.head_dim;
  const int64_t heads = geometry.num_heads;
  const int64_t group = heads / geometry.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  std::vector<Task> tasks;
  int64_t longest = 0;
  for (size_t c = 0; c < chunks.size(); ++c) {
    longest = std::max(longest, chunks[c].start + chunks[c].num_tokens);
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t q = 0; q < chunks[c].num_tokens; q += kQueriesPerTask) {
        tasks.push_back({static_cast<int32_t>(c), static_cast<int32_t>(h), q});
      }
    }
  }
  const int64_t num_tasks = static_cast<int64_t>(tasks.size());
  // Waking the team costs more than a tiny step's attention.
  int64_t work = 0;
  for (const AttentionChunk& chunk : chunks) work += chunk.num_tokens * (chunk.start + 1);
  work *= heads * hd;
  // Each thread's scores row, allocated here: a std::bad_alloc thrown inside the parallel
  // region could not leave it (std::terminate); out here it reaches the scheduler, which fails
  // the step with RESOURCE_EXHAUSTED.
  std::vector<float> all_scores(static_cast<size_t>(omp_get_max_threads()) *
                                static_cast<size_t>(longest));
#pragma omp parallel if (num_tasks > 1 && work > (int64_t{1} << 16))
  {
    float* const scores = all_scores.data() +
                          static_cast<size_t>(omp_get_thread_num()) * static_cast<size_t>(longest);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < num_tasks; ++t) {
      const Task& task = tasks[t];
      const AttentionChunk& chunk = chunks[task.chunk];
      const int64_t end = std::min(chunk.num_tokens, task.query_begin + kQueriesPerTask);
      for (int64_t i = task.query_begin; i < end; ++i) {
        const int64_t row = chunk.first_row + i;
        const float* q = qkv.data + row * qkv.stride + task.head * hd;
        AttendOne(*chunk.sequence->cache(), layer, *chunk.sequence, task.head / group, q,
                  chunk.start + i, hd, scale, scores, out + row * heads * hd + task.head * hd);
      }
    }
  }
}

}  // namespace moe::engine
