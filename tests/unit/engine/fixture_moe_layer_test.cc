// Runs every MoE layer of every reference checkpoint in the fixtures folder through the
// project's loader and the engine's CPU backend, and compares against outputs an independent
// float64 implementation computed: router logits and MoE output within relative L2 1e-4,
// top-k ids exactly.
#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/moe_backend.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/random.h"
#include "tests/testing/reference_fixture.h"
#include "tests/testing/status_matchers.h"

namespace moe {
namespace {

constexpr double kFp32Tolerance = 1e-4;

class FixtureMoELayerTest : public ::testing::TestWithParam<std::string> {};

TEST(FixtureFolders, AreFound) {
  EXPECT_FALSE(testing::FixtureFolders().empty())
      << "no checkpoint folders under " << testing::FixturesRoot();
}

TEST_P(FixtureMoELayerTest, EveryMoELayerMatchesReference) {
  const std::string dir = GetParam();
  testing::FixtureModel fixture;
  ASSERT_NO_FATAL_FAILURE(testing::LoadFixtureModel(dir, &fixture));
  // Every layer the reference has an MoE block for must have been loaded, and no other.
  std::set<int64_t> loaded;
  for (const auto& layer : fixture.layers) loaded.insert(layer.layer_index());
  EXPECT_EQ(loaded, fixture.reference_layers)
      << "MoE layers loaded vs layers in reference.safetensors";

  auto backend = engine::CreateCpuBackend();
  const kernels::RouterConfig router = fixture.config.router();
  const int k = router.top_k;
  const int64_t d = fixture.config.hidden_size;
  const int64_t num_experts = fixture.config.num_experts;

  int compared_layers = 0;
  for (const auto& layer : fixture.layers) {
    MOE_ASSERT_OK_AND_ASSIGN(auto prepared, backend->PrepareLayer(layer.view(), router));
    for (const std::string& seq : fixture.sequences) {
      SCOPED_TRACE(dir + " " + seq + " layer " + std::to_string(layer.layer_index()));
      testing::LayerReference want;
      ASSERT_NO_FATAL_FAILURE(
          testing::ReadLayerReference(fixture, seq, layer.layer_index(), &want));
      const int64_t tokens = want.tokens;

      // Poisoned so that an unwritten element cannot pass for a computed one.
      std::vector<float> output(tokens * d, NAN), logits(tokens * num_experts, NAN),
          weights(tokens * k, NAN);
      std::vector<int32_t> ids(tokens * k, -7);
      std::vector<int64_t> counts(num_experts, -1);
      int64_t dropped = -1;
      kernels::MoELayerOutputs outputs{output.data(),  logits.data(), ids.data(),
                                       weights.data(), counts.data(), &dropped};
      MOE_ASSERT_OK(prepared->Forward(want.input.data(), tokens, outputs));

      const double logits_error =
          testing::RelativeL2(logits.data(), want.router_logits.data(), logits.size());
      EXPECT_LT(logits_error, kFp32Tolerance) << "router logits relative L2 " << logits_error
                                              << " (tolerance " << kFp32Tolerance << ")";
      EXPECT_EQ(ids, want.topk_ids) << "top-k expert ids differ from the reference";
      const double weights_error =
          testing::RelativeL2(weights.data(), want.topk_weights.data(), weights.size());
      EXPECT_LT(weights_error, kFp32Tolerance) << "top-k weights relative L2 " << weights_error
                                               << " (tolerance " << kFp32Tolerance << ")";
      const double output_error =
          testing::RelativeL2(output.data(), want.output.data(), output.size());
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
  EXPECT_EQ(compared_layers, static_cast<int>(fixture.layers.size() * fixture.sequences.size()));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureMoELayerTest,
                         ::testing::ValuesIn(testing::FixtureFolders()), testing::FixtureTestName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(FixtureMoELayerTest);

}  // namespace
}  // namespace moe
