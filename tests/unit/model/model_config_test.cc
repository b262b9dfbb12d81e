#include "server/model/model_config.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"

namespace moe::model {
namespace {

using ::moe::testing::IsOk;
using ::moe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A complete, small Mixtral config that the tests below break one key at a time.
nlohmann::json MixtralJson() {
  return nlohmann::json::parse(R"({
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 512,
    "tie_word_embeddings": false,
    "torch_dtype": "bfloat16",
    "sliding_window": null
  })");
}

absl::StatusOr<ModelConfig> Parse(const nlohmann::json& config) {
  return ParseModelConfig(config.dump(), "test/config.json");
}

// The fixture folder whose name starts with `prefix`, or "" when $MOE_FIXTURES has none.
std::string FixtureNamed(const std::string& prefix) {
  for (const std::string& folder : moe::testing::FixtureFolders()) {
    if (std::filesystem::path(folder).filename().string().rfind(prefix, 0) == 0) return folder;
  }
  return "";
}

TEST(ModelConfigTest, EveryFixtureConfigLoads) {
  const std::vector<std::string> folders = moe::testing::FixtureFolders();
  ASSERT_FALSE(folders.empty()) << "no fixture folders under " << moe::testing::FixturesRoot();
  for (const std::string& folder : folders) {
    SCOPED_TRACE(folder);
    MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig config, LoadModelConfig(folder));
    EXPECT_FALSE(config.MoELayerIndices().empty());
    EXPECT_EQ(config.layer_is_moe.size(), static_cast<size_t>(config.num_layers));
    EXPECT_GE(config.top_k, 1);
    EXPECT_LE(config.top_k, config.num_experts);
    EXPECT_EQ(config.router().top_k, config.top_k);
  }
}

TEST(ModelConfigTest, MixtralFixtureParsesWithRenormalisedRouting) {
  const std::string folder = FixtureNamed("mixtral");
  if (folder.empty()) GTEST_SKIP() << "no mixtral fixture under " << moe::testing::FixturesRoot();
  MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig config, LoadModelConfig(folder));
  EXPECT_EQ(config.family, ModelFamily::kMixtral);
  EXPECT_EQ(config.architecture, "MixtralForCausalLM");
  EXPECT_EQ(config.hidden_size, 64);
  EXPECT_EQ(config.num_layers, 2);
  EXPECT_EQ(config.num_attention_heads, 4);
  EXPECT_EQ(config.num_key_value_heads, 2);
  EXPECT_EQ(config.head_dim, 16);
  EXPECT_EQ(config.num_experts, 8);
  EXPECT_EQ(config.top_k, 2);
  EXPECT_EQ(config.moe_intermediate_size, 96);
  EXPECT_EQ(config.shared_expert_intermediate_size, 0);
  EXPECT_EQ(config.torch_dtype, kernels::DType::kBF16);
  EXPECT_DOUBLE_EQ(config.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(config.rms_norm_eps, 1e-5);
  EXPECT_FALSE(config.qk_norm);
  EXPECT_FALSE(config.attention_bias);
  EXPECT_TRUE(config.router().renormalize);
  EXPECT_EQ(config.router().scoring, kernels::ScoringFunc::kSoftmax);
  EXPECT_THAT(config.MoELayerIndices(), ElementsAre(0, 1));
}

TEST(ModelConfigTest, OlmoeFixtureParsesWithoutRenormalisation) {
  const std::string folder = FixtureNamed("olmoe");
  if (folder.empty()) GTEST_SKIP() << "no olmoe fixture under " << moe::testing::FixturesRoot();
  MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig config, LoadModelConfig(folder));
  EXPECT_EQ(config.family, ModelFamily::kOlmoe);
  EXPECT_EQ(config.hidden_size, 48);
  EXPECT_EQ(config.num_experts, 16);
  EXPECT_EQ(config.top_k, 4);
  EXPECT_EQ(config.moe_intermediate_size, 32);
  EXPECT_EQ(config.torch_dtype, kernels::DType::kF32);
  EXPECT_TRUE(config.qk_norm);
  EXPECT_FALSE(config.router().renormalize);
}

TEST(ModelConfigTest, Qwen2MoeFixtureParsesWithSharedExpertAndQkvBias) {
  const std::string folder = FixtureNamed("qwen2moe");
  if (folder.empty()) GTEST_SKIP() << "no qwen2moe fixture under " << moe::testing::FixturesRoot();
  MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig config, LoadModelConfig(folder));
  EXPECT_EQ(config.family, ModelFamily::kQwen2Moe);
  EXPECT_EQ(config.num_experts, 6);
  EXPECT_EQ(config.top_k, 2);
  EXPECT_EQ(config.moe_intermediate_size, 48);
  EXPECT_EQ(config.dense_intermediate_size, 128);
  EXPECT_EQ(config.shared_expert_intermediate_size, 96);
  EXPECT_TRUE(config.attention_bias);
  EXPECT_FALSE(config.qk_norm);
  EXPECT_FALSE(config.router().renormalize);
  EXPECT_THAT(config.MoELayerIndices(), ElementsAre(0, 1));
}

// Shaped like Qwen3-30B-A3B's config.json: head_dim is given and heads * head_dim != hidden.
constexpr char kQwen3MoeConfig[] = R"({
  "architectures": ["Qwen3MoeForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "decoder_sparse_step": 1,
  "eos_token_id": 151645,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 6144,
  "max_position_embeddings": 40960,
  "max_window_layers": 48,
  "mlp_only_layers": [],
  "model_type": "qwen3_moe",
  "moe_intermediate_size": 768,
  "norm_topk_prob": true,
  "num_attention_heads": 32,
  "num_experts": 128,
  "num_experts_per_tok": 8,
  "num_hidden_layers": 48,
  "num_key_value_heads": 4,
  "output_router_logits": false,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000.0,
  "router_aux_loss_coef": 0.001,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.51.0",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

TEST(ModelConfigTest, Qwen3MoeConfigParses) {
  MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig config,
                           ParseModelConfig(kQwen3MoeConfig, "qwen3/config.json"));
  EXPECT_EQ(config.family, ModelFamily::kQwen3Moe);
  EXPECT_EQ(config.model_type, "qwen3_moe");
  EXPECT_EQ(config.hidden_size, 2048);
  EXPECT_EQ(config.num_attention_heads, 32);
  EXPECT_EQ(config.num_key_value_heads, 4);
  EXPECT_EQ(config.head_dim, 128);  // given, not hidden_size / heads = 64
  EXPECT_EQ(config.num_layers, 48);
  EXPECT_EQ(config.num_experts, 128);
  EXPECT_EQ(config.top_k, 8);
  EXPECT_EQ(config.moe_intermediate_size, 768);
  EXPECT_EQ(config.dense_intermediate_size, 6144);
  EXPECT_EQ(config.shared_expert_intermediate_size, 0);
  EXPECT_EQ(config.vocab_size, 151936);
  EXPECT_EQ(config.max_position_embeddings, 40960);
  EXPECT_EQ(config.torch_dtype, kernels::DType::kBF16);
  EXPECT_TRUE(config.qk_norm);
  EXPECT_FALSE(config.attention_bias);
  EXPECT_TRUE(config.router().renormalize);
  EXPECT_EQ(config.MoELayerIndices().size(), 48u);
}

TEST(ModelConfigTest, Qwen3MoeNormTopkProbDefaultsToFalseAsInTransformers) {
  nlohmann::json config = nlohmann::json::parse(kQwen3MoeConfig);
  config.erase("norm_topk_prob");
  MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig parsed, Parse(config));
  EXPECT_FALSE(parsed.router().renormalize);
}

// An unusual but valid config: no architectures list (family from model_type), defaults for
// most optional keys, nulls for others, newer spellings ("dtype", "rope_parameters"), every
// other layer dense and one more forced dense by mlp_only_layers.
constexpr char kOddQwen2MoeConfig[] = R"({
  "model_type": "qwen2_moe",
  "vocab_size": 1000,
  "hidden_size": 96,
  "intermediate_size": 200,
  "moe_intermediate_size": 32,
  "shared_expert_intermediate_size": 64,
  "num_hidden_layers": 8,
  "num_attention_heads": 6,
  "num_key_value_heads": null,
  "num_experts": 60,
  "num_experts_per_tok": 4,
  "decoder_sparse_step": 2,
  "mlp_only_layers": [5],
  "dtype": "float16",
  "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
  "some_future_key": {"nested": [1, 2, 3]}
})";

TEST(ModelConfigTest, OddQwen2MoeConfigParsesWithDefaults) {
  MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig config,
                           ParseModelConfig(kOddQwen2MoeConfig, "odd/config.json"));
  EXPECT_EQ(config.family, ModelFamily::kQwen2Moe);
  EXPECT_EQ(config.architecture, "Qwen2MoeForCausalLM");
  EXPECT_EQ(config.num_key_value_heads, 6);  // null: defaults to num_attention_heads
  EXPECT_EQ(config.head_dim, 16);
  EXPECT_EQ(config.torch_dtype, kernels::DType::kF16);
  EXPECT_DOUBLE_EQ(config.rope_theta, 500000.0);
  EXPECT_DOUBLE_EQ(config.rms_norm_eps, 1e-6);  // the Qwen2-MoE default
  EXPECT_EQ(config.max_position_embeddings, 32768);
  EXPECT_TRUE(config.attention_bias);
  EXPECT_FALSE(config.router().renormalize);
  // (L + 1) % 2 == 0 gives 1, 3, 5, 7; layer 5 is in mlp_only_layers.
  EXPECT_THAT(config.MoELayerIndices(), ElementsAre(1, 3, 7));
  EXPECT_EQ(config.dense_intermediate_size, 200);
}

TEST(ModelConfigTest, DenseLayersNeedIntermediateSize) {
  nlohmann::json config = nlohmann::json::parse(kOddQwen2MoeConfig);
  config.erase("intermediate_size");
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("test/config.json"), HasSubstr("'intermediate_size'"))));
}

TEST(ModelConfigTest, ConfigWithoutAnyMoELayerIsRefused) {
  nlohmann::json config = nlohmann::json::parse(kOddQwen2MoeConfig);
  config["decoder_sparse_step"] = 9;  // larger than the 8 layers
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("decoder_sparse_step")));
}

TEST(ModelConfigTest, MlpOnlyLayerOutOfRangeIsRefused) {
  nlohmann::json config = nlohmann::json::parse(kOddQwen2MoeConfig);
  config["mlp_only_layers"] = {8};
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("mlp_only_layers"), HasSubstr("= 8"), HasSubstr("[0, 7]"))));
}

TEST(ModelConfigTest, ArchitectureWinsOverMissingModelType) {
  nlohmann::json config = MixtralJson();
  config.erase("model_type");
  MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig parsed, Parse(config));
  EXPECT_EQ(parsed.family, ModelFamily::kMixtral);
  EXPECT_EQ(parsed.model_type, "mixtral");
}

TEST(ModelConfigTest, UnknownArchitectureListsTheSupportedOnes) {
  nlohmann::json config = MixtralJson();
  config["architectures"] = {"LlamaForCausalLM"};
  config["model_type"] = "llama";
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("test/config.json"), HasSubstr("LlamaForCausalLM"),
                             HasSubstr("MixtralForCausalLM"), HasSubstr("OlmoeForCausalLM"),
                             HasSubstr("Qwen2MoeForCausalLM"), HasSubstr("Qwen3MoeForCausalLM"))));
}

TEST(ModelConfigTest, UnknownModelTypeWithoutArchitecturesListsTheSupportedOnes) {
  nlohmann::json config = MixtralJson();
  config.erase("architectures");
  config["model_type"] = "deepseek_v3";
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("deepseek_v3"), HasSubstr("Qwen3MoeForCausalLM"))));
}

TEST(ModelConfigTest, ArchitectureAndModelTypeThatDisagreeAreRefused) {
  nlohmann::json config = MixtralJson();
  config["model_type"] = "qwen2_moe";
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("MixtralForCausalLM"), HasSubstr("qwen2_moe"))));
}

TEST(ModelConfigTest, TopKAboveExpertCountIsRefused) {
  nlohmann::json config = MixtralJson();
  config["num_experts_per_tok"] = 9;
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("num_experts_per_tok = 9"), HasSubstr("(8)"))));
  config["num_experts_per_tok"] = 0;
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'num_experts_per_tok' = 0")));
}

TEST(ModelConfigTest, MissingRequiredKeyNamesTheKeyAndTheFile) {
  for (const char* key : {"hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads",
                          "num_local_experts", "num_experts_per_tok", "intermediate_size"}) {
    SCOPED_TRACE(key);
    nlohmann::json config = MixtralJson();
    config.erase(key);
    EXPECT_THAT(Parse(config),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("test/config.json"),
                               HasSubstr(std::string("required key '") + key + "' is missing"))));
  }
  nlohmann::json qwen3 = nlohmann::json::parse(kQwen3MoeConfig);
  qwen3.erase("moe_intermediate_size");
  EXPECT_THAT(Parse(qwen3),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'moe_intermediate_size'")));
}

TEST(ModelConfigTest, WrongJsonTypeNamesTheKey) {
  nlohmann::json config = MixtralJson();
  config["hidden_size"] = "64";
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'hidden_size' must be an integer"), HasSubstr("string"))));
  config = MixtralJson();
  config["hidden_size"] = 64.5;
  EXPECT_THAT(Parse(config), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("'hidden_size' must be an integer")));
  config = MixtralJson();
  config["tie_word_embeddings"] = "no";
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'tie_word_embeddings'")));
  config = MixtralJson();
  config["architectures"] = "MixtralForCausalLM";
  EXPECT_THAT(Parse(config), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("'architectures' must be an array")));
}

TEST(ModelConfigTest, AbsurdSizesAreRefusedWithTheLimit) {
  struct Case {
    const char* key;
    nlohmann::json value;
    const char* expected;
  };
  const Case cases[] = {
      {"hidden_size", 1 << 20, "'hidden_size' = 1048576 is out of the supported range [1, 65536]"},
      {"hidden_size", 0, "'hidden_size' = 0"},
      {"hidden_size", -64, "'hidden_size' = -64"},
      {"num_local_experts", 100000, "[1, 4096]"},
      {"num_hidden_layers", 5000, "[1, 1024]"},
      {"vocab_size", int64_t{1} << 40, "'vocab_size' = 1099511627776"},
      {"intermediate_size", int64_t{1} << 21, "'intermediate_size' = 2097152"},
      {"max_position_embeddings", int64_t{1} << 40, "'max_position_embeddings'"},
      {"num_attention_heads", 1 << 20, "'num_attention_heads'"},
      {"num_key_value_heads", 8, "'num_key_value_heads' = 8 is out of the supported range [1, 4]"},
      {"hidden_size", UINT64_MAX, "'hidden_size' = 18446744073709551615"},
      {"rms_norm_eps", -1.0, "'rms_norm_eps'"},
      {"rope_theta", 0.0, "'rope_theta'"},
  };
  for (const Case& test_case : cases) {
    SCOPED_TRACE(test_case.key);
    nlohmann::json config = MixtralJson();
    config[test_case.key] = test_case.value;
    EXPECT_THAT(Parse(config),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(test_case.expected)));
  }
}

TEST(ModelConfigTest, HeadGeometryMustBeConsistent) {
  nlohmann::json config = MixtralJson();
  config["num_attention_heads"] = 5;  // 64 % 5 != 0
  config["num_key_value_heads"] = 5;
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("hidden_size = 64"), HasSubstr("num_attention_heads = 5"))));
  config = MixtralJson();
  config["num_key_value_heads"] = 3;  // 4 % 3 != 0
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_key_value_heads = 3")));
  config = MixtralJson();
  config["head_dim"] = 15;
  EXPECT_THAT(Parse(config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("head_dim = 15 is odd")));
  config = MixtralJson();
  config["num_attention_heads"] = 5;
  config["num_key_value_heads"] = 5;
  config["head_dim"] = 16;  // explicit head_dim lifts the divisibility requirement
  EXPECT_THAT(Parse(config), IsOk());
}

TEST(ModelConfigTest, NonSiluActivationIsRefused) {
  nlohmann::json config = MixtralJson();
  config["hidden_act"] = "gelu";
  EXPECT_THAT(Parse(config), StatusIs(absl::StatusCode::kInvalidArgument,
                                      AllOf(HasSubstr("hidden_act 'gelu'"), HasSubstr("silu"))));
}

TEST(ModelConfigTest, UnsupportedDTypeIsRefused) {
  nlohmann::json config = MixtralJson();
  config["torch_dtype"] = "float8_e4m3fn";
  EXPECT_THAT(Parse(config), StatusIs(absl::StatusCode::kInvalidArgument,
                                      AllOf(HasSubstr("'torch_dtype'"), HasSubstr("bfloat16"))));
}

TEST(ModelConfigTest, RopeScalingKindsNotImplementedAreRefusedNamingThem) {
  for (const char* kind : {"dynamic", "llama3", "longrope"}) {
    nlohmann::json config = MixtralJson();
    config["rope_scaling"] = {{"rope_type", kind}, {"factor", 4.0}};
    EXPECT_THAT(Parse(config),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("rope_scaling"), HasSubstr(kind), HasSubstr("yarn"))));
  }
  nlohmann::json deepseek = MixtralJson();
  deepseek["rope_scaling"] = {{"type", "yarn"}, {"factor", 40.0}, {"mscale", 1.0}};
  EXPECT_THAT(Parse(deepseek),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rope_scaling.mscale")));
  for (const nlohmann::json& bad :
       {nlohmann::json{{"type", "yarn"}}, nlohmann::json{{"type", "linear"}, {"factor", 0.5}},
        nlohmann::json{{"type", "yarn"}, {"factor", "4"}},
        nlohmann::json{
            {"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 0}}}) {
    nlohmann::json config = MixtralJson();
    config["rope_scaling"] = bad;
    EXPECT_THAT(Parse(config),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rope_scaling.")))
        << bad.dump();
  }
}

TEST(ModelConfigTest, YarnNeedsARopeThetaAboveOne) {
  nlohmann::json config = MixtralJson();
  config["rope_theta"] = 1.0;
  config["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_THAT(Parse(config), StatusIs(absl::StatusCode::kInvalidArgument,
                                      AllOf(HasSubstr("yarn"), HasSubstr("rope_theta > 1"))));
  config["rope_theta"] = 1.5;
  EXPECT_TRUE(Parse(config).ok());
}

// YaRN as Qwen's model cards enable it: the context becomes original_max_position_embeddings x
// factor (vLLM's rule), and the ramp is placed over original_max_position_embeddings.
TEST(ModelConfigTest, YarnExtendsTheContextFromItsOriginalLength) {
  nlohmann::json config = MixtralJson();
  config["max_position_embeddings"] = 40960;
  config["rope_scaling"] = {
      {"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  MOE_ASSERT_OK_AND_ASSIGN(ModelConfig parsed, Parse(config));
  EXPECT_EQ(parsed.rope_scaling.type, RopeScalingType::kYarn);
  EXPECT_EQ(parsed.rope_scaling.original_max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(parsed.rope_scaling.factor, 4.0);
  EXPECT_DOUBLE_EQ(parsed.rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(parsed.rope_scaling.beta_slow, 1.0);
  EXPECT_DOUBLE_EQ(parsed.rope_scaling.attention_factor, 0.1 * std::log(4.0) + 1.0);
  EXPECT_EQ(parsed.max_position_embeddings, 131072);

  config["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  MOE_ASSERT_OK_AND_ASSIGN(parsed, Parse(config));
  EXPECT_EQ(parsed.rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_EQ(parsed.max_position_embeddings, 81920);

  config["rope_scaling"] = {{"rope_type", "default"}};
  MOE_ASSERT_OK_AND_ASSIGN(parsed, Parse(config));
  EXPECT_EQ(parsed.rope_scaling.type, RopeScalingType::kNone);
  EXPECT_EQ(parsed.max_position_embeddings, 40960);
}

TEST(ModelConfigTest, OlmoeClipQkvIsRefused) {
  nlohmann::json config = {{"architectures", {"OlmoeForCausalLM"}},
                           {"vocab_size", 100},
                           {"hidden_size", 32},
                           {"intermediate_size", 16},
                           {"num_hidden_layers", 1},
                           {"num_attention_heads", 2},
                           {"num_experts", 4},
                           {"num_experts_per_tok", 2},
                           {"clip_qkv", nullptr}};
  EXPECT_THAT(Parse(config), IsOk());
  config["clip_qkv"] = 8.0;
  EXPECT_THAT(Parse(config), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("clip_qkv")));
}

TEST(ModelConfigTest, MalformedJsonIsAnErrorNotAnException) {
  for (const char* text : {"", "{", "[1, 2]", "{\"hidden_size\": }", "null"}) {
    SCOPED_TRACE(text);
    EXPECT_THAT(ParseModelConfig(text, "bad/config.json"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad/config.json")));
  }
}

// `levels` arrays (or objects) nested inside each other around a 0.
std::string Nested(int levels, bool objects) {
  std::string text;
  for (int i = 0; i < levels; ++i) text += objects ? "{\"k\":" : "[";
  text += "0";
  for (int i = 0; i < levels; ++i) text += objects ? "}" : "]";
  return text;
}

// MixtralJson() with `key`'s value replaced by raw JSON text.
std::string MixtralWithRawValue(const std::string& key, const std::string& raw) {
  nlohmann::json config = MixtralJson();
  config[key] = "@@";
  std::string text = config.dump();
  text.replace(text.find("\"@@\""), 4, raw);
  return text;
}

TEST(ModelConfigTest, DeeplyNestedJsonIsRefusedWithoutCrashing) {
  // About 200 KB of nesting under a key read as an integer: printing the value in the error
  // used to recurse once per level and overflow the stack.
  for (const bool objects : {false, true}) {
    SCOPED_TRACE(objects ? "objects" : "arrays");
    const std::string text =
        MixtralWithRawValue("vocab_size", Nested(objects ? 40'000 : 100'000, objects));
    ASSERT_GT(text.size(), 200'000u);
    const absl::StatusOr<ModelConfig> result = ParseModelConfig(text, "deep/config.json");
    EXPECT_THAT(result, StatusIs(absl::StatusCode::kInvalidArgument,
                                 AllOf(HasSubstr("deep/config.json: "),
                                       HasSubstr("nested more than 32 levels deep"))));
    EXPECT_LT(result.status().message().size(), 300u);
  }
  // At the limit (32 levels with the top-level object) the value is read, and the type error
  // describes it by its size without printing it.
  EXPECT_THAT(ParseModelConfig(MixtralWithRawValue("vocab_size", Nested(31, false)), "c.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'vocab_size' must be an integer, got an array of size 1")));
  EXPECT_THAT(ParseModelConfig(MixtralWithRawValue("vocab_size", Nested(32, false)), "c.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nested more than 32")));
  // Unread keys count as well: the whole document is bounded.
  EXPECT_THAT(ParseModelConfig(MixtralWithRawValue("unused", Nested(32, true)), "c.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nested more than 32")));
}

TEST(ModelConfigTest, WrongTypeErrorsDescribeLargeValuesBriefly) {
  nlohmann::json config = MixtralJson();
  config["hidden_size"] = std::vector<int>(1'000'000, 7);
  absl::StatusOr<ModelConfig> result = Parse(config);
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("'hidden_size' must be an integer, got an array of "
                                         "size 1000000")));
  EXPECT_LT(result.status().message().size(), 300u);
  config = MixtralJson();
  config["hidden_size"] = std::string(1'000'000, 'x');
  result = Parse(config);
  EXPECT_THAT(result,
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("got the string 'xxx"), HasSubstr("...' (1000000 bytes)"))));
  EXPECT_LT(result.status().message().size(), 1000u);
}

TEST(ModelConfigTest, StringsFromTheFileAreEscapedAndCutShort) {
  nlohmann::json config = MixtralJson();
  config["architectures"] = {std::string(10 << 20, 'A')};
  absl::StatusOr<ModelConfig> result = Parse(config);
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("unsupported architecture 'AAA"),
                                     HasSubstr("(10485760 bytes)"))));
  EXPECT_LT(result.status().message().size(), 1024u);

  struct Case {
    const char* key;
    const char* expected;
  };
  for (const Case& test_case : {Case{"architectures", "architecture 'Evil\\nName\\033[2Jzzz"},
                                Case{"model_type", "model_type 'Evil\\nName\\033[2Jzzz"},
                                Case{"hidden_act", "hidden_act 'Evil\\nName\\033[2Jzzz"},
                                Case{"torch_dtype", "'torch_dtype' = 'Evil\\nName\\033[2Jzzz"}}) {
    SCOPED_TRACE(test_case.key);
    config = MixtralJson();
    const std::string hostile = std::string("Evil\nName\x1b[2J") + std::string(1 << 20, 'z');
    if (std::string(test_case.key) == "architectures") {
      config["architectures"] = {hostile};
    } else if (std::string(test_case.key) == "model_type") {
      config.erase("architectures");
      config["model_type"] = hostile;
    } else {
      config[test_case.key] = hostile;
    }
    result = Parse(config);
    EXPECT_THAT(result, StatusIs(absl::StatusCode::kInvalidArgument,
                                 AllOf(HasSubstr(test_case.expected),
                                       HasSubstr(std::to_string(hostile.size()) + " bytes)"))));
    EXPECT_EQ(result.status().message().find('\n'), std::string::npos);
    EXPECT_LT(result.status().message().size(), 1024u);
  }
}

TEST(ModelConfigTest, ParserErrorsThatEchoTheInputAreCutShort) {
  // The JSON parser's message quotes the token it stopped in: here a megabyte-long string.
  const std::string text = "{\"hidden_act\": \"" + std::string(1 << 20, 'x') + "\x01\"}";
  const absl::StatusOr<ModelConfig> result = ParseModelConfig(text, "bad/config.json");
  EXPECT_THAT(result,
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("bad/config.json: not valid JSON"), HasSubstr("bytes)"))));
  EXPECT_LT(result.status().message().size(), 1024u);
}

TEST(ModelConfigTest, MissingConfigFileIsNotFound) {
  EXPECT_THAT(LoadModelConfig("/nonexistent/model"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/model/config.json")));
}

TEST(ModelConfigTest, FamilyNamesAreReadable) {
  EXPECT_EQ(ModelFamilyName(ModelFamily::kMixtral), "Mixtral");
  EXPECT_EQ(ModelFamilyName(ModelFamily::kOlmoe), "OLMoE");
  EXPECT_EQ(ModelFamilyName(ModelFamily::kQwen2Moe), "Qwen2-MoE");
  EXPECT_EQ(ModelFamilyName(ModelFamily::kQwen3Moe), "Qwen3-MoE");
}

}  // namespace
}  // namespace moe::model
