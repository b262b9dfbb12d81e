// The built-in "digits" model as embedded in the binary, against the held-out split and the
// logits PyTorch computed for it when tools/train_builtin_model.py trained it.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/model_loader.h"
#include "server/engine/moe_backend.h"
#include "server/engine/moe_mlp_model.h"
#include "server/engine/moe_mlp_reference.h"
#include "server/model/builtin_model.h"
#include "server/model/moe_mlp_config.h"
#include "server/model/safetensors.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::engine {
namespace {

// Engine (float32, CPU) against PyTorch (float32, its own kernels): the same network computed
// in a different order. Rounding differences are ~1e-6 relative; a layout or semantic mistake
// is ~1e-1.
constexpr double kLogitsTolerance = 1e-4;
// What the trained model must reach on the held-out split (it was trained to ~0.98).
constexpr double kMinAccuracy = 0.95;

const std::string kBuiltinDir = MOE_SOURCE_DIR "/models/builtin";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

struct HeldOut {
  int64_t rows = 0;
  int64_t features = 0;
  int64_t classes = 0;
  std::vector<float> x;       // [rows, features]
  std::vector<int64_t> y;     // [rows]
  std::vector<float> logits;  // [rows, classes] from PyTorch
};

void ReadHeldOut(HeldOut* held_out) {
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<model::SafetensorsFile> file,
                           model::SafetensorsFile::Open(kBuiltinDir + "/heldout.safetensors"));
  const model::TensorInfo* features = file->Find("features");
  const model::TensorInfo* labels = file->Find("labels");
  const model::TensorInfo* logits = file->Find("logits");
  ASSERT_TRUE(features != nullptr && labels != nullptr && logits != nullptr)
      << "heldout.safetensors must hold features, labels and logits";
  ASSERT_EQ(features->dtype, kernels::DType::kF32);
  ASSERT_EQ(logits->dtype, kernels::DType::kF32);
  ASSERT_EQ(features->shape.size(), 2u);
  ASSERT_EQ(logits->shape.size(), 2u);
  held_out->rows = features->shape[0];
  held_out->features = features->shape[1];
  held_out->classes = logits->shape[1];
  ASSERT_GT(held_out->rows, 100) << "the held-out split is 20% of 1797 samples";
  ASSERT_EQ(labels->shape, std::vector<int64_t>{held_out->rows});
  ASSERT_EQ(logits->shape[0], held_out->rows);
  held_out->x.resize(features->num_elements);
  std::memcpy(held_out->x.data(), features->data.data(), features->data.size());
  held_out->logits.resize(logits->num_elements);
  std::memcpy(held_out->logits.data(), logits->data.data(), logits->data.size());
  held_out->y.resize(held_out->rows);
  for (int64_t i = 0; i < held_out->rows; ++i) {
    if (labels->dtype == kernels::DType::kI64) {
      std::memcpy(&held_out->y[i], labels->data.data() + 8 * i, 8);
    } else {
      ASSERT_EQ(labels->dtype, kernels::DType::kI32);
      int32_t label;
      std::memcpy(&label, labels->data.data() + 4 * i, 4);
      held_out->y[i] = label;
    }
  }
}

double Accuracy(const std::vector<float>& logits, const std::vector<int64_t>& labels,
                int64_t classes) {
  int64_t correct = 0;
  for (size_t row = 0; row < labels.size(); ++row) {
    const float* begin = logits.data() + row * classes;
    correct += std::max_element(begin, begin + classes) - begin == labels[row] ? 1 : 0;
  }
  return static_cast<double>(correct) / static_cast<double>(labels.size());
}

class BuiltinModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = CreateCpuBackend();
    MOE_ASSERT_OK_AND_ASSIGN(model_, LoadBuiltinModel(*backend_));
    ASSERT_NO_FATAL_FAILURE(ReadHeldOut(&held_out_));
  }

  std::vector<float> Run(ServableModel& model) {
    std::vector<float> logits(held_out_.rows * held_out_.classes,
                              std::numeric_limits<float>::quiet_NaN());
    const absl::Status status = model.Run(held_out_.x.data(), held_out_.rows, {logits.data()});
    EXPECT_TRUE(status.ok()) << status;
    return logits;
  }

  std::unique_ptr<MoEBackend> backend_;
  std::unique_ptr<ServableModel> model_;
  HeldOut held_out_;
};

TEST_F(BuiltinModelTest, EmbeddedFilesAreTheRepositoryCopies) {
  // A stale embed (the model retrained, the object not rebuilt) would make the server serve
  // another model than the repository holds.
  EXPECT_EQ(std::string(model::BuiltinModelConfigJson()), ReadFile(kBuiltinDir + "/config.json"));
  const std::string weights = ReadFile(kBuiltinDir + "/model.safetensors");
  const std::span<const std::byte> embedded = model::BuiltinModelWeights();
  ASSERT_EQ(embedded.size(), weights.size());
  EXPECT_EQ(std::memcmp(embedded.data(), weights.data(), weights.size()), 0);
}

TEST_F(BuiltinModelTest, DescribesTheDigitsClassifier) {
  // The known architecture of models/builtin (tools/train_builtin_model.py), written out here
  // rather than parsed from its config.json with the parser the model itself uses.
  const ModelDescription& d = model_->description();
  EXPECT_EQ(d.name, "digits");
  EXPECT_EQ(d.architecture, "MoEMLP");
  EXPECT_TRUE(d.tensor_servable);
  EXPECT_EQ(d.input_name, "input");
  EXPECT_EQ(d.output_name, "logits");
  EXPECT_EQ(d.input_width, 64);
  EXPECT_EQ(d.output_width, 10);
  EXPECT_EQ(d.input_width, held_out_.features);
  EXPECT_EQ(d.output_width, held_out_.classes);
  ASSERT_EQ(d.output_labels.size(), 10u);
  for (int digit = 0; digit < 10; ++digit) EXPECT_EQ(d.output_labels[digit], std::to_string(digit));
  EXPECT_EQ(d.hidden_size, 64);
  EXPECT_EQ(d.num_experts, 8);
  EXPECT_EQ(d.top_k, 2);
  EXPECT_EQ(d.num_moe_layers, 2);
  EXPECT_EQ(d.num_layers, 2);
  EXPECT_EQ(d.activation, "swiglu");
  // Every tensor of the file is float32 and held once.
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<model::SafetensorsFile> file,
                           model::SafetensorsFile::Open(kBuiltinDir + "/model.safetensors"));
  uint64_t bytes = 0;
  for (const model::TensorInfo& tensor : file->tensors()) bytes += tensor.data.size();
  EXPECT_EQ(d.weight_bytes, bytes);
}

TEST_F(BuiltinModelTest, MatchesPyTorchLogitsOnTheHeldOutSplit) {
  const std::vector<float> logits = Run(*model_);
  const double error =
      testing::RelativeL2(logits.data(), held_out_.logits.data(), held_out_.logits.size());
  std::cout << "relative L2 between engine and PyTorch logits: " << error << "\n";
  EXPECT_LT(error, kLogitsTolerance) << "relative L2 between engine and PyTorch logits over "
                                     << held_out_.rows << " rows, tolerance " << kLogitsTolerance;
  // Every row classified as PyTorch classified it.
  for (int64_t row = 0; row < held_out_.rows; ++row) {
    const float* ours = logits.data() + row * held_out_.classes;
    const float* theirs = held_out_.logits.data() + row * held_out_.classes;
    EXPECT_EQ(std::max_element(ours, ours + held_out_.classes) - ours,
              std::max_element(theirs, theirs + held_out_.classes) - theirs)
        << "row " << row;
  }
}

TEST_F(BuiltinModelTest, ClassifiesHeldOutDigits) {
  const double accuracy = Accuracy(Run(*model_), held_out_.y, held_out_.classes);
  std::cout << "built-in model held-out accuracy: " << accuracy << " over " << held_out_.rows
            << " rows\n";
  EXPECT_GE(accuracy, kMinAccuracy);
}

TEST_F(BuiltinModelTest, MatchesTheFloat64Reference) {
  auto* moe_mlp = dynamic_cast<MoEMLPModel*>(model_.get());
  ASSERT_NE(moe_mlp, nullptr);
  std::vector<float> reference(held_out_.rows * held_out_.classes);
  MOE_ASSERT_OK(MoEMLPReferenceForward(moe_mlp->config(), moe_mlp->weights(), held_out_.x.data(),
                                       held_out_.rows, {reference.data()}));
  const std::vector<float> logits = Run(*model_);
  EXPECT_LT(testing::RelativeL2(logits.data(), reference.data(), reference.size()),
            kLogitsTolerance)
      << "tolerance " << kLogitsTolerance;
}

TEST_F(BuiltinModelTest, LoadingTheDirectoryGivesIdenticalOutputs) {
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ServableModel> from_dir,
                           LoadModelFromDirectory("digits", kBuiltinDir, *backend_));
  EXPECT_TRUE(from_dir->description().tensor_servable);
  EXPECT_EQ(from_dir->description().weight_bytes, model_->description().weight_bytes);
  EXPECT_EQ(Run(*from_dir), Run(*model_)) << "same weights, same backend: bit-identical";
}

}  // namespace
}  // namespace moe::engine
