// The engine's backend selection and the CPU backend behind the common interface.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/kernels/cpu_moe.h"
#include "server/engine/moe_backend.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::engine {
namespace {

using ::moe::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ParseBackendChoice, AcceptsKnownNamesCaseInsensitively) {
  EXPECT_EQ(*ParseBackendChoice("auto"), BackendChoice::kAuto);
  EXPECT_EQ(*ParseBackendChoice("CPU"), BackendChoice::kCpu);
  EXPECT_EQ(*ParseBackendChoice("cuda"), BackendChoice::kCuda);
}

TEST(ParseBackendChoice, RefusesUnknownNameListingChoices) {
  EXPECT_THAT(ParseBackendChoice("tpu"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("auto, cpu or cuda")));
}

TEST(CreateBackend, CpuIsAlwaysAvailable) {
  MOE_ASSERT_OK_AND_ASSIGN(auto backend, CreateBackend({.choice = BackendChoice::kCpu}));
  EXPECT_EQ(backend->kind(), BackendKind::kCpu);
  EXPECT_THAT(backend->device_description(), HasSubstr("cpu"));
}

TEST(CreateBackend, AutoFallsBackToCpuWithoutDeviceAndCudaIsRefused) {
  std::string why;
  if (CudaDeviceCount(&why) > 0) GTEST_SKIP() << "a CUDA device is present; covered by tests/gpu";
  EXPECT_FALSE(why.empty()) << "the reason for having no device must be reported";
  MOE_ASSERT_OK_AND_ASSIGN(auto backend, CreateBackend({.choice = BackendChoice::kAuto}));
  EXPECT_EQ(backend->kind(), BackendKind::kCpu);
  EXPECT_THAT(CreateBackend({.choice = BackendChoice::kCuda}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no CUDA device")));
}

struct RandomLayer {
  int64_t d = 24, f = 40, experts = 6;
  std::vector<float> router, w_in, w_out;
  kernels::MoELayerWeightsView view;

  explicit RandomLayer(std::mt19937_64& rng) {
    router = testing::RandomFloats(rng, experts * d);
    w_in = testing::RandomFloats(rng, experts * 2 * f * d, 0.2f);
    w_out = testing::RandomFloats(rng, experts * d * f, 0.2f);
    view.hidden_size = d;
    view.ffn_size = f;
    view.num_experts = experts;
    view.router_weight = router.data();
    view.w_in = w_in.data();
    view.w_out = w_out.data();
  }
};

TEST(CpuBackend, PrepareLayerRefusesInvalidLayer) {
  std::mt19937_64 rng(testing::FreshSeed());
  RandomLayer layer(rng);
  kernels::RouterConfig router{.top_k = 7};  // more than the 6 experts
  EXPECT_THAT(CreateCpuBackend()->PrepareLayer(layer.view, router),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("top_k 7")));
}

TEST(CpuBackend, ForwardMatchesReference) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  RandomLayer layer(rng);
  const kernels::RouterConfig router{.top_k = 2, .renormalize = true};
  MOE_ASSERT_OK_AND_ASSIGN(auto prepared, CreateCpuBackend()->PrepareLayer(layer.view, router));
  for (int64_t tokens : {0, 1, 5, 33}) {
    const auto input = testing::RandomFloats(rng, tokens * layer.d);
    std::vector<float> got(tokens * layer.d, NAN), want(tokens * layer.d, NAN);
    MOE_ASSERT_OK(prepared->Forward(input.data(), tokens, {.output = got.data()}));
    MOE_ASSERT_OK(kernels::MoEForwardReference(layer.view, router, input.data(), tokens,
                                               {.output = want.data()}));
    const double error = testing::RelativeL2(got.data(), want.data(), got.size());
    EXPECT_LT(error, 1e-5) << "tokens " << tokens << ": relative L2 " << error
                           << " (tolerance 1e-5)";
  }
}

}  // namespace
}  // namespace moe::engine
