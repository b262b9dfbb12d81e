// Step refuses bad input with the right status and leaves every sequence as it was: the
// scheduler turns these into per-request errors and carries on with the other sequences.
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/unit/decoder/decoder_test_util.h"

namespace moe {
namespace {

using ::moe::testing::StatusIs;
using ::testing::HasSubstr;

class DecoderStepErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<std::string> folders = testing::FixtureFolders();
    if (folders.empty()) GTEST_SKIP() << "no fixture folders under " << testing::FixturesRoot();
    ASSERT_NO_FATAL_FAILURE(testing::LoadDecoder(folders.front(), &loaded_, 128, 16));
    vocab_ = loaded_.model->spec().vocab_size;
  }
  absl::Status Step(std::vector<engine::DecoderChunk> chunks) {
    logits_.assign(chunks.size() * vocab_ * 600, NAN);
    engine::DecoderStepOutputs outputs;
    outputs.logits = logits_.data();
    return loaded_.model->Step(chunks, outputs);
  }
  testing::LoadedDecoder loaded_;
  int64_t vocab_ = 0;
  std::vector<float> logits_;
};

TEST_F(DecoderStepErrorsTest, TokenOutsideTheVocabularyIsInvalidArgument) {
  engine::KvSequence sequence(loaded_.cache.get());
  ASSERT_TRUE(sequence.Reserve(4));
  const std::vector<int32_t> too_large = {1, static_cast<int32_t>(vocab_), 2};
  EXPECT_THAT(Step({{&sequence, too_large}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocabulary")));
  const std::vector<int32_t> negative = {-1};
  EXPECT_THAT(Step({{&sequence, negative}}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(sequence.length(), 0);
}

TEST_F(DecoderStepErrorsTest, MissingReservationIsFailedPrecondition) {
  engine::KvSequence sequence(loaded_.cache.get());
  const std::vector<int32_t> tokens = {1, 2, 3};
  EXPECT_THAT(Step({{&sequence, tokens}}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("Reserve")));
  // Room for 16 tokens, then 17 asked for.
  ASSERT_TRUE(sequence.Reserve(3));
  MOE_EXPECT_OK(Step({{&sequence, tokens}}));
  const std::vector<int32_t> more(14, 1);
  EXPECT_THAT(Step({{&sequence, more}}), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(sequence.length(), 3);
}

TEST_F(DecoderStepErrorsTest, PositionsPastMaxPositionEmbeddingsAreInvalidArgument) {
  const int64_t max_positions = loaded_.model->spec().max_position_embeddings;
  engine::KvSequence sequence(loaded_.cache.get());
  ASSERT_TRUE(sequence.Reserve(max_positions + 1)) << "cache too small for the test";
  const std::vector<int32_t> too_long(max_positions + 1, 1);
  EXPECT_THAT(Step({{&sequence, too_long}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_position_embeddings")));
  EXPECT_EQ(sequence.length(), 0);
  // Exactly max_position_embeddings tokens fit; one more does not.
  const std::vector<int32_t> full(max_positions, 1);
  MOE_EXPECT_OK(Step({{&sequence, full}}));
  const std::vector<int32_t> one = {1};
  EXPECT_THAT(Step({{&sequence, one}}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(sequence.length(), max_positions);
}

TEST_F(DecoderStepErrorsTest, MalformedChunksAreInvalidArgument) {
  engine::KvSequence sequence(loaded_.cache.get());
  ASSERT_TRUE(sequence.Reserve(8));
  const std::vector<int32_t> tokens = {1, 2};
  EXPECT_THAT(Step({{&sequence, {}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no tokens")));
  EXPECT_THAT(Step({{nullptr, tokens}}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Step({{&sequence, tokens}, {&sequence, tokens}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
  // A cache of another geometry.
  engine::KvCacheShape other = loaded_.model->kv_shape();
  other.head_dim *= 2;
  MOE_ASSERT_OK_AND_ASSIGN(auto other_cache, engine::KvCache::Create(other, 1 << 22));
  engine::KvSequence foreign(other_cache.get());
  ASSERT_TRUE(foreign.Reserve(2));
  EXPECT_THAT(Step({{&foreign, tokens}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("KV cache")));
  // A cache without host storage (a device decoder's) on the host path.
  EXPECT_EQ(loaded_.model->kv_storage(), engine::KvStorage::kHost);
  MOE_ASSERT_OK_AND_ASSIGN(
      auto bookkeeping,
      engine::KvCache::Create(loaded_.model->kv_shape(), 1 << 22, engine::KvStorage::kNone));
  EXPECT_THAT(loaded_.model->PrepareKvCache(*bookkeeping),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("storage")));
  MOE_EXPECT_OK(loaded_.model->PrepareKvCache(*loaded_.cache));
  engine::KvSequence unstored(bookkeeping.get());
  ASSERT_TRUE(unstored.Reserve(2));
  EXPECT_THAT(Step({{&unstored, tokens}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("without host storage")));
  EXPECT_EQ(unstored.length(), 0);
  EXPECT_EQ(sequence.length(), 0);
}

TEST_F(DecoderStepErrorsTest, OneBadChunkFailsTheStepWithoutAdvancingTheOthers) {
  engine::KvSequence good(loaded_.cache.get()), bad(loaded_.cache.get());
  ASSERT_TRUE(good.Reserve(4));
  const std::vector<int32_t> tokens = {1, 2, 3};
  EXPECT_THAT(Step({{&good, tokens}, {&bad, tokens}}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("chunk 1")));
  EXPECT_EQ(good.length(), 0);
  MOE_EXPECT_OK(Step({{&good, tokens}}));  // and the model still works
  EXPECT_EQ(good.length(), 3);
}

TEST_F(DecoderStepErrorsTest, EmptyStepZeroesTheMetrics) {
  const int64_t layers = loaded_.model->spec().num_moe_layers;
  const int64_t experts = loaded_.model->spec().num_experts;
  std::vector<int64_t> counts(layers * experts, -1);
  std::vector<double> seconds(layers, -1.0), entropy(layers, -1.0);
  engine::DecoderStepOutputs outputs;
  outputs.expert_token_counts = counts.data();
  outputs.layer_seconds = seconds.data();
  outputs.gate_entropy_sum = entropy.data();
  MOE_EXPECT_OK(loaded_.model->Step({}, outputs));
  EXPECT_EQ(counts, std::vector<int64_t>(layers * experts, 0));
  EXPECT_EQ(seconds, std::vector<double>(layers, 0.0));
  EXPECT_EQ(entropy, std::vector<double>(layers, 0.0));
}

TEST_F(DecoderStepErrorsTest, MetricsCoverEveryTokenOfTheStep) {
  const engine::DecoderSpec& spec = loaded_.model->spec();
  engine::KvSequence a(loaded_.cache.get()), b(loaded_.cache.get());
  ASSERT_TRUE(a.Reserve(5));
  ASSERT_TRUE(b.Reserve(2));
  const std::vector<int32_t> five = {1, 2, 3, 4, 5}, two = {6, 7};
  std::vector<int64_t> counts(spec.num_moe_layers * spec.num_experts, -1);
  std::vector<double> seconds(spec.num_moe_layers, -1.0), entropy(spec.num_moe_layers, -1.0),
      expert_seconds(spec.num_moe_layers * spec.num_experts, -1.0);
  std::vector<float> logits(2 * vocab_, NAN);
  engine::DecoderStepOutputs outputs{logits.data(), counts.data(), seconds.data(), entropy.data(),
                                     expert_seconds.data()};
  const std::vector<engine::DecoderChunk> chunks = {{&a, five}, {&b, two}};
  MOE_ASSERT_OK(loaded_.model->Step(chunks, outputs));
  for (int64_t layer = 0; layer < spec.num_moe_layers; ++layer) {
    const int64_t routed =
        std::accumulate(counts.begin() + layer * spec.num_experts,
                        counts.begin() + (layer + 1) * spec.num_experts, int64_t{0});
    EXPECT_EQ(routed, 7 * spec.top_k) << "layer " << layer << ": 7 tokens x top_k";
    EXPECT_GE(seconds[layer], 0.0);
    EXPECT_GT(entropy[layer], 0.0);
    EXPECT_LE(entropy[layer], 7 * std::log(static_cast<double>(spec.num_experts)) + 1e-9);
  }
  for (const double s : expert_seconds) EXPECT_GE(s, 0.0);
  for (const float v : logits) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace moe
