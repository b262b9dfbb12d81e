// The CPU fast path's parallel decomposition: experts large enough to be cut into several
// weight-row tasks per phase (with remainders), half-precision weights widened inside the
// tasks, the shared expert as a task job, bit-identical repeated runs under dynamic task
// scheduling, and non-finite inputs through the whole layer.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "moe/kernels/cpu_moe.h"
#include "moe/kernels/dtype.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::kernels {
namespace {

constexpr double kTolerance = 1e-5;

// Weights stored as `dtype`, values drawn so that the layer's output is O(1).
struct Layer {
  MoELayerWeightsView view;
  std::vector<float> router, b_in, b_out, shared_gate;
  std::vector<std::byte> w_in, w_out, shared_w_in, shared_w_out;

  static std::vector<std::byte> Store(const std::vector<float>& values, DType dtype) {
    std::vector<std::byte> bytes(values.size() * DTypeSize(dtype));
    for (size_t i = 0; i < values.size(); ++i) {
      if (dtype == DType::kF32) {
        std::memcpy(bytes.data() + 4 * i, &values[i], 4);
      } else {
        const uint16_t bits =
            dtype == DType::kBF16 ? FloatToBF16(values[i]) : FloatToHalf(values[i]);
        std::memcpy(bytes.data() + 2 * i, &bits, 2);
      }
    }
    return bytes;
  }

  Layer(std::mt19937_64& rng, int64_t d, int64_t f, int64_t experts, int64_t shared_f, DType dtype,
        bool biases) {
    const float in_scale = 1.0f / std::sqrt(static_cast<float>(d));
    const float out_scale = 1.0f / std::sqrt(static_cast<float>(f));
    router = testing::RandomFloats(rng, experts * d, in_scale);
    w_in = Store(testing::RandomFloats(rng, experts * 2 * f * d, in_scale), dtype);
    w_out = Store(testing::RandomFloats(rng, experts * d * f, out_scale), dtype);
    view.hidden_size = d;
    view.ffn_size = f;
    view.num_experts = experts;
    view.weight_dtype = dtype;
    view.router_weight = router.data();
    view.w_in = w_in.data();
    view.w_out = w_out.data();
    if (biases) {
      b_in = testing::RandomFloats(rng, experts * 2 * f, 0.1f);
      b_out = testing::RandomFloats(rng, experts * d, 0.1f);
      view.b_in = b_in.data();
      view.b_out = b_out.data();
    }
    if (shared_f > 0) {
      shared_w_in = Store(testing::RandomFloats(rng, 2 * shared_f * d, in_scale), dtype);
      shared_w_out = Store(
          testing::RandomFloats(rng, d * shared_f, 1.0f / std::sqrt(static_cast<float>(shared_f))),
          dtype);
      shared_gate = testing::RandomFloats(rng, d, in_scale);
      view.shared_ffn_size = shared_f;
      view.shared_w_in = shared_w_in.data();
      view.shared_w_out = shared_w_out.data();
      view.shared_gate = shared_gate.data();
    }
  }
};

struct Case {
  int64_t d, f, experts, shared_f;
  int top_k;
  DType dtype;
  bool biases;
};

// d = 1024 cuts gate|up into 64-row tasks while an expert has fewer than 32 rows and the down
// projection into several output chunks; f = 600 and 1100 leave remainders; T = 80 and 160
// push experts past 32 rows, where tasks grow to 512 weight rows.
TEST(MoEForwardParallelTest, MultiTaskExpertsMatchReference) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Case cases[] = {
      {1024, 600, 4, 0, 2, DType::kF32, false},
      {1024, 600, 4, 384, 2, DType::kBF16, true},
      {512, 1100, 3, 0, 1, DType::kF16, false},
  };
  CpuMoEWorkspace workspace;
  for (const Case& c : cases) {
    Layer layer(rng, c.d, c.f, c.experts, c.shared_f, c.dtype, c.biases);
    const RouterConfig router{.top_k = c.top_k, .renormalize = true};
    for (int64_t tokens : {1, 5, 80, 160}) {
      SCOPED_TRACE("d=" + std::to_string(c.d) + " f=" + std::to_string(c.f) +
                   " dtype=" + std::string(DTypeName(c.dtype)) + " T=" + std::to_string(tokens));
      const auto input = testing::RandomFloats(rng, tokens * c.d);
      std::vector<float> got(tokens * c.d, NAN), want(tokens * c.d, NAN);
      std::vector<int64_t> counts(c.experts, -1);
      MOE_ASSERT_OK(MoEForwardCpu(layer.view, router, input.data(), tokens,
                                  {.output = got.data(), .expert_token_counts = counts.data()},
                                  &workspace));
      MOE_ASSERT_OK(
          MoEForwardReference(layer.view, router, input.data(), tokens, {.output = want.data()}));
      const double error = testing::RelativeL2(got.data(), want.data(), got.size());
      EXPECT_LT(error, kTolerance)
          << "relative L2 " << error << " (tolerance " << kTolerance << ")";
      int64_t routed = 0;
      for (int64_t count : counts) routed += count;
      EXPECT_EQ(routed, tokens * c.top_k);
    }
  }
}

TEST(MoEForwardParallelTest, TwentyRunsAreBitIdentical) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Layer layer(rng, 512, 700, 8, 256, DType::kBF16, true);
  const RouterConfig router{.top_k = 2};
  const int64_t tokens = 96;
  const auto input = testing::RandomFloats(rng, tokens * 512);
  CpuMoEWorkspace workspace;
  std::vector<float> first(tokens * 512, NAN);
  MOE_ASSERT_OK(MoEForwardCpu(layer.view, router, input.data(), tokens, {.output = first.data()},
                              &workspace));
  for (int run = 1; run < 20; ++run) {
    std::vector<float> again(tokens * 512, NAN);
    MOE_ASSERT_OK(MoEForwardCpu(layer.view, router, input.data(), tokens, {.output = again.data()},
                                &workspace));
    ASSERT_EQ(std::memcmp(first.data(), again.data(), first.size() * sizeof(float)), 0)
        << "run " << run << " differs from run 0";
  }
}

// NaN and infinite activations reach the router: ids stay distinct and in range, and rows that
// were finite keep finite outputs.
TEST(MoEForwardParallelTest, NonFiniteRowsRouteToDistinctExpertsInRange) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t d = 64, experts = 16, tokens = 6;
  const int k = 4;
  Layer layer(rng, d, 96, experts, 0, DType::kF32, false);
  auto input = testing::RandomFloats(rng, tokens * d);
  for (int64_t j = 0; j < d; ++j) input[0 * d + j] = NAN;  // all NaN
  input[1 * d + 3] = NAN;                                  // one NaN
  input[2 * d + 5] = INFINITY;
  input[3 * d + 7] = -INFINITY;
  input[4 * d + 1] = INFINITY;
  input[4 * d + 2] = -INFINITY;
  CpuMoEWorkspace workspace;
  for (ScoringFunc scoring : {ScoringFunc::kSoftmax, ScoringFunc::kSigmoid}) {
    const RouterConfig router{.top_k = k, .scoring = scoring, .renormalize = true};
    std::vector<float> output(tokens * d, 0.0f), weights(tokens * k);
    std::vector<int32_t> ids(tokens * k, -1);
    MOE_ASSERT_OK(MoEForwardCpu(
        layer.view, router, input.data(), tokens,
        {.output = output.data(), .topk_ids = ids.data(), .topk_weights = weights.data()},
        &workspace));
    for (int64_t t = 0; t < tokens; ++t) {
      std::set<int32_t> distinct;
      for (int s = 0; s < k; ++s) {
        const int32_t id = ids[t * k + s];
        EXPECT_GE(id, 0) << "token " << t;
        EXPECT_LT(id, experts) << "token " << t;
        distinct.insert(id);
      }
      EXPECT_EQ(distinct.size(), static_cast<size_t>(k)) << "token " << t << " repeats an expert";
    }
    for (int64_t j = 0; j < d; ++j) {
      EXPECT_TRUE(std::isfinite(output[5 * d + j])) << "the finite row 5 must stay finite";
    }
  }
}

}  // namespace
}  // namespace moe::kernels
