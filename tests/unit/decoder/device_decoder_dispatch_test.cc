// DecoderModel on a backend with a device decoder (a fake one, fake_device_backend.h): steps go
// to the device after the same validation as on the host, sequences advance only when the
// device succeeded, the model asks for a cache without host storage, and PrepareKvCache
// allocates the device pool. The device decoder itself is tested on a GPU (tests/gpu/).
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/decoder/decoder_model.h"
#include "server/engine/decoder/kv_cache.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/decoder/fake_device_backend.h"

namespace moe {
namespace {

using ::moe::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class DeviceDecoderDispatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<std::string> folders = testing::FixtureFolders();
    if (folders.empty()) GTEST_SKIP() << "no fixture folders under " << testing::FixturesRoot();
    backend_ = std::make_unique<testing::FakeDeviceBackend>(&record_);
    MOE_ASSERT_OK_AND_ASSIGN(model_, engine::DecoderModel::Load(folders.front(), backend_.get()));
    vocab_ = model_->spec().vocab_size;
    MOE_ASSERT_OK_AND_ASSIGN(
        cache_, engine::KvCache::Create(model_->kv_shape(), 1 << 22, engine::KvStorage::kNone));
  }

  absl::Status Step(const std::vector<engine::DecoderChunk>& chunks, std::vector<float>* logits) {
    logits->assign(chunks.size() * vocab_ * 16, NAN);
    engine::DecoderStepOutputs outputs;
    outputs.logits = logits->data();
    return model_->Step(chunks, outputs);
  }

  testing::FakeDeviceRecord record_;
  std::unique_ptr<engine::MoEBackend> backend_;
  std::unique_ptr<engine::DecoderModel> model_;
  std::unique_ptr<engine::KvCache> cache_;
  int64_t vocab_ = 0;
};

TEST_F(DeviceDecoderDispatchTest, TheDeviceDecoderGetsEveryLayerAndTheModelAsksForDeviceStorage) {
  EXPECT_TRUE(model_->runs_on_device());
  EXPECT_EQ(model_->kv_storage(), engine::KvStorage::kNone);
  EXPECT_EQ(record_.input_layers, model_->spec().num_layers);
  EXPECT_EQ(record_.input_moe_layers, model_->spec().num_moe_layers);
  EXPECT_GT(record_.input_moe_layers, 0);
  // The host copy of the dense weights is freed once the device has its own: the model then
  // takes the MoE blocks' host memory only, less than the same model on the host path.
  const std::unique_ptr<engine::MoEBackend> cpu = engine::CreateCpuBackend();
  MOE_ASSERT_OK_AND_ASSIGN(
      auto on_host, engine::DecoderModel::Load(testing::FixtureFolders().front(), cpu.get()));
  EXPECT_GT(model_->spec().weight_bytes, 0u);
  EXPECT_LT(model_->spec().weight_bytes, on_host->spec().weight_bytes);
}

TEST_F(DeviceDecoderDispatchTest, StepsRunOnTheDeviceAndAdvanceTheSequences) {
  engine::KvSequence a(cache_.get()), b(cache_.get());
  ASSERT_TRUE(a.Reserve(8) && b.Reserve(8));
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> one = {4};
  std::vector<float> logits;
  MOE_ASSERT_OK(Step({{&a, prompt, false}, {&b, one, true}}, &logits));
  EXPECT_EQ(record_.steps, 1);
  EXPECT_EQ(record_.last_num_tokens, 4);
  EXPECT_THAT(record_.last_chunk_tokens, ElementsAre(3, 1));
  EXPECT_THAT(record_.last_chunk_starts, ElementsAre(0, 0));  // before the step advanced them
  EXPECT_EQ(a.length(), 3);
  EXPECT_EQ(b.length(), 1);
  // The device's logits reach the caller: two rows (a's last token, b's one token).
  EXPECT_EQ(logits[0], 0.5f);
  EXPECT_EQ(logits[vocab_ - 1], 0.5f);
  EXPECT_EQ(logits[vocab_], 1.5f);
  EXPECT_TRUE(std::isnan(logits[2 * vocab_]));

  MOE_ASSERT_OK(Step({{&a, one, false}}, &logits));
  EXPECT_THAT(record_.last_chunk_starts, ElementsAre(3));
  EXPECT_EQ(a.length(), 4);
}

TEST_F(DeviceDecoderDispatchTest, BadStepsAreRefusedBeforeTheDevice) {
  const std::vector<int32_t> tokens = {1, 2};
  std::vector<float> logits;
  // A cache in host memory.
  MOE_ASSERT_OK_AND_ASSIGN(auto host_cache, engine::KvCache::Create(model_->kv_shape(), 1 << 22));
  engine::KvSequence host_sequence(host_cache.get());
  ASSERT_TRUE(host_sequence.Reserve(4));
  EXPECT_THAT(Step({{&host_sequence, tokens}}, &logits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("in host memory")));
  // Two caches in one step.
  MOE_ASSERT_OK_AND_ASSIGN(auto other_cache, engine::KvCache::Create(model_->kv_shape(), 1 << 22,
                                                                     engine::KvStorage::kNone));
  engine::KvSequence a(cache_.get()), b(other_cache.get());
  ASSERT_TRUE(a.Reserve(4) && b.Reserve(4));
  EXPECT_THAT(Step({{&a, tokens}, {&b, tokens}}, &logits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("another KV cache")));
  // A token outside the vocabulary.
  const std::vector<int32_t> bad = {static_cast<int32_t>(vocab_)};
  EXPECT_THAT(Step({{&a, bad}}, &logits), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(record_.steps, 0);
  EXPECT_EQ(a.length(), 0);
  EXPECT_EQ(b.length(), 0);
}

TEST_F(DeviceDecoderDispatchTest, ADeviceErrorAdvancesNoSequence) {
  engine::KvSequence a(cache_.get());
  ASSERT_TRUE(a.Reserve(4));
  record_.step_status = absl::ResourceExhaustedError("device out of memory");
  std::vector<float> logits;
  EXPECT_THAT(Step({{&a, std::vector<int32_t>{1, 2}}}, &logits),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("out of memory")));
  EXPECT_EQ(record_.steps, 1);
  EXPECT_EQ(a.length(), 0);
}

TEST_F(DeviceDecoderDispatchTest, PrepareKvCacheAllocatesTheDevicePool) {
  MOE_EXPECT_OK(model_->PrepareKvCache(*cache_));
  EXPECT_EQ(record_.allocations, 1);
  EXPECT_EQ(record_.allocated_for, cache_.get());
  record_.allocate_status = absl::ResourceExhaustedError("pool does not fit");
  EXPECT_THAT(model_->PrepareKvCache(*cache_),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("does not fit")));
  MOE_ASSERT_OK_AND_ASSIGN(auto host_cache, engine::KvCache::Create(model_->kv_shape(), 1 << 22));
  EXPECT_THAT(model_->PrepareKvCache(*host_cache),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("storage")));
  EXPECT_EQ(record_.allocations, 2);
}

}  // namespace
}  // namespace moe
