// The CPU fast path's profiling pass (MoELayerOutputs::expert_seconds): it computes the same
// output, routing and counts bit for bit as a normal pass; every expert that computed rows gets
// a positive time, every other expert 0; and the experts' times fit inside the call. Shapes:
// tokens 1, 3 and 64 (serial and threaded expert work), F32 and BF16 weights, with and without
// a shared expert; a selection bias keeps some experts cold so that they must get 0.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "moe/kernels/cpu_moe.h"
#include "moe/kernels/dtype.h"
#include "moe/kernels/moe_layer.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::kernels {
namespace {

constexpr float kNaN = NAN;
constexpr double kSecondsPoison = -1.0;
constexpr int64_t kCountPoison = -1;
constexpr int32_t kIdPoison = -7777;

// d = 512, f = 320: gate|up of an expert is cut into three weight-row tasks and its down
// projection into two, so each timed expert spans several tasks and both barriers.
constexpr int64_t kHidden = 512;
constexpr int64_t kFfn = 320;
constexpr int64_t kExperts = 8;
constexpr int kTopK = 2;
// Softmax scores lie in [0, 1]: a selection bias of -10 keeps these experts out of every top-k.
constexpr int64_t kColdExperts[] = {1, 4, 6};

bool IsCold(int64_t expert) {
  for (int64_t cold : kColdExperts) {
    if (cold == expert) return true;
  }
  return false;
}

std::vector<std::byte> Store(const std::vector<float>& values, DType dtype) {
  std::vector<std::byte> bytes(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(bytes.data() + 4 * i, &values[i], 4);
    } else {
      const uint16_t bits = FloatToBF16(values[i]);
      std::memcpy(bytes.data() + 2 * i, &bits, 2);
    }
  }
  return bytes;
}

// Random SwiGLU layer with weights stored as `dtype` and the cold experts biased out.
struct Layer {
  MoELayerWeightsView view;
  std::vector<float> router, router_bias, shared_gate;
  std::vector<std::byte> w_in, w_out, shared_w_in, shared_w_out;

  Layer(std::mt19937_64& rng, DType dtype, int64_t shared_f) {
    const float in_scale = 1.0f / std::sqrt(static_cast<float>(kHidden));
    router = testing::RandomFloats(rng, kExperts * kHidden, in_scale);
    router_bias.assign(kExperts, 0.0f);
    for (int64_t cold : kColdExperts) router_bias[cold] = -10.0f;
    w_in = Store(testing::RandomFloats(rng, kExperts * 2 * kFfn * kHidden, in_scale), dtype);
    w_out = Store(testing::RandomFloats(rng, kExperts * kHidden * kFfn,
                                        1.0f / std::sqrt(static_cast<float>(kFfn))),
                  dtype);
    view.hidden_size = kHidden;
    view.ffn_size = kFfn;
    view.num_experts = kExperts;
    view.weight_dtype = dtype;
    view.router_weight = router.data();
    view.router_bias = router_bias.data();
    view.w_in = w_in.data();
    view.w_out = w_out.data();
    if (shared_f > 0) {
      shared_w_in = Store(testing::RandomFloats(rng, 2 * shared_f * kHidden, in_scale), dtype);
      shared_w_out = Store(testing::RandomFloats(rng, kHidden * shared_f,
                                                 1.0f / std::sqrt(static_cast<float>(shared_f))),
                           dtype);
      shared_gate = testing::RandomFloats(rng, kHidden, in_scale);
      view.shared_ffn_size = shared_f;
      view.shared_w_in = shared_w_in.data();
      view.shared_w_out = shared_w_out.data();
      view.shared_gate = shared_gate.data();
    }
  }
};

// One pass's results, poisoned until written, and the wall time of the call.
struct Pass {
  explicit Pass(int64_t tokens)
      : output(tokens * kHidden, kNaN),
        weights(tokens * kTopK, kNaN),
        ids(tokens * kTopK, kIdPoison),
        counts(kExperts, kCountPoison),
        seconds(kExperts, kSecondsPoison) {}

  std::vector<float> output, weights;
  std::vector<int32_t> ids;
  std::vector<int64_t> counts;
  std::vector<double> seconds;
  double wall_seconds = 0.0;
};

absl::Status RunPass(const Layer& layer, const std::vector<float>& input, int64_t tokens,
                     bool timed, CpuMoEWorkspace* workspace, Pass* pass) {
  MoELayerOutputs outputs;
  outputs.output = pass->output.data();
  outputs.topk_ids = pass->ids.data();
  outputs.topk_weights = pass->weights.data();
  outputs.expert_token_counts = pass->counts.data();
  if (timed) outputs.expert_seconds = pass->seconds.data();
  const RouterConfig router{.top_k = kTopK, .renormalize = true};
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = MoEForwardCpu(layer.view, router, input.data(), tokens, outputs, workspace);
  pass->wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return status;
}

struct Case {
  int64_t tokens;
  DType dtype;
  int64_t shared_f;

  std::string ToString() const {
    return "T=" + std::to_string(tokens) + " dtype=" + std::string(DTypeName(dtype)) +
           " shared_f=" + std::to_string(shared_f);
  }
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (int64_t shared_f : {int64_t{0}, int64_t{256}}) {
      for (int64_t tokens : {1, 3, 64}) cases.push_back({tokens, dtype, shared_f});
    }
  }
  return cases;
}

TEST(MoEForwardExpertTimingTest, TimedPassIsBitIdenticalToUntimedPass) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  CpuMoEWorkspace workspace;  // shared by every pass: timed and untimed passes reuse it
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.ToString());
    const Layer layer(rng, c.dtype, c.shared_f);
    const std::vector<float> input = testing::RandomFloats(rng, c.tokens * kHidden);
    Pass before(c.tokens), timed(c.tokens), after(c.tokens);
    MOE_ASSERT_OK(RunPass(layer, input, c.tokens, false, &workspace, &before));
    MOE_ASSERT_OK(RunPass(layer, input, c.tokens, true, &workspace, &timed));
    MOE_ASSERT_OK(RunPass(layer, input, c.tokens, false, &workspace, &after));
    for (const Pass* untimed : {&before, &after}) {
      const char* which = untimed == &before ? "the untimed pass before" : "the untimed pass after";
      EXPECT_EQ(std::memcmp(timed.output.data(), untimed->output.data(),
                            timed.output.size() * sizeof(float)),
                0)
          << "output differs from " << which;
      EXPECT_EQ(std::memcmp(timed.weights.data(), untimed->weights.data(),
                            timed.weights.size() * sizeof(float)),
                0)
          << "top-k weights differ from " << which;
      EXPECT_EQ(timed.ids, untimed->ids) << "top-k ids differ from " << which;
      EXPECT_EQ(timed.counts, untimed->counts) << "counts differ from " << which;
    }
    for (float v : timed.output) ASSERT_TRUE(std::isfinite(v)) << "output left poisoned";
    // The untimed passes leave expert_seconds alone (it was not passed).
    EXPECT_EQ(before.seconds, std::vector<double>(kExperts, kSecondsPoison));
  }
}

TEST(MoEForwardExpertTimingTest, ExpertsWithRowsGetTimeWithinTheCallOthersGetZero) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  CpuMoEWorkspace workspace;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.ToString());
    const Layer layer(rng, c.dtype, c.shared_f);
    const std::vector<float> input = testing::RandomFloats(rng, c.tokens * kHidden);
    Pass pass(c.tokens);
    MOE_ASSERT_OK(RunPass(layer, input, c.tokens, true, &workspace, &pass));
    double sum = 0.0;
    int64_t routed = 0;
    for (int64_t e = 0; e < kExperts; ++e) {
      routed += pass.counts[e];
      if (IsCold(e)) {
        EXPECT_EQ(pass.counts[e], 0) << "cold expert " << e << " was selected";
      }
      if (pass.counts[e] > 0) {
        EXPECT_GT(pass.seconds[e], 0.0)
            << "expert " << e << " computed " << pass.counts[e] << " rows but has no time";
      } else {
        EXPECT_EQ(pass.seconds[e], 0.0) << "expert " << e << " computed no row";
      }
      sum += pass.seconds[e];
    }
    EXPECT_EQ(routed, c.tokens * kTopK);
    EXPECT_LE(sum, pass.wall_seconds)
        << "the experts' times add up to more than the call around them took";
  }
}

TEST(MoEForwardExpertTimingTest, ZeroTokensGiveZeroTimes) {
  std::mt19937_64 rng(testing::FreshSeed());
  const Layer layer(rng, DType::kF32, 0);
  const std::vector<float> input(1, 0.0f);
  CpuMoEWorkspace workspace;
  Pass pass(0);
  MOE_ASSERT_OK(RunPass(layer, input, 0, true, &workspace, &pass));
  EXPECT_EQ(pass.seconds, std::vector<double>(kExperts, 0.0));
  EXPECT_EQ(pass.counts, std::vector<int64_t>(kExperts, 0));
}

}  // namespace
}  // namespace moe::kernels
