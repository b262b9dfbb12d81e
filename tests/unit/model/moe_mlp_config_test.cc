#include "server/model/moe_mlp_config.h"

#include <ostream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/safetensors_writer.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace moe::model {
namespace {

using ::moe::testing::IsOk;
using ::moe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kSource[] = "models/x/config.json";

nlohmann::json ValidConfig() {
  return {{"architecture", "MoEMLP"},
          {"input_dim", 64},
          {"hidden_size", 32},
          {"output_dim", 3},
          {"num_blocks", 2},
          {"num_experts", 8},
          {"top_k", 2},
          {"expert_ffn_dim", 48},
          {"activation", "swiglu"},
          {"router_scoring", "sigmoid"},
          {"normalize_top_k", false},
          {"layer_norm_eps", 1e-6},
          {"input_name", "pixels"},
          {"output_name", "scores"},
          {"output_labels", {"cat", "dog", "bird"}},
          {"description", "a test network"}};
}

TEST(MoEMLPConfigTest, ParsesEveryField) {
  absl::StatusOr<MoEMLPConfig> config = ParseMoEMLPConfig(ValidConfig().dump(), kSource);
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->input_dim, 64);
  EXPECT_EQ(config->hidden_size, 32);
  EXPECT_EQ(config->output_dim, 3);
  EXPECT_EQ(config->num_blocks, 2);
  EXPECT_EQ(config->num_experts, 8);
  EXPECT_EQ(config->top_k, 2);
  EXPECT_EQ(config->expert_ffn_dim, 48);
  EXPECT_EQ(config->expert_in_rows(), 96);  // gate rows then up rows
  EXPECT_EQ(config->activation, kernels::Activation::kSwiGLU);
  EXPECT_EQ(config->router_scoring, kernels::ScoringFunc::kSigmoid);
  EXPECT_FALSE(config->normalize_top_k);
  EXPECT_DOUBLE_EQ(config->layer_norm_eps, 1e-6);
  EXPECT_EQ(config->input_name, "pixels");
  EXPECT_EQ(config->output_name, "scores");
  EXPECT_THAT(config->output_labels, ElementsAre("cat", "dog", "bird"));
  EXPECT_EQ(config->description, "a test network");

  const kernels::RouterConfig router = config->router();
  EXPECT_EQ(router.top_k, 2);
  EXPECT_EQ(router.scoring, kernels::ScoringFunc::kSigmoid);
  EXPECT_FALSE(router.renormalize);
  EXPECT_EQ(router.capacity_factor, 0.0);
}

TEST(MoEMLPConfigTest, OptionalKeysTakeTheirDefaults) {
  nlohmann::json json = ValidConfig();
  for (const char* key : {"router_scoring", "normalize_top_k", "layer_norm_eps", "input_name",
                          "output_name", "output_labels", "description"}) {
    json.erase(key);
  }
  json["activation"] = "relu";
  absl::StatusOr<MoEMLPConfig> config = ParseMoEMLPConfig(json.dump(), kSource);
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->activation, kernels::Activation::kReLU);
  EXPECT_EQ(config->expert_in_rows(), 48);
  EXPECT_EQ(config->router_scoring, kernels::ScoringFunc::kSoftmax);
  EXPECT_TRUE(config->normalize_top_k);
  EXPECT_DOUBLE_EQ(config->layer_norm_eps, 1e-5);
  EXPECT_EQ(config->input_name, "input");
  EXPECT_EQ(config->output_name, "logits");
  EXPECT_TRUE(config->output_labels.empty());
}

TEST(MoEMLPConfigTest, GeluIsAccepted) {
  nlohmann::json json = ValidConfig();
  json["activation"] = "gelu";
  absl::StatusOr<MoEMLPConfig> config = ParseMoEMLPConfig(json.dump(), kSource);
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->activation, kernels::Activation::kGELU);
}

TEST(MoEMLPConfigTest, WritesWhatItReadsBack) {
  absl::StatusOr<MoEMLPConfig> config = ParseMoEMLPConfig(ValidConfig().dump(), kSource);
  ASSERT_THAT(config, IsOk());
  absl::StatusOr<MoEMLPConfig> again = ParseMoEMLPConfig(MoEMLPConfigToJson(*config), kSource);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(MoEMLPConfigToJson(*again), MoEMLPConfigToJson(*config));
  EXPECT_EQ(again->output_labels, config->output_labels);
  EXPECT_EQ(again->router_scoring, config->router_scoring);
  EXPECT_DOUBLE_EQ(again->layer_norm_eps, config->layer_norm_eps);
}

// One bad value and the key the error must name.
struct BadField {
  std::string test_name;
  std::string key;       // the key set (or erased when `value` is null-marked)
  nlohmann::json value;  // discarded = erase the key
  std::string expected;  // substring of the message besides the file name
};

// What gtest prints for a parameter (instead of its bytes).
void PrintTo(const BadField& field, std::ostream* out) { *out << field.test_name; }

std::vector<BadField> BadFields() {
  const nlohmann::json erase = nlohmann::json::value_t::discarded;
  return {
      {"MissingInputDim", "input_dim", erase, "'input_dim' is missing"},
      {"ZeroInputDim", "input_dim", 0, "'input_dim' = 0 is out of the supported range"},
      {"NegativeInputDim", "input_dim", -4, "'input_dim' = -4"},
      {"StringInputDim", "input_dim", "64", "'input_dim' must be an integer"},
      {"FractionalInputDim", "input_dim", 6.5, "'input_dim' must be an integer"},
      {"HugeInputDim", "input_dim", int64_t{1} << 40, "'input_dim'"},
      {"ZeroHiddenSize", "hidden_size", 0, "'hidden_size' = 0"},
      {"HugeHiddenSize", "hidden_size", 1 << 20, "'hidden_size'"},
      {"MissingHiddenSize", "hidden_size", erase, "'hidden_size' is missing"},
      {"ZeroOutputDim", "output_dim", 0, "'output_dim' = 0"},
      {"ZeroBlocks", "num_blocks", 0, "'num_blocks' = 0"},
      {"TooManyBlocks", "num_blocks", 5000, "'num_blocks' = 5000"},
      {"ZeroExperts", "num_experts", 0, "'num_experts' = 0"},
      {"TooManyExperts", "num_experts", 100000, "'num_experts'"},
      {"ZeroTopK", "top_k", 0, "'top_k' = 0"},
      {"TopKAboveExperts", "top_k", 9, "'top_k' = 9 exceeds num_experts = 8"},
      {"ZeroFfn", "expert_ffn_dim", 0, "'expert_ffn_dim' = 0"},
      {"MissingFfn", "expert_ffn_dim", erase, "'expert_ffn_dim' is missing"},
      {"UnknownActivation", "activation", "tanh", "'activation' = 'tanh' is not supported"},
      {"NumericActivation", "activation", 3, "'activation' must be a string"},
      {"MissingActivation", "activation", erase, "'activation' is missing"},
      {"UnknownScoring", "router_scoring", "argmax", "'router_scoring' = 'argmax'"},
      {"StringNormalize", "normalize_top_k", "yes", "'normalize_top_k' must be true or false"},
      {"ZeroEps", "layer_norm_eps", 0, "'layer_norm_eps' = 0"},
      {"NegativeEps", "layer_norm_eps", -1e-5, "'layer_norm_eps'"},
      {"LargeEps", "layer_norm_eps", 2.0, "'layer_norm_eps' = 2.0"},
      {"StringEps", "layer_norm_eps", "tiny", "'layer_norm_eps' must be a number"},
      {"EmptyInputName", "input_name", "", "'input_name' = ''"},
      {"InputNameWithSpace", "input_name", "my input", "'input_name' = 'my input'"},
      {"LongOutputName", "output_name", std::string(65, 'x'), "'output_name'"},
      {"OutputNameSameAsInput", "output_name", "pixels", "'output_name' = 'pixels' is the same"},
      {"LabelsNotArray", "output_labels", "cat,dog,bird", "'output_labels' must be an array"},
      {"TooFewLabels",
       "output_labels",
       {"cat", "dog"},
       "'output_labels' has 2 entries but "
       "output_dim = 3"},
      {"NumericLabel", "output_labels", {"cat", 1, "bird"}, "'output_labels' entry 1"},
      {"EmptyLabel", "output_labels", {"cat", "", "bird"}, "'output_labels' entry 1"},
      {"NumericDescription", "description", 5, "'description' must be a string"},
      {"LongDescription", "description", std::string(5000, 'd'), "'description' is 5000 bytes"},
      {"WrongArchitecture", "architecture", "MixtralForCausalLM",
       "'architecture' must be \"MoEMLP\", got 'MixtralForCausalLM'"},
      {"MissingArchitecture", "architecture", erase, "'architecture' must be \"MoEMLP\""},
      {"MisspeltKey", "topk", 2, "unknown key 'topk'"},
  };
}

class MoEMLPConfigBadFieldTest : public ::testing::TestWithParam<BadField> {};

TEST_P(MoEMLPConfigBadFieldTest, IsInvalidArgumentNamingTheFieldAndFile) {
  const BadField& bad = GetParam();
  nlohmann::json json = ValidConfig();
  if (bad.value.is_discarded()) {
    json.erase(bad.key);
  } else {
    json[bad.key] = bad.value;
  }
  EXPECT_THAT(ParseMoEMLPConfig(json.dump(), kSource),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(kSource), HasSubstr(bad.expected))));
}

INSTANTIATE_TEST_SUITE_P(Fields, MoEMLPConfigBadFieldTest, ::testing::ValuesIn(BadFields()),
                         [](const auto& info) { return info.param.test_name; });

TEST(MoEMLPConfigTest, RefusesTextThatIsNotAJsonObject) {
  EXPECT_THAT(ParseMoEMLPConfig("{\"input_dim\": ", kSource),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(kSource), HasSubstr("not valid JSON"))));
  EXPECT_THAT(ParseMoEMLPConfig("[1, 2]", kSource),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected a JSON object")));
  EXPECT_THAT(ParseMoEMLPConfig(std::string(100, '[') + std::string(100, ']'), kSource),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nested more than")));
}

TEST(MoEMLPConfigTest, IdentifiesWhatAConfigDescribes) {
  absl::StatusOr<ConfigIdentity> moe_mlp = IdentifyConfig(ValidConfig().dump(), kSource);
  ASSERT_THAT(moe_mlp, IsOk());
  EXPECT_EQ(moe_mlp->kind, ConfigIdentity::Kind::kMoEMLP);

  absl::StatusOr<ConfigIdentity> hf = IdentifyConfig(
      R"({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral"})", kSource);
  ASSERT_THAT(hf, IsOk());
  EXPECT_EQ(hf->kind, ConfigIdentity::Kind::kHuggingFace);

  absl::StatusOr<ConfigIdentity> other = IdentifyConfig(R"({"architecture": "ResNet"})", kSource);
  ASSERT_THAT(other, IsOk());
  EXPECT_EQ(other->kind, ConfigIdentity::Kind::kUnknown);
  EXPECT_EQ(other->architecture, "ResNet");

  EXPECT_THAT(IdentifyConfig("not json", kSource),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(kSource)));
}

TEST(MoEMLPConfigTest, ReadConfigFileReadsAndRefusesMissingFiles) {
  testing::ScratchDir dir;
  const std::string path = dir.File("config.json");
  EXPECT_THAT(ReadConfigFile(path), StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
  const std::string text = ValidConfig().dump();
  testing::WriteFile(
      path, std::vector<std::byte>(reinterpret_cast<const std::byte*>(text.data()),
                                   reinterpret_cast<const std::byte*>(text.data()) + text.size()));
  absl::StatusOr<std::string> read = ReadConfigFile(path);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, text);
}

}  // namespace
}  // namespace moe::model
