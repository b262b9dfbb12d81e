#include "server/model/moe_mlp_weights.h"

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/moe_mlp_random.h"
#include "tests/testing/random.h"
#include "tests/testing/safetensors_writer.h"
#include "tests/testing/status_matchers.h"

namespace moe::model {
namespace {

using ::moe::testing::InMemoryCheckpoint;
using ::moe::testing::IsOk;
using ::moe::testing::RandomMoEMLPTensors;
using ::moe::testing::SmallMoEMLPConfig;
using ::moe::testing::StatusIs;
using ::moe::testing::TestTensor;
using ::testing::AllOf;
using ::testing::HasSubstr;

class MoEMLPWeightsTest : public ::testing::Test {
 protected:
  MoEMLPWeightsTest() : seed_(testing::FreshSeed()), rng_(seed_) {
    config_ = SmallMoEMLPConfig(kernels::Activation::kSwiGLU);
    tensors_ = RandomMoEMLPTensors(config_, rng_);
  }

  TestTensor* Find(const std::string& name) {
    for (TestTensor& tensor : tensors_) {
      if (tensor.name == name) return &tensor;
    }
    ADD_FAILURE() << "no tensor " << name;
    return nullptr;
  }

  absl::StatusOr<MoEMLPWeights> Load(const LoadProgressCallback& progress = {}) {
    checkpoint_ = InMemoryCheckpoint(tensors_);
    if (checkpoint_ == nullptr) return absl::InternalError("checkpoint did not build");
    return LoadMoEMLPWeights(*checkpoint_, config_, progress);
  }

  uint64_t seed_;
  std::mt19937_64 rng_;
  MoEMLPConfig config_;
  std::vector<TestTensor> tensors_;
  std::unique_ptr<Checkpoint> checkpoint_;
};

bool SameBytes(const void* data, const TestTensor& tensor) {
  return std::memcmp(data, tensor.bytes.data(), tensor.bytes.size()) == 0;
}

TEST_F(MoEMLPWeightsTest, LoadsEveryTensorWhereTheLayerLooksForIt) {
  absl::StatusOr<MoEMLPWeights> weights = Load();
  ASSERT_THAT(weights, IsOk()) << "seed " << seed_;
  ASSERT_EQ(weights->blocks.size(), 2u);
  EXPECT_EQ(weights->expert_dtype, kernels::DType::kF32);
  EXPECT_EQ(weights->input_proj.out_features, config_.hidden_size);
  EXPECT_EQ(weights->input_proj.in_features, config_.input_dim);
  EXPECT_TRUE(SameBytes(weights->input_proj.weight.data(), *Find("input_proj.weight")));
  EXPECT_TRUE(SameBytes(weights->input_proj.bias.data(), *Find("input_proj.bias")));
  EXPECT_TRUE(SameBytes(weights->output_proj.weight.data(), *Find("output_proj.weight")));
  EXPECT_TRUE(SameBytes(weights->final_norm.bias.data(), *Find("final_norm.bias")));
  for (int block = 0; block < 2; ++block) {
    const std::string prefix = "blocks." + std::to_string(block) + ".";
    const MoEMLPBlockWeights& b = weights->blocks[block];
    EXPECT_TRUE(SameBytes(b.norm.weight.data(), *Find(prefix + "norm.weight")));
    const kernels::MoELayerWeightsView view = b.view();
    EXPECT_EQ(view.hidden_size, config_.hidden_size);
    EXPECT_EQ(view.ffn_size, config_.expert_ffn_dim);
    EXPECT_EQ(view.num_experts, config_.num_experts);
    EXPECT_EQ(view.activation, kernels::Activation::kSwiGLU);
    EXPECT_EQ(view.in_rows(), 2 * config_.expert_ffn_dim);
    EXPECT_TRUE(SameBytes(view.router_weight, *Find(prefix + "moe.router.weight")));
    EXPECT_TRUE(SameBytes(view.w_in, *Find(prefix + "moe.w_in")));
    EXPECT_TRUE(SameBytes(view.b_in, *Find(prefix + "moe.b_in")));
    EXPECT_TRUE(SameBytes(view.w_out, *Find(prefix + "moe.w_out")));
    EXPECT_TRUE(SameBytes(view.b_out, *Find(prefix + "moe.b_out")));
    EXPECT_EQ(view.router_bias, nullptr);
    EXPECT_EQ(view.shared_ffn_size, 0);
  }
  uint64_t total = 0;
  for (const TestTensor& tensor : tensors_) total += tensor.bytes.size();
  EXPECT_EQ(weights->bytes(), total);
}

TEST_F(MoEMLPWeightsTest, ReportsProgressOncePerTensor) {
  std::vector<LoadProgress> reports;
  absl::StatusOr<MoEMLPWeights> weights =
      Load([&reports](const LoadProgress& progress) { reports.push_back(progress); });
  ASSERT_THAT(weights, IsOk());
  ASSERT_EQ(reports.size(), tensors_.size());
  uint64_t total = 0;
  for (const TestTensor& tensor : tensors_) total += tensor.bytes.size();
  for (size_t i = 0; i < reports.size(); ++i) {
    EXPECT_EQ(reports[i].tensors_done, static_cast<int64_t>(i + 1));
    EXPECT_EQ(reports[i].tensors_total, static_cast<int64_t>(tensors_.size()));
    EXPECT_EQ(reports[i].bytes_total, total);
    if (i > 0) {
      EXPECT_GT(reports[i].bytes_done, reports[i - 1].bytes_done);
    }
  }
  EXPECT_EQ(reports.back().bytes_done, total);
}

// Every tensor of the format, one at a time.
class MoEMLPWeightsPerTensorTest : public MoEMLPWeightsTest,
                                   public ::testing::WithParamInterface<std::string> {};

TEST_P(MoEMLPWeightsPerTensorTest, MissingTensorIsNotFoundNamingIt) {
  const std::string name = GetParam();
  std::erase_if(tensors_, [&](const TestTensor& tensor) { return tensor.name == name; });
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kNotFound,
                               AllOf(HasSubstr("missing 1 of the"), HasSubstr("'" + name + "'"))));
}

TEST_P(MoEMLPWeightsPerTensorTest, WrongShapeIsRefusedNamingTheTensor) {
  TestTensor* tensor = Find(GetParam());
  ASSERT_NE(tensor, nullptr);
  // One more row in the first dimension, with the data to match (the file itself is valid).
  const int64_t row_bytes = static_cast<int64_t>(tensor->bytes.size()) / tensor->shape.front();
  tensor->shape.front() += 1;
  tensor->bytes.resize(tensor->bytes.size() + static_cast<size_t>(row_bytes));
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("tensor '" + GetParam() + "' has shape"),
                                     HasSubstr("expected"), HasSubstr("test.safetensors"))));
}

TEST_P(MoEMLPWeightsPerTensorTest, IntegerDTypeIsRefusedNamingTheTensor) {
  TestTensor* tensor = Find(GetParam());
  ASSERT_NE(tensor, nullptr);
  tensor->dtype = kernels::DType::kI32;  // same size as F32, so the file stays valid
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("tensor '" + GetParam() + "' has dtype I32"))));
}

INSTANTIATE_TEST_SUITE_P(
    Tensors, MoEMLPWeightsPerTensorTest,
    ::testing::ValuesIn(ExpectedMoEMLPTensorNames(SmallMoEMLPConfig(kernels::Activation::kSwiGLU))),
    [](const auto& info) {
      std::string name = info.param;
      for (char& c : name) {
        if (c == '.') c = '_';
      }
      return name;
    });

TEST_F(MoEMLPWeightsTest, ListsEveryMissingTensor) {
  std::erase_if(tensors_,
                [](const TestTensor& tensor) { return tensor.name.starts_with("blocks.1."); });
  EXPECT_THAT(Load(),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("missing 7 of the 20"), HasSubstr("'blocks.1.norm.weight'"),
                             HasSubstr("'blocks.1.moe.b_out'"))));
}

TEST_F(MoEMLPWeightsTest, ExtraTensorIsRefusedNamingIt) {
  tensors_.push_back(testing::F32Tensor("blocks.2.norm.weight", {64}, std::vector<float>(64, 1)));
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("'blocks.2.norm.weight'"),
                                     HasSubstr("does not have"), HasSubstr("test.safetensors"))));
}

TEST_F(MoEMLPWeightsTest, LoadsHalfPrecisionExpertWeights) {
  for (const kernels::DType dtype : {kernels::DType::kBF16, kernels::DType::kF16}) {
    tensors_ = RandomMoEMLPTensors(config_, rng_, dtype);
    absl::StatusOr<MoEMLPWeights> weights = Load();
    ASSERT_THAT(weights, IsOk()) << kernels::DTypeName(dtype);
    EXPECT_EQ(weights->expert_dtype, dtype);
    EXPECT_EQ(weights->blocks[1].view().weight_dtype, dtype);
    EXPECT_TRUE(SameBytes(weights->blocks[1].view().w_out, *Find("blocks.1.moe.w_out")));
  }
}

TEST_F(MoEMLPWeightsTest, WidensHalfPrecisionDenseWeights) {
  TestTensor* bias = Find("output_proj.bias");
  std::vector<float> values(bias->bytes.size() / 4);
  std::memcpy(values.data(), bias->bytes.data(), bias->bytes.size());
  bias->dtype = kernels::DType::kBF16;
  bias->bytes.resize(values.size() * 2);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t bits = kernels::FloatToBF16(values[i]);
    std::memcpy(bias->bytes.data() + 2 * i, &bits, 2);
  }
  absl::StatusOr<MoEMLPWeights> weights = Load();
  ASSERT_THAT(weights, IsOk());
  for (size_t i = 0; i < values.size(); ++i) {
    uint16_t bits;
    std::memcpy(&bits, bias->bytes.data() + 2 * i, 2);
    EXPECT_EQ(weights->output_proj.bias[i], kernels::BF16ToFloat(bits));
  }
}

TEST_F(MoEMLPWeightsTest, MixedExpertDTypesAreRefused) {
  std::vector<TestTensor> half = RandomMoEMLPTensors(config_, rng_, kernels::DType::kBF16);
  for (TestTensor& tensor : half) {
    if (tensor.name == "blocks.1.moe.w_out") *Find("blocks.1.moe.w_out") = tensor;
  }
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("'blocks.1.moe.w_out' has dtype BF16"),
                                     HasSubstr("must share one dtype"))));
}

TEST_F(MoEMLPWeightsTest, IncompleteConfigIsRefused) {
  config_.top_k = config_.num_experts + 1;
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("incomplete")));
}

}  // namespace
}  // namespace moe::model
