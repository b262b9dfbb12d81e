#include "server/engine/decoder/kv_cache.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe::engine {
namespace {

// Block ids are int32 (block tables stay small); the pool holds at most this many.
constexpr int64_t kMaxBlocks = std::numeric_limits<int32_t>::max();
// Bounds on each dimension, far above real models (and the loader's limits), so that the byte
// product of all four, 2 x 4 bytes x 2^48 = 2^51, fits in int64_t and uint64_t.
constexpr int64_t kMaxDimension = int64_t{1} << 12;

uint64_t NextCacheId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

KvCache::KvCache(const KvCacheShape& shape, int64_t total_blocks, std::unique_ptr<float[]> storage)
    : id_(NextCacheId()),
      shape_(shape),
      total_blocks_(total_blocks),
      layer_floats_(shape.num_kv_heads * shape.block_tokens * shape.head_dim),
      block_floats_(2 * shape.num_layers * layer_floats_),
      storage_(std::move(storage)) {
  free_list_.reserve(static_cast<size_t>(total_blocks));
  // Pushed in reverse so that block 0 is handed out first (easier to read in a debugger).
  for (int64_t block = total_blocks - 1; block >= 0; --block) {
    free_list_.push_back(static_cast<int32_t>(block));
  }
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const KvCacheShape& shape, uint64_t bytes,
                                                         KvStorage storage_kind) {
  for (const auto& [name, value] : {std::pair<const char*, int64_t>{"num_layers", shape.num_layers},
                                    {"num_kv_heads", shape.num_kv_heads},
                                    {"head_dim", shape.head_dim},
                                    {"block_tokens", shape.block_tokens}}) {
    if (value < 1 || value > kMaxDimension) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV cache: ", name, " = ", value, " is outside [1, ", kMaxDimension, "]"));
    }
  }
  const uint64_t per_block = 2 * sizeof(float) * static_cast<uint64_t>(shape.num_layers) *
                             static_cast<uint64_t>(shape.num_kv_heads) *
                             static_cast<uint64_t>(shape.block_tokens) *
                             static_cast<uint64_t>(shape.head_dim);
  const uint64_t blocks = bytes / per_block;
  if (blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache: ", bytes, " bytes hold no block of ", per_block, " bytes (", shape.block_tokens,
        " tokens x ", shape.num_layers, " layers x K and V x ", shape.num_kv_heads, " kv heads x ",
        shape.head_dim, " x 4 bytes); give it at least ", per_block, " bytes"));
  }
  const int64_t total_blocks = static_cast<int64_t>(std::min<uint64_t>(blocks, kMaxBlocks));
  if (storage_kind == KvStorage::kNone) {
    return std::unique_ptr<KvCache>(new KvCache(shape, total_blocks, nullptr));
  }
  // Not value-initialised: the pages are only touched when tokens are written, and a block's
  // contents are never read past the sequence's length.
  std::unique_ptr<float[]> storage(
      new (std::nothrow) float[total_blocks * (per_block / sizeof(float))]);
  if (storage == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache: cannot allocate ", total_blocks * per_block, " bytes (",
                     total_blocks, " blocks of ", per_block, " bytes)"));
  }
  return std::unique_ptr<KvCache>(new KvCache(shape, total_blocks, std::move(storage)));
}

uint64_t KvCache::bytes_per_block() const {
  return static_cast<uint64_t>(block_floats_) * sizeof(float);
}

int64_t KvCache::BlocksFor(int64_t tokens) const {
  if (tokens <= 0) return 0;
  return (tokens + shape_.block_tokens - 1) / shape_.block_tokens;
}

bool KvCache::Take(int64_t count, std::vector<int32_t>* table) {
  if (count > free_blocks()) return false;
  for (int64_t i = 0; i < count; ++i) {
    table->push_back(free_list_.back());
    free_list_.pop_back();
  }
  return true;
}

void KvCache::Give(std::span<const int32_t> blocks) {
  free_list_.insert(free_list_.end(), blocks.rbegin(), blocks.rend());
}

KvSequence::KvSequence(KvSequence&& other) noexcept
    : cache_(other.cache_), blocks_(std::move(other.blocks_)), length_(other.length_) {
  other.blocks_.clear();
  other.length_ = 0;
}

KvSequence& KvSequence::operator=(KvSequence&& other) noexcept {
  if (this != &other) {
    Release();
    cache_ = other.cache_;
    blocks_ = std::move(other.blocks_);
    length_ = other.length_;
    other.blocks_.clear();
    other.length_ = 0;
  }
  return *this;
}

bool KvSequence::Reserve(int64_t total_tokens) {
  const int64_t needed = cache_->BlocksFor(total_tokens) - num_blocks();
  if (needed <= 0) return true;
  return cache_->Take(needed, &blocks_);
}

void KvSequence::Release() {
  if (cache_ != nullptr && !blocks_.empty()) cache_->Give(blocks_);
  blocks_.clear();
  length_ = 0;
}

int64_t KvSequence::capacity_tokens() const { return num_blocks() * cache_->block_tokens(); }

}  // namespace moe::engine
