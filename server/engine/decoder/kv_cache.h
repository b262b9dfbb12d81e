// Paged key/value cache: one pool of fixed-size blocks shared by every sequence, each sequence
// holding a block table (vLLM's PagedAttention layout). Blocks are the scheduler's admission
// budget: a sequence reserves the blocks its next tokens need before a step, and gives all of
// them back at once when it finishes, is cancelled or is preempted.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::engine {

struct KvCacheShape {
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_tokens = 16;

  bool operator==(const KvCacheShape&) const = default;
};

// Where the blocks' keys and values live.
enum class KvStorage {
  kHost,  // host memory, float32: the CPU decoder reads and writes it through keys()/values()
  kNone,  // bookkeeping only: a device decoder keeps the blocks in its own device memory
};

// The pool. Thread-compatible: the scheduler thread owns it and the sequences drawn from it.
//
// Memory layout, float32: block b holds, for each layer l, K then V, each
// [num_kv_heads, block_tokens, head_dim], so one head's keys of a block are contiguous (the
// attention loop walks them in order).
class KvCache {
 public:
  // A pool of floor(bytes / bytes_per_block) blocks. INVALID_ARGUMENT for a non-positive
  // dimension or when that is fewer than one block (the message names both sizes);
  // RESOURCE_EXHAUSTED when the memory cannot be had. With KvStorage::kNone nothing is
  // allocated here; `bytes` still sizes the pool, in the device memory of whoever stores it.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const KvCacheShape& shape, uint64_t bytes,
                                                         KvStorage storage = KvStorage::kHost);

  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  const KvCacheShape& shape() const { return shape_; }
  int64_t total_blocks() const { return total_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_list_.size()); }
  int64_t block_tokens() const { return shape_.block_tokens; }
  // K and V of every layer for one block.
  uint64_t bytes_per_block() const;
  // Blocks needed to hold `tokens` tokens (0 for tokens <= 0).
  int64_t BlocksFor(int64_t tokens) const;

  KvStorage storage() const { return storage_ ? KvStorage::kHost : KvStorage::kNone; }
  // Unique among the caches this process has made (never 0). Whoever keeps a cache's blocks
  // elsewhere (a device pool) knows the cache by it, not by its address, which a later cache
  // may reuse.
  uint64_t id() const { return id_; }

  // Where block `block`'s keys / values of `layer` start ([num_kv_heads, block_tokens,
  // head_dim]). For the decoder's attention; `block` comes from a sequence's block table.
  // KvStorage::kHost only.
  float* keys(int32_t block, int64_t layer) { return Layer(block, layer); }
  float* values(int32_t block, int64_t layer) { return Layer(block, layer) + layer_floats_; }

 private:
  friend class KvSequence;
  KvCache(const KvCacheShape& shape, int64_t total_blocks, std::unique_ptr<float[]> storage);

  float* Layer(int32_t block, int64_t layer) {
    return storage_.get() + block * block_floats_ + layer * 2 * layer_floats_;
  }
  // Takes `count` blocks into `table`, or none (false) when fewer are free.
  bool Take(int64_t count, std::vector<int32_t>* table);
  void Give(std::span<const int32_t> blocks);

  const uint64_t id_;
  KvCacheShape shape_;
  int64_t total_blocks_ = 0;
  int64_t layer_floats_ = 0;  // one of K or V of one layer in one block
  int64_t block_floats_ = 0;  // everything of one block
  std::unique_ptr<float[]> storage_;
  std::vector<int32_t> free_list_;  // a stack: recently freed blocks are reused first
};

// One sequence's block table and length (the tokens whose K/V are stored). Thread-compatible;
// movable, not copyable. The cache must outlive it.
class KvSequence {
 public:
  explicit KvSequence(KvCache* cache) : cache_(cache) {}
  ~KvSequence() { Release(); }
  KvSequence(KvSequence&& other) noexcept;
  KvSequence& operator=(KvSequence&& other) noexcept;
  KvSequence(const KvSequence&) = delete;
  KvSequence& operator=(const KvSequence&) = delete;

  // Grows the block table to hold `total_tokens` tokens; true when it already does. False, with
  // nothing taken, when the pool lacks the blocks.
  bool Reserve(int64_t total_tokens);
  // Gives every block back at once; length and capacity drop to 0 (finish, cancel, preemption).
  void Release();

  int64_t length() const { return length_; }
  int64_t capacity_tokens() const;
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  KvCache* cache() const { return cache_; }
  std::span<const int32_t> blocks() const { return blocks_; }

  // For DecoderModel::Step: records that `tokens` more tokens' K/V are stored. The caller
  // checked the capacity.
  void Advance(int64_t tokens) { length_ += tokens; }

 private:
  KvCache* cache_;
  std::vector<int32_t> blocks_;
  int64_t length_ = 0;
};

}  // namespace moe::engine
