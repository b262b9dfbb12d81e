// The server computes what the engine computes: a request's logits and routing equal, bit for
// bit, those of the same rows run as one batch by the engine loaded in this process on the CPU
// backend. And the built-in model classifies the held-out digits as its training report says.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/safetensors.h"
#include "tests/integration/in_process_model.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/random.h"

namespace moe::integration {
namespace {

// Sends `rows` rows alone (so they form one batch) and checks logits and routing against the
// in-process engine on the same rows.
void ExpectServerEqualsEngine(Stub& stub, InProcessModel& engine, const std::string& model,
                              int64_t rows, bool raw, std::mt19937_64& rng, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << model << ", " << rows << " rows, " << (raw ? "raw" : "typed")
                                    << ", seed " << seed);
  const int64_t width = engine.description().input_width;
  const auto values = UniformRows(rng, rows, width);
  inference::ModelInferResponse response;
  ASSERT_THAT(
      Infer(stub, MakeInferRequest(model, values, rows, width, {.raw = raw, .routing = true}),
            &response),
      GrpcOk());
  auto expected = engine.Run(values, rows);
  ASSERT_TRUE(expected.ok()) << expected.status();
  auto logits = OutputFloats(response, "logits");
  auto ids = OutputInt32s(response, "routing_expert_ids");
  auto weights = OutputFloats(response, "routing_weights");
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(*ids, expected->topk_ids);
  EXPECT_EQ(*weights, expected->topk_weights);
  EXPECT_EQ(*logits, expected->output)
      << "max |difference| " << MaxAbsDifference(*logits, expected->output);
  EXPECT_EQ(Int64Parameter(response, "batch_rows"), rows) << "the request was not alone";
}

class BuiltinModelEquivalenceTest : public SharedServerTest<BuiltinModelEquivalenceTest> {
 public:
  static std::vector<std::string> ServerArgs() { return {}; }

 protected:
  void SetUp() override {
    SharedServerTest::SetUp();
    auto engine = InProcessModel::Builtin();
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }
  std::unique_ptr<InProcessModel> engine_;
};

TEST_F(BuiltinModelEquivalenceTest, LogitsAndRoutingEqualTheEngineForAnyRowCount) {
  const uint64_t seed = testing::FreshSeed();
  std::mt19937_64 rng(seed);
  for (int64_t rows : {1, 2, 3, 7, 32, 100, 256}) {
    ExpectServerEqualsEngine(stub(), *engine_, kDigits, rows, /*raw=*/false, rng, seed);
    ExpectServerEqualsEngine(stub(), *engine_, kDigits, rows, /*raw=*/true, rng, seed);
  }
}

TEST_F(BuiltinModelEquivalenceTest, MetadataMatchesTheEngineDescription) {
  grpc::ClientContext context;
  inference::ModelMetadataRequest request;
  request.set_name(kDigits);
  inference::ModelMetadataResponse response;
  ASSERT_THAT(stub().ModelMetadata(&context, request, &response), GrpcOk());
  const engine::ModelDescription& d = engine_->description();
  ASSERT_EQ(response.inputs_size(), 1);
  EXPECT_EQ(response.inputs(0).name(), d.input_name);
  EXPECT_THAT(response.inputs(0).shape(), ::testing::ElementsAre(-1, d.input_width));
  ASSERT_GE(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).name(), d.output_name);
  EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(-1, d.output_width));
}

// models/builtin/heldout.safetensors: features [N, 64] F32, labels [N] I64, and the training
// script's own (PyTorch) logits [N, 10] F32.
struct HeldOut {
  int64_t samples = 0;
  std::vector<float> features;
  std::vector<int64_t> labels;
  std::vector<float> logits;
};

absl::StatusOr<HeldOut> ReadHeldOut() {
  auto file = model::SafetensorsFile::Open(SourceDir() + "/models/builtin/heldout.safetensors");
  if (!file.ok()) return file.status();
  const model::TensorInfo* features = (*file)->Find("features");
  const model::TensorInfo* labels = (*file)->Find("labels");
  const model::TensorInfo* logits = (*file)->Find("logits");
  if (features == nullptr || labels == nullptr || logits == nullptr ||
      features->dtype != kernels::DType::kF32 || labels->dtype != kernels::DType::kI64 ||
      logits->dtype != kernels::DType::kF32 || features->shape.size() != 2 ||
      features->shape[1] != kDigitsWidth || labels->num_elements != features->shape[0] ||
      logits->num_elements != features->shape[0] * kDigitsOutputs) {
    return absl::InvalidArgumentError("heldout.safetensors does not hold what the test expects");
  }
  HeldOut held_out;
  held_out.samples = features->shape[0];
  held_out.features.resize(features->num_elements);
  held_out.labels.resize(labels->num_elements);
  held_out.logits.resize(logits->num_elements);
  std::memcpy(held_out.features.data(), features->data.data(), features->data.size());
  std::memcpy(held_out.labels.data(), labels->data.data(), labels->data.size());
  std::memcpy(held_out.logits.data(), logits->data.data(), logits->data.size());
  return held_out;
}

TEST_F(BuiltinModelEquivalenceTest, ClassifiesTheHeldOutDigitsAsTrained) {
  auto held_out = ReadHeldOut();
  ASSERT_TRUE(held_out.ok()) << held_out.status();
  std::vector<float> logits;
  for (int64_t start = 0; start < held_out->samples; start += 200) {
    const int64_t rows = std::min<int64_t>(200, held_out->samples - start);
    const std::vector<float> values(held_out->features.begin() + start * kDigitsWidth,
                                    held_out->features.begin() + (start + rows) * kDigitsWidth);
    inference::ModelInferResponse response;
    ASSERT_THAT(Infer(stub(), MakeInferRequest(kDigits, values, rows, kDigitsWidth), &response),
                GrpcOk());
    auto part = OutputFloats(response, "logits");
    ASSERT_TRUE(part.ok()) << part.status();
    logits.insert(logits.end(), part->begin(), part->end());
  }
  int64_t correct = 0, same_class = 0, close_rows = 0;
  for (int64_t i = 0; i < held_out->samples; ++i) {
    const float* row = logits.data() + i * kDigitsOutputs;
    const float* trained = held_out->logits.data() + i * kDigitsOutputs;
    const int64_t predicted = std::max_element(row, row + kDigitsOutputs) - row;
    correct += predicted == held_out->labels[i];
    same_class += predicted == std::max_element(trained, trained + kDigitsOutputs) - trained;
    double worst = 0.0;
    for (int j = 0; j < kDigitsOutputs; ++j)
      worst = std::max(worst, std::fabs(static_cast<double>(row[j]) - trained[j]));
    close_rows += worst <= 1e-3;
  }
  const double accuracy = static_cast<double>(correct) / held_out->samples;
  // training_report.json: heldout_accuracy 0.9833.
  EXPECT_GE(accuracy, 0.97) << correct << " of " << held_out->samples;
  EXPECT_GE(same_class, held_out->samples - 2) << "predictions differing from PyTorch's";
  // Float32 in another summation order; a row whose top-2 experts are within rounding of a
  // tie may route differently.
  EXPECT_GE(close_rows, held_out->samples * 95 / 100)
      << "rows whose logits are within 1e-3 of PyTorch's";
}

class SyntheticModelEquivalenceTest : public SharedServerTest<SyntheticModelEquivalenceTest> {
 public:
  static std::vector<std::string> ServerArgs() { return SyntheticModelFlag(); }
};

TEST_F(SyntheticModelEquivalenceTest, LogitsAndRoutingEqualTheEngineForAnyRowCount) {
  auto engine = InProcessModel::FromDirectory(kSynthetic, SyntheticModelDir());
  ASSERT_TRUE(engine.ok()) << engine.status();
  const uint64_t seed = testing::FreshSeed();
  std::mt19937_64 rng(seed);
  for (int64_t rows : {1, 4, 33, 128}) {
    ExpectServerEqualsEngine(stub(), **engine, kSynthetic, rows, /*raw=*/rows % 2 == 0, rng, seed);
  }
}

}  // namespace
}  // namespace moe::integration
