// LoadModelFromDirectory: which config gives which model, and what each failure says.
#include "server/engine/model_loader.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/moe_backend.h"
#include "server/engine/moe_mlp_model.h"
#include "server/engine/moe_mlp_reference.h"
#include "server/model/checkpoint.h"
#include "server/model/model_config.h"
#include "server/model/moe_mlp_config.h"
#include "server/model/moe_weights.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/moe_mlp_random.h"
#include "tests/testing/random.h"
#include "tests/testing/reference_fixture.h"
#include "tests/testing/safetensors_writer.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace moe::engine {
namespace {

using ::moe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

class ModelLoaderTest : public ::testing::Test {
 protected:
  std::unique_ptr<MoEBackend> backend_ = CreateCpuBackend();
};

class LanguageModelFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(LanguageModelFixtureTest, LoadsDescribedButNotTensorServable) {
  const std::string dir = GetParam();
  std::unique_ptr<MoEBackend> backend = CreateCpuBackend();
  MOE_ASSERT_OK_AND_ASSIGN(const model::ModelConfig config, model::LoadModelConfig(dir));
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ServableModel> model,
                           LoadModelFromDirectory("lm", dir, *backend));
  const ModelDescription& d = model->description();
  EXPECT_EQ(d.name, "lm");
  EXPECT_EQ(d.architecture, config.architecture);
  EXPECT_EQ(d.family, config.model_type);
  EXPECT_FALSE(d.tensor_servable);
  EXPECT_THAT(d.not_servable_reason,
              AllOf(HasSubstr("model 'lm' is a decoder language model (" + config.architecture),
                    HasSubstr("it generates through moe.v1.MoEService/Generate")));
  EXPECT_EQ(d.hidden_size, config.hidden_size);
  EXPECT_EQ(d.num_layers, config.num_layers);
  EXPECT_EQ(d.num_moe_layers, static_cast<int64_t>(config.MoELayerIndices().size()));
  EXPECT_EQ(d.num_experts, config.num_experts);
  EXPECT_EQ(d.top_k, config.top_k);
  EXPECT_EQ(d.expert_ffn_size, config.moe_intermediate_size);
  EXPECT_EQ(d.activation, "swiglu");
  EXPECT_EQ(d.backend, "cpu");
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<model::Checkpoint> checkpoint,
                           model::Checkpoint::Open(dir));
  // The bytes as loaded: what the decoder holds (dense parts widened to float32), so at least
  // the checkpoint's MoE tensors and at most everything widened to float32.
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<DecoderModel> decoder,
                           DecoderModel::Load(dir, backend.get()));
  EXPECT_EQ(d.weight_bytes, decoder->spec().weight_bytes);
  uint64_t moe_bytes = 0;
  for (const int64_t layer : config.MoELayerIndices()) {
    for (const std::string& tensor : model::ExpectedMoETensorNames(config, layer)) {
      moe_bytes += checkpoint->Get(tensor).value()->data.size();
    }
  }
  EXPECT_GE(d.weight_bytes, moe_bytes);
  EXPECT_LE(d.weight_bytes, 2 * checkpoint->total_bytes());
  EXPECT_EQ(d.weight_dtype,
            checkpoint->Get(model::ExpectedMoETensorNames(config, config.MoELayerIndices()[0])[1])
                .value()
                ->dtype);

  std::vector<float> input(8, 0.0f), output(8);
  EXPECT_THAT(model->Run(input.data(), 1, {output.data()}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("it generates through moe.v1.MoEService/Generate")));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LanguageModelFixtureTest,
                         ::testing::ValuesIn(testing::FixtureFolders()), testing::FixtureTestName);

TEST(LoadMoELayersProgressTest, ReportsEveryTensorOfEveryLayer) {
  const std::vector<std::string> folders = testing::FixtureFolders();
  ASSERT_FALSE(folders.empty());
  MOE_ASSERT_OK_AND_ASSIGN(const model::ModelConfig config, model::LoadModelConfig(folders[0]));
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<model::Checkpoint> checkpoint,
                           model::Checkpoint::Open(folders[0]));
  std::vector<model::LoadProgress> reports;
  MOE_ASSERT_OK(model::LoadMoELayers(
      *checkpoint, config,
      [&reports](const model::LoadProgress& progress) { reports.push_back(progress); }));
  int64_t expected_tensors = 0;
  uint64_t expected_bytes = 0;
  for (const int64_t layer : config.MoELayerIndices()) {
    for (const std::string& name : model::ExpectedMoETensorNames(config, layer)) {
      ++expected_tensors;
      expected_bytes += checkpoint->Get(name).value()->data.size();
    }
  }
  ASSERT_EQ(static_cast<int64_t>(reports.size()), expected_tensors);
  EXPECT_EQ(reports.back().tensors_done, expected_tensors);
  EXPECT_EQ(reports.back().tensors_total, expected_tensors);
  EXPECT_EQ(reports.back().bytes_done, expected_bytes);
  EXPECT_EQ(reports.back().bytes_total, expected_bytes);
}

TEST_F(ModelLoaderTest, MissingDirectoryIsNotFound) {
  testing::ScratchDir scratch;
  const std::string dir = scratch.File("no_such_model");
  EXPECT_THAT(LoadModelFromDirectory("m", dir, *backend_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir)));
}

TEST_F(ModelLoaderTest, DirectoryWithoutConfigIsNotFound) {
  testing::ScratchDir scratch;
  EXPECT_THAT(LoadModelFromDirectory("m", scratch.path(), *backend_),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr(scratch.path()), HasSubstr("has no config.json"))));
}

TEST_F(ModelLoaderTest, UnknownArchitectureIsInvalidArgumentListingTheSupportedOnes) {
  testing::ScratchDir scratch;
  const std::string config = scratch.File("config.json");
  WriteText(config, R"({"architecture": "ResNet50", "layers": 50})");
  EXPECT_THAT(
      LoadModelFromDirectory("m", scratch.path(), *backend_),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr(config), HasSubstr("'ResNet50'"),
                     HasSubstr("\"architecture\": \"MoEMLP\""), HasSubstr("MixtralForCausalLM"))));
}

TEST_F(ModelLoaderTest, UnsupportedHuggingFaceArchitectureMentionsMoEMLPToo) {
  testing::ScratchDir scratch;
  const std::string config = scratch.File("config.json");
  WriteText(config, R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})");
  EXPECT_THAT(LoadModelFromDirectory("m", scratch.path(), *backend_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(config), HasSubstr("'LlamaForCausalLM'"),
                             HasSubstr("MixtralForCausalLM"), HasSubstr("MoEMLP"))));
}

TEST_F(ModelLoaderTest, ConfigThatIsNotJsonIsInvalidArgument) {
  testing::ScratchDir scratch;
  WriteText(scratch.File("config.json"), "architecture = MoEMLP");
  EXPECT_THAT(LoadModelFromDirectory("m", scratch.path(), *backend_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid JSON")));
}

TEST_F(ModelLoaderTest, MoEMLPWithoutWeightsIsNotFound) {
  testing::ScratchDir scratch;
  WriteText(scratch.File("config.json"),
            model::MoEMLPConfigToJson(testing::SmallMoEMLPConfig(kernels::Activation::kReLU)));
  EXPECT_THAT(LoadModelFromDirectory("m", scratch.path(), *backend_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("model.safetensors")));
}

TEST_F(ModelLoaderTest, LoadsAMoEMLPDirectoryAndLogsIt) {
  const uint64_t seed = testing::FreshSeed();
  std::mt19937_64 rng(seed);
  testing::ScratchDir scratch;
  const model::MoEMLPConfig config = testing::SmallMoEMLPConfig(kernels::Activation::kGELU);
  WriteText(scratch.File("config.json"), model::MoEMLPConfigToJson(config));
  testing::WriteFile(scratch.File("model.safetensors"),
                     testing::BuildSafetensors(testing::RandomMoEMLPTensors(config, rng)));
  ::testing::internal::CaptureStderr();
  absl::StatusOr<std::unique_ptr<ServableModel>> model =
      LoadModelFromDirectory("tiny", scratch.path(), *backend_);
  const std::string log = ::testing::internal::GetCapturedStderr();
  MOE_ASSERT_OK(model);
  EXPECT_TRUE((*model)->description().tensor_servable);
  EXPECT_EQ((*model)->description().name, "tiny");
  EXPECT_EQ((*model)->description().activation, "gelu");
  EXPECT_THAT(log, AllOf(HasSubstr("event=model_loaded"), HasSubstr("model=tiny"),
                         HasSubstr("tensors=20"), HasSubstr("architecture=MoEMLP")));
}

#ifdef MOE_SYNTHETIC_TOOL
// What moe-make-synthetic writes loads, and the engine computes it as the reference does.
TEST_F(ModelLoaderTest, LoadsWhatMoeMakeSyntheticWrites) {
  testing::ScratchDir scratch;
  const std::string dir = scratch.File("synthetic");
  const std::string command =
      std::string(MOE_SYNTHETIC_TOOL) + " --out " + dir +
      " --input-dim 12 --hidden 96 --ffn 40 --experts 6 --top-k 2 --blocks 3 --output-dim 5"
      " --activation swiglu --dtype bf16 --seed 7 > " +
      scratch.File("tool.log") + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ServableModel> model,
                           LoadModelFromDirectory("synthetic", dir, *backend_));
  const ModelDescription& d = model->description();
  EXPECT_EQ(d.input_width, 12);
  EXPECT_EQ(d.hidden_size, 96);
  EXPECT_EQ(d.expert_ffn_size, 40);
  EXPECT_EQ(d.num_experts, 6);
  EXPECT_EQ(d.num_moe_layers, 3);
  EXPECT_EQ(d.output_width, 5);
  EXPECT_EQ(d.weight_dtype, kernels::DType::kBF16);

  const uint64_t seed = testing::FreshSeed();
  std::mt19937_64 rng(seed);
  const int64_t rows = 21;
  const std::vector<float> input = testing::RandomFloats(rng, rows * 12);
  std::vector<float> output(rows * 5, std::numeric_limits<float>::quiet_NaN());
  MOE_ASSERT_OK(model->Run(input.data(), rows, {output.data()}));
  auto* moe_mlp = dynamic_cast<MoEMLPModel*>(model.get());
  ASSERT_NE(moe_mlp, nullptr);
  std::vector<float> reference(rows * 5);
  MOE_ASSERT_OK(MoEMLPReferenceForward(moe_mlp->config(), moe_mlp->weights(), input.data(), rows,
                                       {reference.data()}));
  constexpr double kTolerance = 1e-4;
  EXPECT_LT(testing::RelativeL2(output.data(), reference.data(), output.size()), kTolerance)
      << "seed " << seed << ", tolerance " << kTolerance;
  // Weights scaled by 1/sqrt(fan_in) keep the outputs of order one.
  double norm = 0.0;
  for (const float v : output) norm += static_cast<double>(v) * v;
  EXPECT_GT(norm / output.size(), 1e-3);
  EXPECT_LT(norm / output.size(), 1e3);
}
#endif

}  // namespace
}  // namespace moe::engine
