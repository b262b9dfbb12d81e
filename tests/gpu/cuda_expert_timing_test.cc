// The CUDA layer's profiling pass (MoELayerOutputs::expert_seconds through ForwardHost): the
// same output, routing and counts bit for bit as an untimed per-expert-GEMM pass; a positive
// time for every expert that computed rows and 0 for the others; the experts' times inside the
// call. Tokens 1, 3 and 64, F32 and BF16 host weights, with and without a shared expert; a
// selection bias keeps some experts cold. Skips without a device.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "moe/kernels/cuda_moe.h"
#include "moe/kernels/moe_layer.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::kernels {
namespace {

using gpu_testing::CudaTest;
using gpu_testing::HostLayer;
using gpu_testing::LayerSpec;
using gpu_testing::MakeInput;
using gpu_testing::MakeLayer;
using ::moe::testing::IsOk;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr double kSecondsPoison = -1.0;
constexpr int64_t kCountPoison = -1;
constexpr int32_t kIdPoison = -7777;
// Softmax scores lie in [0, 1]: a selection bias of -10 keeps these experts out of every top-k.
constexpr int64_t kColdExperts[] = {1, 4, 6};

bool IsCold(int64_t expert) {
  for (int64_t cold : kColdExperts) {
    if (cold == expert) return true;
  }
  return false;
}

// One pass's host results, poisoned until written, and the wall time of the call.
struct Pass {
  explicit Pass(const LayerSpec& spec)
      : output(spec.num_tokens * spec.hidden, kNaN),
        weights(spec.num_tokens * spec.top_k, kNaN),
        ids(spec.num_tokens * spec.top_k, kIdPoison),
        counts(spec.num_experts, kCountPoison),
        seconds(spec.num_experts, kSecondsPoison) {}

  std::vector<float> output, weights;
  std::vector<int32_t> ids;
  std::vector<int64_t> counts;
  std::vector<double> seconds;
  double wall_seconds = 0.0;
};

absl::Status RunPass(CudaMoELayer& layer, const std::vector<float>& x, int64_t tokens, bool timed,
                     CudaExpertGemm expert_gemm, Pass* pass) {
  MoELayerOutputs outputs;
  outputs.output = pass->output.data();
  outputs.topk_ids = pass->ids.data();
  outputs.topk_weights = pass->weights.data();
  outputs.expert_token_counts = pass->counts.data();
  if (timed) outputs.expert_seconds = pass->seconds.data();
  CudaForwardOptions options;
  options.expert_gemm = expert_gemm;
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = layer.ForwardHost(x.data(), tokens, outputs, options);
  pass->wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return status;
}

std::vector<LayerSpec> Specs() {
  std::vector<LayerSpec> specs;
  for (DType host_weights : {DType::kF32, DType::kBF16}) {
    for (int64_t shared_ffn : {int64_t{0}, int64_t{48}}) {
      for (int64_t tokens : {1, 3, 64}) {
        LayerSpec s;
        s.num_tokens = tokens;
        s.hidden = 72;
        s.ffn = 40;
        s.num_experts = 8;
        s.top_k = 2;
        s.shared_ffn = shared_ffn;
        s.shared_gate = shared_ffn > 0;
        s.host_weights = host_weights;
        s.router_bias = true;
        specs.push_back(s);
      }
    }
  }
  return specs;
}

std::unique_ptr<HostLayer> MakeLayerWithColdExperts(const LayerSpec& spec, std::mt19937_64& rng) {
  auto layer = MakeLayer(spec, rng);
  for (int64_t e = 0; e < spec.num_experts; ++e) {
    layer->router_bias[e] = IsCold(e) ? -10.0f : 0.0f;
  }
  return layer;
}

using CudaExpertTimingTest = CudaTest;

TEST_F(CudaExpertTimingTest, TimedPassIsBitIdenticalToUntimedPerExpertPass) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const LayerSpec& spec : Specs()) {
    SCOPED_TRACE(spec.ToString());
    auto layer = MakeLayerWithColdExperts(spec, rng);
    const std::vector<float> x = MakeInput(*layer, rng);
    CudaLayerOptions options;
    options.compute_dtype = spec.compute;
    auto device_layer = CudaMoELayer::Upload(*context_, layer->view, layer->router, options);
    ASSERT_THAT(device_layer, IsOk());
    Pass untimed(spec), timed(spec);
    ASSERT_THAT(
        RunPass(**device_layer, x, spec.num_tokens, false, CudaExpertGemm::kPerExpert, &untimed),
        IsOk());
    // Asks for the grouped GEMM: a profiling pass runs per expert regardless.
    ASSERT_THAT(RunPass(**device_layer, x, spec.num_tokens, true, CudaExpertGemm::kGrouped, &timed),
                IsOk());
    EXPECT_TRUE((*device_layer)->last_expert_gemm() == CudaExpertGemm::kPerExpert)
        << "a profiling pass must run the per-expert GEMMs";
    for (float v : timed.output) ASSERT_TRUE(std::isfinite(v)) << "output left poisoned";
    EXPECT_EQ(std::memcmp(timed.output.data(), untimed.output.data(),
                          timed.output.size() * sizeof(float)),
              0)
        << "output differs from the untimed per-expert pass";
    EXPECT_EQ(std::memcmp(timed.weights.data(), untimed.weights.data(),
                          timed.weights.size() * sizeof(float)),
              0)
        << "top-k weights differ";
    EXPECT_EQ(timed.ids, untimed.ids);
    EXPECT_EQ(timed.counts, untimed.counts);
    EXPECT_EQ(untimed.seconds, std::vector<double>(spec.num_experts, kSecondsPoison))
        << "an untimed pass wrote expert times";
  }
}

TEST_F(CudaExpertTimingTest, ExpertsWithRowsGetTimeWithinTheCallOthersGetZero) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const LayerSpec& spec : Specs()) {
    SCOPED_TRACE(spec.ToString());
    auto layer = MakeLayerWithColdExperts(spec, rng);
    const std::vector<float> x = MakeInput(*layer, rng);
    CudaLayerOptions options;
    options.compute_dtype = spec.compute;
    auto device_layer = CudaMoELayer::Upload(*context_, layer->view, layer->router, options);
    ASSERT_THAT(device_layer, IsOk());
    // A warm-up pass first: the first one creates the events and cuBLAS's kernels load.
    Pass warmup(spec), pass(spec);
    ASSERT_THAT(
        RunPass(**device_layer, x, spec.num_tokens, true, CudaExpertGemm::kGrouped, &warmup),
        IsOk());
    ASSERT_THAT(RunPass(**device_layer, x, spec.num_tokens, true, CudaExpertGemm::kGrouped, &pass),
                IsOk());
    double sum = 0.0;
    int64_t routed = 0;
    for (int64_t e = 0; e < spec.num_experts; ++e) {
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
    EXPECT_EQ(routed, spec.num_tokens * spec.top_k);
    EXPECT_LE(sum, pass.wall_seconds)
        << "the experts' times add up to more than the call around them took";
  }
}

TEST_F(CudaExpertTimingTest, ZeroTokensGiveZeroTimes) {
  LayerSpec spec = Specs().front();
  spec.num_tokens = 0;
  std::mt19937_64 rng(testing::FreshSeed());
  auto layer = MakeLayerWithColdExperts(spec, rng);
  auto device_layer = CudaMoELayer::Upload(*context_, layer->view, layer->router);
  ASSERT_THAT(device_layer, IsOk());
  std::vector<double> seconds(spec.num_experts, kSecondsPoison);
  float unused = 0.0f;
  MoELayerOutputs outputs;
  outputs.output = &unused;  // a valid pointer for zero rows
  outputs.expert_seconds = seconds.data();
  ASSERT_THAT((*device_layer)->ForwardHost(nullptr, 0, outputs), IsOk());
  EXPECT_EQ(seconds, std::vector<double>(spec.num_experts, 0.0));
}

}  // namespace
}  // namespace moe::kernels
