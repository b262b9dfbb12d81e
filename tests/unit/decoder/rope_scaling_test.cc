// Scaled RoPE (linear, YaRN) from config.json to the rotation tables, against what Hugging Face
// transformers 4.46.3 computes for the same configs (testdata/rope_scaling_reference.json, made
// by make_rope_scaling_reference.py; transformers computes in float32, so inverse frequencies
// agree to relative 2e-6). The whole model with YaRN is decoder_fixture_test's Qwen2MoeYarn case.
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/engine/decoder/rotary_embedding.h"
#include "server/model/model_config.h"
#include "tests/testing/status_matchers.h"

namespace moe {
namespace {

constexpr char kReference[] =
    MOE_SOURCE_DIR "/tests/unit/decoder/testdata/rope_scaling_reference.json";
constexpr double kFrequencyTolerance = 2e-6;

// A Mixtral config carrying one reference case's RoPE fields.
nlohmann::json ConfigFor(const nlohmann::json& reference) {
  const int64_t head_dim = reference["head_dim"];
  return {{"architectures", {"MixtralForCausalLM"}},
          {"vocab_size", 64},
          {"hidden_size", head_dim * 4},
          {"intermediate_size", 32},
          {"num_hidden_layers", 1},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"num_local_experts", 4},
          {"num_experts_per_tok", 2},
          {"rope_theta", reference["rope_theta"]},
          {"max_position_embeddings", reference["max_position_embeddings"]},
          {"rope_scaling", reference["rope_scaling"]}};
}

TEST(RopeScalingTest, FrequenciesAndScaleMatchTransformers) {
  std::ifstream file(kReference);
  ASSERT_TRUE(file) << "cannot read " << kReference;
  const nlohmann::json reference = nlohmann::json::parse(file);
  ASSERT_GE(reference["cases"].size(), 4u);
  for (const nlohmann::json& c : reference["cases"]) {
    SCOPED_TRACE(c["rope_scaling"].dump() + " head_dim " + c["head_dim"].dump());
    MOE_ASSERT_OK_AND_ASSIGN(const model::ModelConfig config,
                             model::ParseModelConfig(ConfigFor(c).dump(), "case/config.json"));
    ASSERT_NE(config.rope_scaling.type, model::RopeScalingType::kNone);
    const engine::RopeFrequencies got =
        engine::ComputeRopeFrequencies(config.head_dim, config.rope_theta, config.rope_scaling);
    const std::vector<double> want = c["inv_freq"];
    ASSERT_EQ(got.inv_freq.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(got.inv_freq[i], want[i], kFrequencyTolerance * want[i]) << "pair " << i;
    }
    EXPECT_NEAR(got.attention_scale, c["attention_scale"].get<double>(), 1e-12);
    // The context the scaling opens (no original_max_position_embeddings in these configs).
    const double factor = c["rope_scaling"]["factor"];
    EXPECT_EQ(config.max_position_embeddings,
              static_cast<int64_t>(c["max_position_embeddings"].get<double>() * factor));
  }
}

// With original_max_position_embeddings given (as Qwen's model cards enable YaRN), the ramp is
// placed over it, not over max_position_embeddings (vLLM's reading): the frequencies are those
// transformers computes for a config whose max_position_embeddings is that original length.
TEST(RopeScalingTest, YarnPlacesItsRampOverTheOriginalContext) {
  std::ifstream file(kReference);
  ASSERT_TRUE(file) << "cannot read " << kReference;
  const nlohmann::json reference = nlohmann::json::parse(file);
  const nlohmann::json* trained = nullptr;  // head_dim 128, theta 1e6, 32768 positions, yarn x4
  for (const nlohmann::json& c : reference["cases"]) {
    if (c["head_dim"] == 128 && c["max_position_embeddings"] == 32768 &&
        c["rope_scaling"].value("rope_type", "") == "yarn" &&
        !c["rope_scaling"].contains("attention_factor")) {
      trained = &c;
    }
  }
  ASSERT_NE(trained, nullptr) << "reference case missing";
  nlohmann::json config = ConfigFor(*trained);
  config["max_position_embeddings"] = 40960;
  config["rope_scaling"]["original_max_position_embeddings"] = 32768;
  MOE_ASSERT_OK_AND_ASSIGN(const model::ModelConfig parsed,
                           model::ParseModelConfig(config.dump(), "qwen/config.json"));
  EXPECT_EQ(parsed.max_position_embeddings, 131072);
  const engine::RopeFrequencies got =
      engine::ComputeRopeFrequencies(parsed.head_dim, parsed.rope_theta, parsed.rope_scaling);
  const std::vector<double> want = (*trained)["inv_freq"];
  ASSERT_EQ(got.inv_freq.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got.inv_freq[i], want[i], kFrequencyTolerance * want[i]) << "pair " << i;
  }
  EXPECT_NEAR(got.attention_scale, (*trained)["attention_scale"].get<double>(), 1e-12);
}

// The table the attention reads: cos and sin of position x frequency, times YaRN's scale.
TEST(RopeScalingTest, RotationUsesTheScaledFrequenciesAndScale) {
  model::RopeScaling yarn;
  yarn.type = model::RopeScalingType::kYarn;
  yarn.factor = 4.0;
  yarn.original_max_position_embeddings = 64;
  yarn.attention_factor = 1.25;
  const engine::RopeFrequencies frequencies = engine::ComputeRopeFrequencies(16, 10000.0, yarn);
  engine::RotaryEmbedding rope(16, frequencies);
  rope.Prepare(300);
  const int64_t position = 250;  // past the trained context
  std::vector<float> x(16);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.25f * static_cast<float>(i) - 1.5f;
  std::vector<float> got = x;
  rope.Apply(got.data(), 1, position);
  for (int64_t i = 0; i < 8; ++i) {
    const double angle = static_cast<double>(position) * frequencies.inv_freq[i];
    const double c = std::cos(angle) * 1.25, s = std::sin(angle) * 1.25;
    EXPECT_NEAR(got[i], x[i] * c - x[i + 8] * s, 1e-5) << i;
    EXPECT_NEAR(got[i + 8], x[i + 8] * c + x[i] * s, 1e-5) << i;
  }
}

}  // namespace
}  // namespace moe
