// How an answer is shown: every value or the top N per row (labels from the model), the
// routing per row and MoE layer, as a table or JSON; an answer missing what is needed is an
// error, not a crash.
#include "client/cli/infer_output.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"

namespace moe::client::cli {
namespace {

using ::moe::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

// Two rows of four logits, and routing over two layers of top-2.
InferResult Answer() {
  InferResult result;
  result.model_name = "digits";
  result.id = "req-1";
  result.outputs.push_back({.name = "logits",
                            .datatype = "FP32",
                            .shape = {2, 4},
                            .fp32 = {0.5f, 3.0f, -1.0f, 2.0f, 9.0f, 1.0f, 1.0f, 8.5f}});
  result.outputs.push_back({.name = "routing_expert_ids",
                            .datatype = "INT32",
                            .shape = {2, 2, 2},
                            .int32 = {3, 5, 1, 0, 7, 2, 6, 4}});
  result.outputs.push_back({.name = "routing_weights",
                            .datatype = "FP32",
                            .shape = {2, 2, 2},
                            .fp32 = {0.75f, 0.25f, 0.5f, 0.5f, 0.875f, 0.125f, 0.625f, 0.375f}});
  result.queue_us = 12;
  result.compute_us = 34;
  result.batch_rows = 2;
  return result;
}

TEST(ClientCliInferOutput, TableOfEveryValue) {
  const auto text = FormatInferResult(Answer(), {.output_name = "logits"});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("digits: logits [2, 4], id req-1\n"));
  EXPECT_THAT(*text, HasSubstr("row 0: 0.5 3 -1 2\n"));
  EXPECT_THAT(*text, HasSubstr("row 1: 9 1 1 8.5\n"));
  EXPECT_THAT(*text, HasSubstr("server: queue 12 us, compute 34 us, batch rows 2"));
  EXPECT_THAT(*text, Not(HasSubstr("layer")));
}

TEST(ClientCliInferOutput, TopClassesWithLabels) {
  const auto text =
      FormatInferResult(Answer(), {.top = 2, .labels = {"zero", "one", "two", "three"}});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("row 0: one (3), three (2)\n"));
  EXPECT_THAT(*text, HasSubstr("row 1: zero (9), three (8.5)\n"));
}

TEST(ClientCliInferOutput, TopClassesWithoutLabelsAreIndicesAndTiesGoToTheLowerIndex) {
  const auto json = FormatInferResult(Answer(), {.format = "json", .top = 3});
  ASSERT_TRUE(json.ok()) << json.status();
  const nlohmann::json j = nlohmann::json::parse(*json);
  const nlohmann::json& top = j["rows"][1]["top"];
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0]["index"], 0);
  EXPECT_EQ(top[1]["index"], 3);
  EXPECT_EQ(top[2]["index"], 1);  // 1 and 2 tie at 1.0
  EXPECT_EQ(top[2]["label"], "1");
  EXPECT_DOUBLE_EQ(top[1]["value"].get<double>(), 8.5);
}

TEST(ClientCliInferOutput, RoutingPerRowAndLayer) {
  const auto text = FormatInferResult(Answer(), {.show_routing = true});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("layer 0: expert 3 (0.750), expert 5 (0.250)\n"));
  EXPECT_THAT(*text, HasSubstr("layer 1: expert 1 (0.500), expert 0 (0.500)\n"));
  EXPECT_THAT(*text, HasSubstr("layer 0: expert 7 (0.875), expert 2 (0.125)\n"));
  EXPECT_THAT(*text, HasSubstr("layer 1: expert 6 (0.625), expert 4 (0.375)\n"));

  const auto json = FormatInferResult(Answer(), {.format = "json", .show_routing = true});
  ASSERT_TRUE(json.ok()) << json.status();
  const nlohmann::json j = nlohmann::json::parse(*json);
  const nlohmann::json& routing = j["rows"][1]["routing"];
  ASSERT_EQ(routing.size(), 2u);
  EXPECT_EQ(routing[1]["layer"], 1);
  EXPECT_EQ(routing[1]["experts"], (nlohmann::json{6, 4}));
  EXPECT_EQ(routing[1]["weights"], (nlohmann::json{0.625, 0.375}));
}

TEST(ClientCliInferOutput, JsonHasEveryRowAndTheServersTiming) {
  InferDisplay display{.format = "json"};
  display.seed = 99;
  const auto json = FormatInferResult(Answer(), display);
  ASSERT_TRUE(json.ok()) << json.status();
  const nlohmann::json j = nlohmann::json::parse(*json);
  EXPECT_EQ(j["model"], "digits");
  EXPECT_EQ(j["id"], "req-1");
  EXPECT_EQ(j["output"], "logits");
  EXPECT_EQ(j["shape"], (nlohmann::json{2, 4}));
  ASSERT_EQ(j["rows"].size(), 2u);
  EXPECT_EQ(j["rows"][0]["values"], (nlohmann::json{0.5, 3.0, -1.0, 2.0}));
  EXPECT_EQ(j["queue_us"], 12);
  EXPECT_EQ(j["compute_us"], 34);
  EXPECT_EQ(j["batch_rows"], 2);
  EXPECT_EQ(j["seed"], 99);
}

TEST(ClientCliInferOutput, MissingOrInconsistentOutputsAreErrors) {
  InferResult no_routing = Answer();
  no_routing.outputs.resize(1);
  EXPECT_THAT(FormatInferResult(no_routing, {.show_routing = true}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("routing")));
  EXPECT_THAT(FormatInferResult(Answer(), {.output_name = "probabilities"}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("probabilities")));
  InferResult short_values = Answer();
  short_values.outputs[0].fp32.pop_back();
  EXPECT_THAT(FormatInferResult(short_values, {}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("7 values")));
  InferResult wrong_rows = Answer();
  wrong_rows.outputs[1].shape = {1, 2, 4};
  wrong_rows.outputs[2].shape = {1, 2, 4};
  EXPECT_THAT(FormatInferResult(wrong_rows, {.show_routing = true}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("expected [2, layers")));
}

}  // namespace
}  // namespace moe::client::cli
