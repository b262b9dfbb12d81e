// Runs every MoE layer of every reference checkpoint in the fixtures folder through the
// project's loader and the engine's CPU backend, and compares against outputs an independent
// float64 implementation computed: router logits and MoE output within relative L2 1e-4,
// top-k ids exactly.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/moe_backend.h"
#include "server/model/checkpoint.h"
#include "server/model/model_config.h"
#include "server/model/moe_weights.h"
#include "server/model/safetensors.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe {
namespace {

using kernels::DType;

constexpr double kFp32Tolerance = 1e-4;

template <typename T>
std::vector<T> CopyTensor(const model::TensorInfo& tensor) {
  std::vector<T> values(static_cast<size_t>(tensor.num_elements));
  std::memcpy(values.data(), tensor.data.data(), values.size() * sizeof(T));
  return values;
}

// Copies reference tensor `name` as T into `values`; a missing tensor or a dtype of the wrong
// size fails the calling test.
template <typename T>
void ReadReference(const model::SafetensorsFile& file, const std::string& name,
                   std::vector<T>* values) {
  const model::TensorInfo* tensor = file.Find(name);
  ASSERT_NE(tensor, nullptr) << file.path() << ": reference tensor '" << name << "' missing";
  ASSERT_EQ(kernels::DTypeSize(tensor->dtype), sizeof(T)) << name;
  *values = CopyTensor<T>(*tensor);
}

// Sequence names ("seq0", "seq1", ...) and layer indices that have MoE inputs in the
// reference file.
struct ReferenceContents {
  std::set<std::string> sequences;
  std::set<int64_t> layers;
};

ReferenceContents ScanReference(const model::SafetensorsFile& reference) {
  ReferenceContents contents;
  const std::regex pattern(R"((seq\d+)\.layers\.(\d+)\.moe_input)");
  for (const auto& tensor : reference.tensors()) {
    std::smatch match;
    if (std::regex_match(tensor.name, match, pattern)) {
      contents.sequences.insert(match[1]);
      contents.layers.insert(std::stoll(match[2]));
    }
  }
  return contents;
}

class FixtureMoELayerTest : public ::testing::TestWithParam<std::string> {};

TEST(FixtureFolders, AreFound) {
  EXPECT_FALSE(testing::FixtureFolders().empty())
      << "no checkpoint folders under " << testing::FixturesRoot();
}

TEST_P(FixtureMoELayerTest, EveryMoELayerMatchesReference) {
  const std::string dir = GetParam();
  MOE_ASSERT_OK_AND_ASSIGN(model::ModelConfig config, model::LoadModelConfig(dir));
  MOE_ASSERT_OK_AND_ASSIGN(auto checkpoint, model::Checkpoint::Open(dir));
  MOE_ASSERT_OK_AND_ASSIGN(auto layers, model::LoadMoELayers(*checkpoint, config));
  ASSERT_FALSE(layers.empty()) << dir << ": no MoE layer loaded";
  MOE_ASSERT_OK_AND_ASSIGN(auto reference,
                           model::SafetensorsFile::Open(
                               (std::filesystem::path(dir) / "reference.safetensors").string()));
  const ReferenceContents contents = ScanReference(*reference);
  const std::set<std::string>& sequences = contents.sequences;
  ASSERT_FALSE(sequences.empty()) << dir
                                  << ": reference.safetensors has no seqS.layers.L.moe_input";
  // Every layer the reference has an MoE block for must have been loaded, and no other.
  std::set<int64_t> loaded;
  for (const auto& layer : layers) loaded.insert(layer.layer_index());
  EXPECT_EQ(loaded, contents.layers) << "MoE layers loaded vs layers in reference.safetensors";

  auto backend = engine::CreateCpuBackend();
  const kernels::RouterConfig router = config.router();
  const int k = router.top_k;
  const int64_t d = config.hidden_size;
  const int64_t num_experts = config.num_experts;

  int compared_layers = 0;
  for (const auto& layer : layers) {
    MOE_ASSERT_OK_AND_ASSIGN(auto prepared, backend->PrepareLayer(layer.view(), router));
    for (const std::string& seq : sequences) {
      const std::string prefix = seq + ".layers." + std::to_string(layer.layer_index()) + ".";
      SCOPED_TRACE(dir + " " + prefix);
      const model::TensorInfo* input_tensor = reference->Find(prefix + "moe_input");
      ASSERT_NE(input_tensor, nullptr);
      ASSERT_EQ(input_tensor->dtype, DType::kF32);
      ASSERT_EQ(input_tensor->shape.size(), 2u);
      ASSERT_EQ(input_tensor->shape[1], d);
      const int64_t tokens = input_tensor->shape[0];
      const auto input = CopyTensor<float>(*input_tensor);
      std::vector<float> want_logits, want_weights, want_output;
      std::vector<int32_t> want_ids;
      ASSERT_NO_FATAL_FAILURE(ReadReference(*reference, prefix + "router_logits", &want_logits));
      ASSERT_NO_FATAL_FAILURE(ReadReference(*reference, prefix + "topk_ids", &want_ids));
      ASSERT_NO_FATAL_FAILURE(ReadReference(*reference, prefix + "topk_weights", &want_weights));
      ASSERT_NO_FATAL_FAILURE(ReadReference(*reference, prefix + "moe_output", &want_output));
      ASSERT_EQ(want_logits.size(), static_cast<size_t>(tokens * num_experts));
      ASSERT_EQ(want_ids.size(), static_cast<size_t>(tokens * k));
      ASSERT_EQ(want_weights.size(), static_cast<size_t>(tokens * k));
      ASSERT_EQ(want_output.size(), static_cast<size_t>(tokens * d));

      // Poisoned so that an unwritten element cannot pass for a computed one.
      std::vector<float> output(tokens * d, NAN), logits(tokens * num_experts, NAN),
          weights(tokens * k, NAN);
      std::vector<int32_t> ids(tokens * k, -7);
      std::vector<int64_t> counts(num_experts, -1);
      int64_t dropped = -1;
      kernels::MoELayerOutputs outputs{output.data(),  logits.data(), ids.data(),
                                       weights.data(), counts.data(), &dropped};
      MOE_ASSERT_OK(prepared->Forward(input.data(), tokens, outputs));

      const double logits_error =
          testing::RelativeL2(logits.data(), want_logits.data(), logits.size());
      EXPECT_LT(logits_error, kFp32Tolerance) << "router logits relative L2 " << logits_error
                                              << " (tolerance " << kFp32Tolerance << ")";
      EXPECT_EQ(ids, want_ids) << "top-k expert ids differ from the reference";
      const double weights_error =
          testing::RelativeL2(weights.data(), want_weights.data(), weights.size());
      EXPECT_LT(weights_error, kFp32Tolerance) << "top-k weights relative L2 " << weights_error
                                               << " (tolerance " << kFp32Tolerance << ")";
      const double output_error =
          testing::RelativeL2(output.data(), want_output.data(), output.size());
      EXPECT_LT(output_error, kFp32Tolerance)
          << "MoE output relative L2 " << output_error << " (tolerance " << kFp32Tolerance << ")";
      std::printf("%s layer %lld: router logits %.2e, weights %.2e, output %.2e (rel L2)\n",
                  seq.c_str(), static_cast<long long>(layer.layer_index()), logits_error,
                  weights_error, output_error);
      int64_t routed = 0;
      for (int64_t c : counts) routed += c;
      EXPECT_EQ(routed, tokens * k) << "per-expert token counts must add up to T*k";
      EXPECT_EQ(dropped, 0);
      ++compared_layers;
    }
  }
  EXPECT_EQ(compared_layers, static_cast<int>(layers.size() * sequences.size()));
}

std::string FolderName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = std::filesystem::path(info.param).filename().string();
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureMoELayerTest,
                         ::testing::ValuesIn(testing::FixtureFolders()), FolderName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(FixtureMoELayerTest);

}  // namespace
}  // namespace moe
