// The paged KV cache's block accounting: what the scheduler's admission and preemption rely on.
#include "server/engine/decoder/kv_cache.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace moe::engine {
namespace {

using ::moe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr KvCacheShape kShape{.num_layers = 2, .num_kv_heads = 3, .head_dim = 8, .block_tokens = 4};
// 2 layers x (K and V) x 3 heads x 4 tokens x 8 x 4 bytes.
constexpr uint64_t kBlockBytes = 2 * 2 * 3 * 4 * 8 * 4;

std::unique_ptr<KvCache> MakeCache(int64_t blocks, uint64_t extra_bytes = 0) {
  auto cache = KvCache::Create(kShape, blocks * kBlockBytes + extra_bytes);
  EXPECT_TRUE(cache.ok()) << cache.status();
  return std::move(cache).value();
}

TEST(KvCacheTest, PoolHoldsWholeBlocksOfTheGivenBytes) {
  auto cache = MakeCache(5, kBlockBytes - 1);  // the remainder is not a block
  EXPECT_EQ(cache->bytes_per_block(), kBlockBytes);
  EXPECT_EQ(cache->total_blocks(), 5);
  EXPECT_EQ(cache->free_blocks(), 5);
  EXPECT_EQ(cache->block_tokens(), 4);
  EXPECT_EQ(cache->BlocksFor(0), 0);
  EXPECT_EQ(cache->BlocksFor(1), 1);
  EXPECT_EQ(cache->BlocksFor(4), 1);
  EXPECT_EQ(cache->BlocksFor(5), 2);
}

TEST(KvCacheTest, BookkeepingOnlyPoolKeepsTheSameBlocksWithoutHostMemory) {
  // 16 GiB of blocks: with KvStorage::kNone no block memory is allocated here.
  constexpr uint64_t kBytes = uint64_t{1} << 34;
  auto cache = KvCache::Create(kShape, kBytes, KvStorage::kNone);
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ((*cache)->storage(), KvStorage::kNone);
  EXPECT_EQ((*cache)->total_blocks(), static_cast<int64_t>(kBytes / kBlockBytes));
  KvSequence sequence(cache->get());
  ASSERT_TRUE(sequence.Reserve(9));
  EXPECT_EQ(sequence.num_blocks(), 3);
  EXPECT_EQ(MakeCache(2)->storage(), KvStorage::kHost);
}

// A device pool knows its cache by id: a cache made where a freed one was must not share it.
TEST(KvCacheTest, EveryCacheHasItsOwnId) {
  std::set<uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    std::unique_ptr<KvCache> cache = MakeCache(2);  // freed at the end of each iteration
    EXPECT_NE(cache->id(), 0u);
    EXPECT_TRUE(ids.insert(cache->id()).second) << "id " << cache->id() << " given twice";
  }
}

TEST(KvCacheTest, CreateRefusesLessThanOneBlockNamingTheSizes) {
  EXPECT_THAT(
      KvCache::Create(kShape, kBlockBytes - 1),
      StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr(std::to_string(kBlockBytes - 1)),
                                                         HasSubstr(std::to_string(kBlockBytes)))));
  EXPECT_THAT(KvCache::Create(kShape, 0), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(KvCacheTest, CreateRefusesNonPositiveDimensions) {
  KvCacheShape shape = kShape;
  shape.block_tokens = 0;
  EXPECT_THAT(KvCache::Create(shape, 1 << 20),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("block_tokens")));
  shape = kShape;
  shape.head_dim = -1;
  EXPECT_THAT(KvCache::Create(shape, 1 << 20),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("head_dim")));
  // Dimensions whose block size would overflow 64 bits (2 x 4 bytes x 2^64) are refused, not
  // wrapped into a small block.
  const KvCacheShape huge{
      .num_layers = 1 << 16, .num_kv_heads = 1 << 16, .head_dim = 1 << 16, .block_tokens = 1 << 16};
  EXPECT_THAT(KvCache::Create(huge, uint64_t{1} << 40, KvStorage::kNone),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside [1, 4096]")));
}

TEST(KvCacheTest, ReserveGrowsTheBlockTableToTheTokenCount) {
  auto cache = MakeCache(6);
  KvSequence sequence(cache.get());
  EXPECT_EQ(sequence.capacity_tokens(), 0);
  ASSERT_TRUE(sequence.Reserve(5));
  EXPECT_EQ(sequence.num_blocks(), 2);
  EXPECT_EQ(sequence.capacity_tokens(), 8);
  EXPECT_EQ(cache->free_blocks(), 4);
  ASSERT_TRUE(sequence.Reserve(8));  // already held
  EXPECT_EQ(sequence.num_blocks(), 2);
  ASSERT_TRUE(sequence.Reserve(3));  // never shrinks
  EXPECT_EQ(sequence.num_blocks(), 2);
  ASSERT_TRUE(sequence.Reserve(9));
  EXPECT_EQ(sequence.num_blocks(), 3);
  EXPECT_EQ(cache->free_blocks(), 3);
  EXPECT_EQ(sequence.length(), 0);
}

TEST(KvCacheTest, FailedReserveTakesNothing) {
  auto cache = MakeCache(4);
  KvSequence a(cache.get());
  KvSequence b(cache.get());
  ASSERT_TRUE(a.Reserve(9));   // 3 blocks
  EXPECT_FALSE(b.Reserve(8));  // needs 2, 1 free
  EXPECT_EQ(b.num_blocks(), 0);
  EXPECT_EQ(cache->free_blocks(), 1);
  EXPECT_FALSE(a.Reserve(17));  // needs 2 more
  EXPECT_EQ(a.num_blocks(), 3);
  EXPECT_EQ(cache->free_blocks(), 1);
  EXPECT_TRUE(b.Reserve(4));
  EXPECT_EQ(cache->free_blocks(), 0);
}

TEST(KvCacheTest, ReleaseFreesEveryBlockAtOnce) {
  auto cache = MakeCache(4);
  KvSequence sequence(cache.get());
  ASSERT_TRUE(sequence.Reserve(16));
  sequence.Advance(10);
  EXPECT_EQ(cache->free_blocks(), 0);
  sequence.Release();
  EXPECT_EQ(cache->free_blocks(), 4);
  EXPECT_EQ(sequence.length(), 0);
  EXPECT_EQ(sequence.num_blocks(), 0);
  EXPECT_EQ(sequence.capacity_tokens(), 0);
  sequence.Release();  // twice is harmless
  EXPECT_EQ(cache->free_blocks(), 4);
  ASSERT_TRUE(sequence.Reserve(16));  // usable again
}

TEST(KvCacheTest, DestructorAndMoveKeepTheAccountingRight) {
  auto cache = MakeCache(4);
  {
    KvSequence sequence(cache.get());
    ASSERT_TRUE(sequence.Reserve(12));
    EXPECT_EQ(cache->free_blocks(), 1);
  }
  EXPECT_EQ(cache->free_blocks(), 4);

  KvSequence a(cache.get());
  ASSERT_TRUE(a.Reserve(8));
  a.Advance(6);
  KvSequence b(std::move(a));
  EXPECT_EQ(b.num_blocks(), 2);
  EXPECT_EQ(b.length(), 6);
  EXPECT_EQ(cache->free_blocks(), 2);
  KvSequence c(cache.get());
  ASSERT_TRUE(c.Reserve(4));
  c = std::move(b);  // c's own block goes back, b's two move over
  EXPECT_EQ(c.num_blocks(), 2);
  EXPECT_EQ(cache->free_blocks(), 2);
}

TEST(KvCacheTest, BlocksAreDistinctAcrossSequences) {
  auto cache = MakeCache(8);
  KvSequence a(cache.get()), b(cache.get());
  ASSERT_TRUE(a.Reserve(12));
  ASSERT_TRUE(b.Reserve(20));
  std::vector<int32_t> all(a.blocks().begin(), a.blocks().end());
  all.insert(all.end(), b.blocks().begin(), b.blocks().end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end());
  for (const int32_t block : all) {
    EXPECT_GE(block, 0);
    EXPECT_LT(block, 8);
  }
}

}  // namespace
}  // namespace moe::engine
