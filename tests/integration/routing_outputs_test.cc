// The routing outputs ("routing" request parameter, or asked for by name): shapes
// [rows, moe_layers, top_k], expert ids distinct and within [0, experts), combine weights
// highest first, summing to one where the model renormalises (the built-in one does) and to at
// most one otherwise.
#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/random.h"

namespace moe::integration {
namespace {

using inference::ModelInferResponse;
using ::testing::ElementsAre;
using ::testing::SizeIs;

class RoutingOutputsTest : public SharedServerTest<RoutingOutputsTest> {
 public:
  static std::vector<std::string> ServerArgs() { return DigitsAndSyntheticFlags(); }
};

struct ModelShape {
  const char* name;
  int64_t width, outputs, moe_layers;
  int top_k;
  int64_t experts;
  bool renormalised;  // top-k weights rescaled to sum to one
};
constexpr ModelShape kDigitsShape{
    kDigits, kDigitsWidth, kDigitsOutputs, kDigitsMoELayers, kDigitsTopK, kDigitsExperts, true};
// moe-make-synthetic may or may not renormalise; the sum is checked to be at most one.
constexpr ModelShape kSyntheticShape{kSynthetic,
                                     kSyntheticWidth,
                                     kSyntheticOutputs,
                                     kSyntheticMoELayers,
                                     kSyntheticTopK,
                                     kSyntheticExperts,
                                     false};

void ExpectValidRouting(const ModelInferResponse& response, const ModelShape& model, int64_t rows) {
  const auto* ids_tensor = FindOutput(response, "routing_expert_ids");
  const auto* weights_tensor = FindOutput(response, "routing_weights");
  ASSERT_NE(ids_tensor, nullptr) << response.ShortDebugString();
  ASSERT_NE(weights_tensor, nullptr) << response.ShortDebugString();
  EXPECT_EQ(ids_tensor->datatype(), "INT32");
  EXPECT_EQ(weights_tensor->datatype(), "FP32");
  EXPECT_THAT(ids_tensor->shape(), ElementsAre(rows, model.moe_layers, model.top_k));
  EXPECT_THAT(weights_tensor->shape(), ElementsAre(rows, model.moe_layers, model.top_k));
  auto ids = OutputInt32s(response, "routing_expert_ids");
  auto weights = OutputFloats(response, "routing_weights");
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_TRUE(weights.ok()) << weights.status();
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t layer = 0; layer < model.moe_layers; ++layer) {
      const int64_t base = (row * model.moe_layers + layer) * model.top_k;
      std::set<int32_t> distinct;
      float sum = 0.0f;
      for (int k = 0; k < model.top_k; ++k) {
        const int32_t id = (*ids)[base + k];
        const float weight = (*weights)[base + k];
        EXPECT_GE(id, 0) << "row " << row << " layer " << layer;
        EXPECT_LT(id, model.experts) << "row " << row << " layer " << layer;
        distinct.insert(id);
        EXPECT_TRUE(std::isfinite(weight) && weight > 0.0f && weight <= 1.0f)
            << "weight " << weight << " at row " << row << " layer " << layer;
        if (k > 0) {
          EXPECT_GE((*weights)[base + k - 1], weight)
              << "weights not highest first at row " << row << " layer " << layer;
        }
        sum += weight;
      }
      EXPECT_EQ(distinct.size(), static_cast<size_t>(model.top_k))
          << "repeated expert at row " << row << " layer " << layer;
      if (model.renormalised) {
        EXPECT_NEAR(sum, 1.0f, 1e-5f) << "row " << row << " layer " << layer;
      } else {
        EXPECT_LE(sum, 1.0f + 1e-5f) << "row " << row << " layer " << layer;
      }
    }
  }
}

TEST_F(RoutingOutputsTest, RoutingParameterAddsIdsAndWeightsForEachModel) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  for (const ModelShape& model : {kDigitsShape, kSyntheticShape}) {
    SCOPED_TRACE(model.name);
    const int64_t rows = 6;
    ModelInferResponse response;
    ASSERT_THAT(Infer(stub(),
                      MakeInferRequest(model.name, UniformRows(rng, rows, model.width), rows,
                                       model.width, {.routing = true}),
                      &response),
                GrpcOk());
    ASSERT_THAT(response.outputs(), SizeIs(3));
    EXPECT_EQ(response.outputs(0).name(), "logits");
    EXPECT_THAT(response.outputs(0).shape(), ElementsAre(rows, model.outputs));
    ExpectValidRouting(response, model, rows);
  }
}

TEST_F(RoutingOutputsTest, WithoutTheParameterOnlyLogitsComeBack) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  ModelInferResponse response;
  ASSERT_THAT(
      Infer(stub(), MakeInferRequest(kDigits, UniformRows(rng, 2, kDigitsWidth), 2, kDigitsWidth),
            &response),
      GrpcOk());
  ASSERT_THAT(response.outputs(), SizeIs(1));
  EXPECT_EQ(response.outputs(0).name(), "logits");
}

TEST_F(RoutingOutputsTest, RoutingOutputsCanBeAskedForByName) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  const auto values = UniformRows(rng, 3, kDigitsWidth);
  ModelInferResponse ids_only;
  ASSERT_THAT(
      Infer(stub(),
            MakeInferRequest(kDigits, values, 3, kDigitsWidth, {.outputs = {"routing_expert_ids"}}),
            &ids_only),
      GrpcOk());
  ASSERT_THAT(ids_only.outputs(), SizeIs(1));
  EXPECT_EQ(ids_only.outputs(0).name(), "routing_expert_ids");

  ModelInferResponse all;
  ASSERT_THAT(
      Infer(stub(),
            MakeInferRequest(kDigits, values, 3, kDigitsWidth,
                             {.outputs = {"routing_weights", "routing_expert_ids", "logits"}}),
            &all),
      GrpcOk());
  ASSERT_THAT(all.outputs(), SizeIs(3));
  ExpectValidRouting(all, kDigitsShape, 3);
  // The same rows route the same way whichever outputs are asked for.
  auto ids_alone = OutputInt32s(ids_only, "routing_expert_ids");
  ASSERT_TRUE(ids_alone.ok()) << ids_alone.status();
  auto ids_with_others = OutputInt32s(all, "routing_expert_ids");
  ASSERT_TRUE(ids_with_others.ok()) << ids_with_others.status();
  EXPECT_EQ(*ids_alone, *ids_with_others);
}

TEST_F(RoutingOutputsTest, IdenticalRowsRouteIdentically) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  const auto row = UniformRows(rng, 1, kSyntheticWidth);
  std::vector<float> values;
  for (int i = 0; i < 4; ++i) values.insert(values.end(), row.begin(), row.end());
  ModelInferResponse response;
  ASSERT_THAT(
      Infer(stub(), MakeInferRequest(kSynthetic, values, 4, kSyntheticWidth, {.routing = true}),
            &response),
      GrpcOk());
  auto ids = OutputInt32s(response, "routing_expert_ids");
  ASSERT_TRUE(ids.ok()) << ids.status();
  const int64_t per_row = kSyntheticMoELayers * kSyntheticTopK;
  for (int r = 1; r < 4; ++r) {
    EXPECT_TRUE(std::equal(ids->begin(), ids->begin() + per_row, ids->begin() + r * per_row))
        << "row " << r;
  }
}

}  // namespace
}  // namespace moe::integration
