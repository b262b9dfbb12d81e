#include "server/model/moe_weights.h"

#include <stdlib.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/common/status_macros.h"
#include "moe/kernels/dtype.h"
#include "moe/kernels/moe_layer.h"
#include "nlohmann/json.hpp"
#include "server/model/checkpoint.h"
#include "server/model/model_config.h"
#include "server/model/safetensors.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/safetensors_writer.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace moe::model {
namespace {

using kernels::DType;
using ::moe::testing::StatusIs;
using ::moe::testing::TestTensor;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

using TempDir = ::moe::testing::ScratchDir;

// `values` encoded as `dtype` (F32, F16 or BF16).
TestTensor Tensor(std::string name, DType dtype, std::vector<int64_t> shape,
                  const std::vector<float>& values) {
  TestTensor tensor{std::move(name), dtype, std::move(shape), {}};
  tensor.bytes.resize(values.size() * kernels::DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(tensor.bytes.data() + 4 * i, &values[i], 4);
    } else {
      const uint16_t bits =
          dtype == DType::kF16 ? kernels::FloatToHalf(values[i]) : kernels::FloatToBF16(values[i]);
      std::memcpy(tensor.bytes.data() + 2 * i, &bits, 2);
    }
  }
  return tensor;
}

// Hand-computable weights: element i of tensor `id` is (1 + i/128) * 2^(id % 24 - 12), exact
// in F32, F16 and BF16 (7 fraction bits, normal exponents) for i < 128, and different for every
// element and for tensors whose ids differ by less than 24.
float Value(int id, int64_t i) {
  return std::ldexp(1.0f + static_cast<float>(i) / 128.0f, id % 24 - 12);
}

std::vector<float> Values(int id, int64_t count) {
  std::vector<float> values(count);
  for (int64_t i = 0; i < count; ++i) values[i] = Value(id, i);
  return values;
}

// Sizes of the synthetic layers.
constexpr int64_t kHidden = 4;
constexpr int64_t kFfn = 3;
constexpr int64_t kExperts = 2;
constexpr int64_t kSharedFfn = 2;

constexpr char kTinyMixtralConfig[] = R"({
  "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
  "vocab_size": 16, "hidden_size": 4, "intermediate_size": 3, "num_hidden_layers": 1,
  "num_attention_heads": 2, "num_key_value_heads": 1, "num_local_experts": 2,
  "num_experts_per_tok": 1, "hidden_act": "silu", "torch_dtype": "float32"
})";

// Qwen2-MoE, two layers, layer 0 dense: only layer 1 has (and needs) MoE tensors.
constexpr char kTinyQwen2MoeConfig[] = R"({
  "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
  "vocab_size": 16, "hidden_size": 4, "intermediate_size": 8, "moe_intermediate_size": 3,
  "shared_expert_intermediate_size": 2, "num_hidden_layers": 2, "num_attention_heads": 2,
  "num_experts": 2, "num_experts_per_tok": 1, "mlp_only_layers": [0],
  "torch_dtype": "float32"
})";

// The tensors of a tiny Mixtral layer 0, ids: router 1, expert e gate/up/down 10e+2/3/4.
std::vector<TestTensor> TinyMixtralTensors(DType dtype) {
  std::vector<TestTensor> tensors;
  const std::string block = "model.layers.0.block_sparse_moe.";
  tensors.push_back(
      Tensor(block + "gate.weight", dtype, {kExperts, kHidden}, Values(1, kExperts * kHidden)));
  for (int e = 0; e < kExperts; ++e) {
    const std::string expert = block + "experts." + std::to_string(e) + ".";
    tensors.push_back(
        Tensor(expert + "w1.weight", dtype, {kFfn, kHidden}, Values(10 * e + 2, kFfn * kHidden)));
    tensors.push_back(
        Tensor(expert + "w3.weight", dtype, {kFfn, kHidden}, Values(10 * e + 3, kFfn * kHidden)));
    tensors.push_back(
        Tensor(expert + "w2.weight", dtype, {kHidden, kFfn}, Values(10 * e + 4, kHidden * kFfn)));
  }
  return tensors;
}

// Writes `tensors` as <dir>/model.safetensors and opens the checkpoint.
absl::StatusOr<std::unique_ptr<Checkpoint>> WriteCheckpoint(
    const TempDir& dir, const std::vector<TestTensor>& tensors) {
  moe::testing::WriteFile(dir.path() + "/model.safetensors",
                          moe::testing::BuildSafetensors(tensors));
  return Checkpoint::Open(dir.path());
}

TestTensor* FindTensor(std::vector<TestTensor>& tensors, const std::string& name) {
  for (TestTensor& tensor : tensors) {
    if (tensor.name == name) return &tensor;
  }
  return nullptr;
}

void Erase(std::vector<TestTensor>& tensors, const std::string& name) {
  std::erase_if(tensors, [&](const TestTensor& tensor) { return tensor.name == name; });
}

absl::StatusOr<std::vector<MoELayerWeights>> LoadTiny(const char* config_json,
                                                      const std::vector<TestTensor>& tensors) {
  TempDir dir;
  MOE_ASSIGN_OR_RETURN(const ModelConfig config, ParseModelConfig(config_json, "config.json"));
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, WriteCheckpoint(dir, tensors));
  return LoadMoELayers(*checkpoint, config);
}

// `count` elements of `dtype` at `data` (possibly misaligned, as in a mapped file), widened to
// float32.
std::vector<float> Widen(DType dtype, const void* data, size_t count) {
  std::vector<std::byte> aligned(count * kernels::DTypeSize(dtype));
  std::memcpy(aligned.data(), data, aligned.size());
  std::vector<float> values(count);
  EXPECT_TRUE(kernels::WidenToFloat(dtype, aligned.data(), values.data(), count));
  return values;
}

// Element-wise comparison of a slice of a packed buffer with a checkpoint tensor; reports the
// first differing element, which says more than a byte diff.
void ExpectSameElements(const std::string& what, DType dtype, const void* packed,
                        const TensorInfo& tensor) {
  ASSERT_EQ(tensor.dtype, dtype) << what;
  const std::vector<float> expected =
      Widen(tensor.dtype, tensor.data.data(), static_cast<size_t>(tensor.num_elements));
  const std::vector<float> actual = Widen(dtype, packed, expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(actual[i], expected[i])
        << what << ": element " << i << " of '" << tensor.name << "' differs after packing";
  }
}

TEST(MoEWeightsTest, EveryFixtureLoadsWithGateRowsThenUpRowsPerExpert) {
  const std::vector<std::string> folders = moe::testing::FixtureFolders();
  ASSERT_FALSE(folders.empty()) << "no fixture folders under " << moe::testing::FixturesRoot();
  for (const std::string& folder : folders) {
    SCOPED_TRACE(folder);
    MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig config, LoadModelConfig(folder));
    MOE_ASSERT_OK_AND_ASSIGN(const std::unique_ptr<Checkpoint> checkpoint,
                             Checkpoint::Open(folder));
    MOE_ASSERT_OK_AND_ASSIGN(const std::vector<MoELayerWeights> layers,
                             LoadMoELayers(*checkpoint, config));
    ASSERT_EQ(layers.size(), config.MoELayerIndices().size());

    const int64_t d = config.hidden_size;
    const int64_t f = config.moe_intermediate_size;
    for (size_t i = 0; i < layers.size(); ++i) {
      const int64_t layer = config.MoELayerIndices()[i];
      SCOPED_TRACE("layer " + std::to_string(layer));
      EXPECT_EQ(layers[i].layer_index(), layer);
      const kernels::MoELayerWeightsView view = layers[i].view();
      EXPECT_EQ(view.hidden_size, d);
      EXPECT_EQ(view.ffn_size, f);
      EXPECT_EQ(view.num_experts, config.num_experts);
      EXPECT_EQ(view.activation, kernels::Activation::kSwiGLU);
      EXPECT_EQ(view.shared_ffn_size, config.shared_expert_intermediate_size);
      EXPECT_EQ(view.router_bias, nullptr);
      EXPECT_EQ(view.b_in, nullptr);
      EXPECT_EQ(view.b_out, nullptr);

      const std::vector<std::string> names = ExpectedMoETensorNames(config, layer);
      MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* router, checkpoint->Get(names[0]));
      const std::vector<float> expected_router =
          Widen(router->dtype, router->data.data(), static_cast<size_t>(router->num_elements));
      ASSERT_EQ(expected_router.size(), static_cast<size_t>(config.num_experts * d));
      for (size_t j = 0; j < expected_router.size(); ++j) {
        ASSERT_EQ(view.router_weight[j], expected_router[j]) << "router element " << j;
      }
      // The first expert's gate projection sets the layer's dtype.
      MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* first_gate, checkpoint->Get(names[1]));
      EXPECT_EQ(view.weight_dtype, first_gate->dtype);

      const size_t element = kernels::DTypeSize(view.weight_dtype);
      const auto* w_in = static_cast<const std::byte*>(view.w_in);
      const auto* w_out = static_cast<const std::byte*>(view.w_out);
      for (int64_t e = 0; e < config.num_experts; ++e) {
        MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* gate, checkpoint->Get(names[1 + 3 * e]));
        MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* up, checkpoint->Get(names[2 + 3 * e]));
        MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* down, checkpoint->Get(names[3 + 3 * e]));
        const std::byte* expert_in = w_in + e * 2 * f * d * element;
        ExpectSameElements("w_in rows [0, f)", view.weight_dtype, expert_in, *gate);
        ExpectSameElements("w_in rows [f, 2f)", view.weight_dtype, expert_in + f * d * element,
                           *up);
        ExpectSameElements("w_out", view.weight_dtype, w_out + e * d * f * element, *down);
      }
      if (config.shared_expert_intermediate_size > 0) {
        const int64_t fs = config.shared_expert_intermediate_size;
        const size_t base = 1 + 3 * config.num_experts;
        ASSERT_EQ(names.size(), base + 4);
        MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* gate, checkpoint->Get(names[base]));
        MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* up, checkpoint->Get(names[base + 1]));
        MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* down, checkpoint->Get(names[base + 2]));
        MOE_ASSERT_OK_AND_ASSIGN(const TensorInfo* shared_gate, checkpoint->Get(names[base + 3]));
        const auto* shared_in = static_cast<const std::byte*>(view.shared_w_in);
        ExpectSameElements("shared_w_in rows [0, fs)", view.weight_dtype, shared_in, *gate);
        ExpectSameElements("shared_w_in rows [fs, 2fs)", view.weight_dtype,
                           shared_in + fs * d * element, *up);
        ExpectSameElements("shared_w_out", view.weight_dtype, view.shared_w_out, *down);
        ASSERT_NE(view.shared_gate, nullptr);
        const std::vector<float> expected_gate =
            Widen(shared_gate->dtype, shared_gate->data.data(), static_cast<size_t>(d));
        for (int64_t c = 0; c < d; ++c) EXPECT_EQ(view.shared_gate[c], expected_gate[c]) << c;
      } else {
        EXPECT_EQ(view.shared_w_in, nullptr);
        EXPECT_EQ(view.shared_gate, nullptr);
      }
      const uint64_t expected_bytes =
          (config.num_experts * d + (view.shared_gate != nullptr ? d : 0)) * sizeof(float) +
          (3 * config.num_experts * f * d + 3 * view.shared_ffn_size * d) * element;
      EXPECT_EQ(layers[i].bytes(), expected_bytes);
    }
  }
}

// The internal layout written out by hand: w_in[e][r][c] is the gate's [r][c] for r < f and
// the up projection's [r - f][c] after it; w_out[e] is the down projection unchanged.
TEST(MoEWeightsTest, PacksTinyMixtralLayoutExactly) {
  for (const DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(std::string(kernels::DTypeName(dtype)));
    MOE_ASSERT_OK_AND_ASSIGN(const std::vector<MoELayerWeights> layers,
                             LoadTiny(kTinyMixtralConfig, TinyMixtralTensors(dtype)));
    ASSERT_THAT(layers, SizeIs(1));
    const kernels::MoELayerWeightsView view = layers[0].view();
    ASSERT_EQ(view.weight_dtype, dtype);
    // The router is float32 whatever the checkpoint's dtype.
    for (int64_t i = 0; i < kExperts * kHidden; ++i) {
      EXPECT_EQ(view.router_weight[i], Value(1, i)) << "router element " << i;
    }
    const std::vector<float> w_in = Widen(dtype, view.w_in, kExperts * 2 * kFfn * kHidden);
    const std::vector<float> w_out = Widen(dtype, view.w_out, kExperts * kHidden * kFfn);
    for (int64_t e = 0; e < kExperts; ++e) {
      for (int64_t r = 0; r < 2 * kFfn; ++r) {
        for (int64_t c = 0; c < kHidden; ++c) {
          const bool gate = r < kFfn;
          const int64_t source_row = gate ? r : r - kFfn;
          const float expected = Value(10 * e + (gate ? 2 : 3), source_row * kHidden + c);
          EXPECT_EQ(w_in[(e * 2 * kFfn + r) * kHidden + c], expected)
              << "w_in[" << e << "][" << r << "][" << c << "]";
        }
      }
      for (int64_t i = 0; i < kHidden * kFfn; ++i) {
        EXPECT_EQ(w_out[e * kHidden * kFfn + i], Value(10 * e + 4, i))
            << "w_out[" << e << "] element " << i;
      }
    }
    EXPECT_EQ(view.shared_ffn_size, 0);
    EXPECT_EQ(view.shared_w_in, nullptr);
  }
}

TEST(MoEWeightsTest, LoadsOnlyMoELayersAndPacksTheSharedExpert) {
  std::vector<TestTensor> tensors;
  const std::string block = "model.layers.1.mlp.";
  tensors.push_back(Tensor(block + "gate.weight", DType::kBF16, {kExperts, kHidden},
                           Values(1, kExperts * kHidden)));
  for (int e = 0; e < kExperts; ++e) {
    const std::string expert = block + "experts." + std::to_string(e) + ".";
    tensors.push_back(Tensor(expert + "gate_proj.weight", DType::kF32, {kFfn, kHidden},
                             Values(10 * e + 2, kFfn * kHidden)));
    tensors.push_back(Tensor(expert + "up_proj.weight", DType::kF32, {kFfn, kHidden},
                             Values(10 * e + 3, kFfn * kHidden)));
    tensors.push_back(Tensor(expert + "down_proj.weight", DType::kF32, {kHidden, kFfn},
                             Values(10 * e + 4, kHidden * kFfn)));
  }
  tensors.push_back(Tensor(block + "shared_expert.gate_proj.weight", DType::kF32,
                           {kSharedFfn, kHidden}, Values(40, kSharedFfn * kHidden)));
  tensors.push_back(Tensor(block + "shared_expert.up_proj.weight", DType::kF32,
                           {kSharedFfn, kHidden}, Values(41, kSharedFfn * kHidden)));
  tensors.push_back(Tensor(block + "shared_expert.down_proj.weight", DType::kF32,
                           {kHidden, kSharedFfn}, Values(42, kHidden * kSharedFfn)));
  tensors.push_back(
      Tensor(block + "shared_expert_gate.weight", DType::kF16, {1, kHidden}, Values(50, kHidden)));

  MOE_ASSERT_OK_AND_ASSIGN(const std::vector<MoELayerWeights> layers,
                           LoadTiny(kTinyQwen2MoeConfig, tensors));
  ASSERT_THAT(layers, SizeIs(1));
  EXPECT_EQ(layers[0].layer_index(), 1);
  const kernels::MoELayerWeightsView view = layers[0].view();
  EXPECT_EQ(view.weight_dtype, DType::kF32);
  EXPECT_EQ(view.router_weight[kExperts * kHidden - 1], Value(1, kExperts * kHidden - 1));
  ASSERT_EQ(view.shared_ffn_size, kSharedFfn);
  const auto* shared_in = static_cast<const float*>(view.shared_w_in);
  for (int64_t i = 0; i < kSharedFfn * kHidden; ++i) {
    EXPECT_EQ(shared_in[i], Value(40, i)) << "shared gate row element " << i;
    EXPECT_EQ(shared_in[kSharedFfn * kHidden + i], Value(41, i)) << "shared up element " << i;
  }
  const auto* shared_out = static_cast<const float*>(view.shared_w_out);
  for (int64_t i = 0; i < kHidden * kSharedFfn; ++i) EXPECT_EQ(shared_out[i], Value(42, i));
  ASSERT_NE(view.shared_gate, nullptr);
  for (int64_t c = 0; c < kHidden; ++c) EXPECT_EQ(view.shared_gate[c], Value(50, c));
}

TEST(MoEWeightsTest, ShapeMismatchNamesTheTensorAndBothShapes) {
  std::vector<TestTensor> tensors = TinyMixtralTensors(DType::kF32);
  *FindTensor(tensors, "model.layers.0.block_sparse_moe.gate.weight") =
      Tensor("model.layers.0.block_sparse_moe.gate.weight", DType::kF32, {kExperts, kHidden + 1},
             Values(1, kExperts * (kHidden + 1)));
  EXPECT_THAT(LoadTiny(kTinyMixtralConfig, tensors),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'model.layers.0.block_sparse_moe.gate.weight' has "
                                       "shape [2, 5], expected [2, 4]"),
                             HasSubstr("[num_local_experts, hidden_size]"))));
}

TEST(MoEWeightsTest, TransposedDownProjectionIsRefused) {
  std::vector<TestTensor> tensors = TinyMixtralTensors(DType::kF32);
  const std::string name = "model.layers.0.block_sparse_moe.experts.1.w2.weight";
  *FindTensor(tensors, name) = Tensor(name, DType::kF32, {kFfn, kHidden}, Values(14, 12));
  EXPECT_THAT(LoadTiny(kTinyMixtralConfig, tensors),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'" + name + "' has shape [3, 4], expected [4, 3]"),
                             HasSubstr("[hidden_size, intermediate_size]"))));
}

TEST(MoEWeightsTest, ShapeErrorInAShardNamesThatShardsFile) {
  // Expert 0 and the router in the first shard, expert 1 (with a transposed down projection)
  // in the second: the error points at the second shard's file, not the directory.
  std::vector<TestTensor> tensors = TinyMixtralTensors(DType::kF32);
  const std::string bad = "model.layers.0.block_sparse_moe.experts.1.w2.weight";
  *FindTensor(tensors, bad) = Tensor(bad, DType::kF32, {kFfn, kHidden}, Values(14, 12));
  const std::string first = "model-00001-of-00002.safetensors";
  const std::string second = "model-00002-of-00002.safetensors";
  std::vector<TestTensor> first_tensors;
  std::vector<TestTensor> second_tensors;
  nlohmann::json weight_map = nlohmann::json::object();
  for (const TestTensor& tensor : tensors) {
    const bool in_second = tensor.name.find("experts.1.") != std::string::npos;
    (in_second ? second_tensors : first_tensors).push_back(tensor);
    weight_map[tensor.name] = in_second ? second : first;
  }
  TempDir dir;
  moe::testing::WriteFile(dir.File(first), moe::testing::BuildSafetensors(first_tensors));
  moe::testing::WriteFile(dir.File(second), moe::testing::BuildSafetensors(second_tensors));
  {
    std::ofstream index(dir.File("model.safetensors.index.json"));
    index << nlohmann::json{{"weight_map", weight_map}}.dump();
  }
  MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig config,
                           ParseModelConfig(kTinyMixtralConfig, "config.json"));
  MOE_ASSERT_OK_AND_ASSIGN(const std::unique_ptr<Checkpoint> checkpoint,
                           Checkpoint::Open(dir.path()));
  EXPECT_THAT(LoadMoELayers(*checkpoint, config),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir.File(second) + ": tensor '" + bad +
                                       "' has shape [3, 4], expected [4, 3]"),
                             Not(HasSubstr(first)))));
}

TEST(MoEWeightsTest, HostileTensorNamesAreEscapedAndCutShort) {
  // With no tensor named as the config expects, the error lists what the checkpoint holds for
  // the layer; a name from the file is shown escaped and cut short.
  std::vector<TestTensor> tensors = TinyMixtralTensors(DType::kF32);
  tensors.push_back(Tensor("model.layers.0.a_experts\n" + std::string(100'000, 'x'), DType::kF32,
                           {1}, Values(60, 1)));
  constexpr char kOlmoeConfig[] = R"({
    "architectures": ["OlmoeForCausalLM"], "vocab_size": 16, "hidden_size": 4,
    "intermediate_size": 3, "num_hidden_layers": 1, "num_attention_heads": 2,
    "num_experts": 2, "num_experts_per_tok": 1
  })";
  const absl::StatusOr<std::vector<MoELayerWeights>> result = LoadTiny(kOlmoeConfig, tensors);
  EXPECT_THAT(result,
              StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr("'model.layers.0.a_experts\\n"),
                                                          HasSubstr("(100025 bytes)"))));
  EXPECT_LT(result.status().message().size(), 2000u);
}

TEST(MoEWeightsTest, ConfigFfnSizeIsCheckedAgainstTheTensors) {
  std::string config = kTinyMixtralConfig;
  config.replace(config.find("\"intermediate_size\": 3"), 22, "\"intermediate_size\": 5");
  EXPECT_THAT(LoadTiny(config.c_str(), TinyMixtralTensors(DType::kF32)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'model.layers.0.block_sparse_moe.experts.0.w1.weight' has shape "
                                 "[3, 4], expected [5, 4]")));
}

TEST(MoEWeightsTest, MissingExpertTensorIsNotFoundAndNamed) {
  std::vector<TestTensor> tensors = TinyMixtralTensors(DType::kF32);
  const std::string name = "model.layers.0.block_sparse_moe.experts.1.w3.weight";
  Erase(tensors, name);
  EXPECT_THAT(LoadTiny(kTinyMixtralConfig, tensors),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("missing 1 of the 7 tensors it needs: '" + name + "'"),
                             HasSubstr("'model.layers.0.block_sparse_moe.gate.weight'"),
                             Not(HasSubstr("Check that config.json")))));
}

TEST(MoEWeightsTest, MoreExpertsInConfigThanInCheckpointIsNotFound) {
  std::string config = kTinyMixtralConfig;
  config.replace(config.find("\"num_local_experts\": 2"), 22, "\"num_local_experts\": 3");
  EXPECT_THAT(LoadTiny(config.c_str(), TinyMixtralTensors(DType::kF32)),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("'model.layers.0.block_sparse_moe.experts.2.w1.weight'")));
}

TEST(MoEWeightsTest, ConfigOfAnotherFamilyPointsAtTheConfig) {
  constexpr char kOlmoeConfig[] = R"({
    "architectures": ["OlmoeForCausalLM"], "vocab_size": 16, "hidden_size": 4,
    "intermediate_size": 3, "num_hidden_layers": 1, "num_attention_heads": 2,
    "num_experts": 2, "num_experts_per_tok": 1
  })";
  EXPECT_THAT(
      LoadTiny(kOlmoeConfig, TinyMixtralTensors(DType::kF32)),
      StatusIs(
          absl::StatusCode::kNotFound,
          AllOf(HasSubstr("'model.layers.0.mlp.gate.weight'"), HasSubstr("missing 7 of the 7"),
                HasSubstr("Check that config.json (OlmoeForCausalLM)"),
                HasSubstr("named like 'model.layers.0.block_sparse_moe.experts.0.w1.weight'"))));
}

TEST(MoEWeightsTest, MixedExpertDTypesAreRefused) {
  std::vector<TestTensor> tensors = TinyMixtralTensors(DType::kF32);
  const std::string name = "model.layers.0.block_sparse_moe.experts.1.w1.weight";
  *FindTensor(tensors, name) = Tensor(name, DType::kBF16, {kFfn, kHidden}, Values(12, 12));
  EXPECT_THAT(LoadTiny(kTinyMixtralConfig, tensors),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'" + name + "' has dtype BF16"),
                             HasSubstr("'model.layers.0.block_sparse_moe.experts.0.w1.weight' "
                                       "has F32"))));
}

TEST(MoEWeightsTest, IntegerWeightsAreRefused) {
  std::vector<TestTensor> tensors = TinyMixtralTensors(DType::kF32);
  const std::string name = "model.layers.0.block_sparse_moe.experts.0.w2.weight";
  TestTensor* tensor = FindTensor(tensors, name);
  tensor->dtype = DType::kI8;
  tensor->bytes.resize(kHidden * kFfn);
  EXPECT_THAT(
      LoadTiny(kTinyMixtralConfig, tensors),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("'" + name + "' has dtype I8"), HasSubstr("F32, BF16 or F16"))));
}

TEST(MoEWeightsTest, SharedExpertGateShapeIsChecked) {
  MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig config,
                           ParseModelConfig(kTinyQwen2MoeConfig, "config.json"));
  std::vector<TestTensor> tensors;
  const std::vector<std::string> names = ExpectedMoETensorNames(config, 1);
  for (const std::string& name : names) {
    std::vector<int64_t> shape;
    if (name.ends_with("mlp.gate.weight")) {
      shape = {kExperts, kHidden};
    } else if (name.ends_with("shared_expert_gate.weight")) {
      shape = {kHidden};  // should be [1, hidden_size]
    } else if (name.find("shared_expert.") != std::string::npos) {
      shape = name.ends_with("down_proj.weight") ? std::vector<int64_t>{kHidden, kSharedFfn}
                                                 : std::vector<int64_t>{kSharedFfn, kHidden};
    } else {
      shape = name.ends_with("down_proj.weight") ? std::vector<int64_t>{kHidden, kFfn}
                                                 : std::vector<int64_t>{kFfn, kHidden};
    }
    int64_t count = 1;
    for (int64_t dim : shape) count *= dim;
    tensors.push_back(Tensor(name, DType::kF32, shape, Values(1, count)));
  }
  EXPECT_THAT(LoadTiny(kTinyQwen2MoeConfig, tensors),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'model.layers.1.mlp.shared_expert_gate.weight' has shape [4], "
                                 "expected [1, 4]")));
}

TEST(MoEWeightsTest, ExpectedNamesFollowEachFamilysConvention) {
  MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig mixtral,
                           ParseModelConfig(kTinyMixtralConfig, "config.json"));
  EXPECT_THAT(ExpectedMoETensorNames(mixtral, 0),
              ElementsAre("model.layers.0.block_sparse_moe.gate.weight",
                          "model.layers.0.block_sparse_moe.experts.0.w1.weight",
                          "model.layers.0.block_sparse_moe.experts.0.w3.weight",
                          "model.layers.0.block_sparse_moe.experts.0.w2.weight",
                          "model.layers.0.block_sparse_moe.experts.1.w1.weight",
                          "model.layers.0.block_sparse_moe.experts.1.w3.weight",
                          "model.layers.0.block_sparse_moe.experts.1.w2.weight"));

  MOE_ASSERT_OK_AND_ASSIGN(const ModelConfig qwen2,
                           ParseModelConfig(kTinyQwen2MoeConfig, "config.json"));
  EXPECT_THAT(
      ExpectedMoETensorNames(qwen2, 1),
      ElementsAre("model.layers.1.mlp.gate.weight", "model.layers.1.mlp.experts.0.gate_proj.weight",
                  "model.layers.1.mlp.experts.0.up_proj.weight",
                  "model.layers.1.mlp.experts.0.down_proj.weight",
                  "model.layers.1.mlp.experts.1.gate_proj.weight",
                  "model.layers.1.mlp.experts.1.up_proj.weight",
                  "model.layers.1.mlp.experts.1.down_proj.weight",
                  "model.layers.1.mlp.shared_expert.gate_proj.weight",
                  "model.layers.1.mlp.shared_expert.up_proj.weight",
                  "model.layers.1.mlp.shared_expert.down_proj.weight",
                  "model.layers.1.mlp.shared_expert_gate.weight"));
}

}  // namespace
}  // namespace moe::model
