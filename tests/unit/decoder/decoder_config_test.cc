// What the decoder reads from config.json beyond the MoE layers (special tokens, the attention
// window) and the configurations DecoderModel::Load refuses with a message naming the reason.
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/engine/decoder/decoder_model.h"
#include "server/engine/moe_backend.h"
#include "server/model/model_config.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace moe {
namespace {

using ::moe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kMixtralDir = MOE_SOURCE_DIR "/tests/fixtures/mixtral-tiny-bf16";
const std::string kQwen2Dir = MOE_SOURCE_DIR "/tests/fixtures/qwen2moe-tiny-f32";

nlohmann::json ConfigOf(const std::string& dir) {
  std::ifstream file(dir + "/config.json");
  return nlohmann::json::parse(file);
}

absl::StatusOr<model::ModelConfig> Parse(const nlohmann::json& config) {
  return model::ParseModelConfig(config.dump(), "test/config.json");
}

// A copy of checkpoint folder `dir` with its config.json replaced by `config`.
std::string CopyWithConfig(const testing::ScratchDir& scratch, const std::string& dir,
                           const nlohmann::json& config) {
  std::filesystem::copy_file(dir + "/model.safetensors", scratch.File("model.safetensors"));
  std::ofstream(scratch.File("config.json")) << config.dump(2);
  return scratch.path();
}

TEST(DecoderConfigTest, SpecialTokensAreRead) {
  MOE_ASSERT_OK_AND_ASSIGN(const model::ModelConfig config, Parse(ConfigOf(kMixtralDir)));
  EXPECT_EQ(config.bos_token_id, 1);
  EXPECT_THAT(config.eos_token_ids, ElementsAre(2));

  nlohmann::json json = ConfigOf(kMixtralDir);
  json["eos_token_id"] = {2, 7};
  json["bos_token_id"] = nullptr;
  MOE_ASSERT_OK_AND_ASSIGN(const model::ModelConfig listed, Parse(json));
  EXPECT_EQ(listed.bos_token_id, -1);
  EXPECT_THAT(listed.eos_token_ids, ElementsAre(2, 7));

  json["eos_token_id"] = "two";
  EXPECT_THAT(Parse(json), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("eos_token_id")));
  json["eos_token_id"] = -3;
  EXPECT_THAT(Parse(json), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("eos_token_id")));
}

TEST(DecoderConfigTest, SlidingWindowCountsOnlyWhereTransformersAppliesIt) {
  nlohmann::json mixtral = ConfigOf(kMixtralDir);
  MOE_ASSERT_OK_AND_ASSIGN(model::ModelConfig config, Parse(mixtral));
  EXPECT_EQ(config.sliding_window, 0);  // null
  mixtral["sliding_window"] = 128;
  MOE_ASSERT_OK_AND_ASSIGN(config, Parse(mixtral));
  EXPECT_EQ(config.sliding_window, 128);

  // Qwen configs carry a window that only use_sliding_window switches on.
  nlohmann::json qwen = ConfigOf(kQwen2Dir);
  qwen["sliding_window"] = 64;
  MOE_ASSERT_OK_AND_ASSIGN(config, Parse(qwen));
  EXPECT_EQ(config.sliding_window, 0);
  qwen["use_sliding_window"] = true;
  MOE_ASSERT_OK_AND_ASSIGN(config, Parse(qwen));
  EXPECT_EQ(config.sliding_window, 64);
}

TEST(DecoderConfigTest, LoadRefusesScaledRopeNamingTheKind) {
  testing::ScratchDir scratch;
  nlohmann::json config = ConfigOf(kMixtralDir);
  config["rope_scaling"] = {{"type", "dynamic"}, {"factor", 4.0}};
  const std::string dir = CopyWithConfig(scratch, kMixtralDir, config);
  auto backend = engine::CreateCpuBackend();
  EXPECT_THAT(engine::DecoderModel::Load(dir, backend.get()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("rope_scaling"), HasSubstr("dynamic"))));
}

TEST(DecoderConfigTest, LoadRefusesASlidingWindowShorterThanTheContext) {
  testing::ScratchDir scratch;
  nlohmann::json config = ConfigOf(kMixtralDir);
  config["sliding_window"] = 128;  // max_position_embeddings is 512
  const std::string dir = CopyWithConfig(scratch, kMixtralDir, config);
  auto backend = engine::CreateCpuBackend();
  EXPECT_THAT(engine::DecoderModel::Load(dir, backend.get()),
              StatusIs(absl::StatusCode::kUnimplemented,
                       AllOf(HasSubstr("sliding_window = 128"), HasSubstr("512"))));
}

TEST(DecoderConfigTest, LoadAcceptsAWindowCoveringTheWholeContext) {
  testing::ScratchDir scratch;
  nlohmann::json config = ConfigOf(kMixtralDir);
  config["sliding_window"] = 4096;
  const std::string dir = CopyWithConfig(scratch, kMixtralDir, config);
  auto backend = engine::CreateCpuBackend();
  MOE_EXPECT_OK(engine::DecoderModel::Load(dir, backend.get()));
}

TEST(DecoderConfigTest, LoadNamesATensorWhoseShapeDisagreesWithTheConfig) {
  testing::ScratchDir scratch;
  nlohmann::json config = ConfigOf(kMixtralDir);
  config["num_key_value_heads"] = 4;  // the checkpoint's k_proj has 2 heads' rows
  const std::string dir = CopyWithConfig(scratch, kMixtralDir, config);
  auto backend = engine::CreateCpuBackend();
  EXPECT_THAT(engine::DecoderModel::Load(dir, backend.get()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model.layers.0.self_attn.k_proj.weight"),
                             HasSubstr("[32, 64]"), HasSubstr("[64, 64]"))));
}

TEST(DecoderConfigTest, LoadNamesAMissingTensor) {
  testing::ScratchDir scratch;
  nlohmann::json config = ConfigOf(kMixtralDir);
  config["num_hidden_layers"] = 3;  // layer 2 is not in the checkpoint
  const std::string dir = CopyWithConfig(scratch, kMixtralDir, config);
  auto backend = engine::CreateCpuBackend();
  EXPECT_THAT(engine::DecoderModel::Load(dir, backend.get()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("model.layers.2.")));
}

TEST(DecoderConfigTest, SpecDescribesTheModel) {
  auto backend = engine::CreateCpuBackend();
  MOE_ASSERT_OK_AND_ASSIGN(auto model, engine::DecoderModel::Load(kQwen2Dir, backend.get()));
  const engine::DecoderSpec& spec = model->spec();
  EXPECT_EQ(spec.architecture, "Qwen2MoeForCausalLM");
  EXPECT_EQ(spec.family, "qwen2_moe");
  EXPECT_EQ(spec.vocab_size, 320);
  EXPECT_EQ(spec.max_position_embeddings, 512);
  EXPECT_EQ(spec.num_layers, 2);
  EXPECT_EQ(spec.num_moe_layers, 2);
  EXPECT_EQ(spec.num_experts, 6);
  EXPECT_EQ(spec.top_k, 2);
  EXPECT_EQ(spec.hidden_size, 64);
  EXPECT_EQ(spec.num_kv_heads, 2);
  EXPECT_EQ(spec.head_dim, 16);
  EXPECT_EQ(spec.bos_token_id, 1);
  EXPECT_THAT(spec.eos_token_ids, ElementsAre(2));
  EXPECT_EQ(spec.backend, "cpu");
  EXPECT_GT(spec.weight_bytes, 0u);
  const engine::KvCacheShape shape = model->kv_shape();
  EXPECT_EQ(shape.num_layers, 2);
  EXPECT_EQ(shape.num_kv_heads, 2);
  EXPECT_EQ(shape.head_dim, 16);
}

}  // namespace
}  // namespace moe
