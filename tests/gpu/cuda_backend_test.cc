// The engine's CUDA backend: creation without a device fails with a reason, a prepared layer
// runs the CUDA layer and matches the CPU reference, and layers outlive their backend object.
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/kernels/cpu_moe.h"
#include "moe/kernels/cuda_moe.h"
#include "server/engine/moe_backend.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::engine {
namespace {

using kernels::gpu_testing::DecisiveTokens;
using kernels::gpu_testing::LayerSpec;
using kernels::gpu_testing::MakeInput;
using kernels::gpu_testing::MakeLayer;
using kernels::gpu_testing::OutputTolerance;
using ::moe::testing::IsOk;
using ::moe::testing::RelativeL2;
using ::moe::testing::StatusIs;
using ::testing::HasSubstr;

TEST(CudaBackendTest, CreationWithoutADeviceSaysWhy) {
  std::string why;
  if (CudaDeviceCount(&why) > 0) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_FALSE(why.empty());
  BackendOptions options;
  options.choice = BackendChoice::kCuda;
  EXPECT_THAT(CreateCudaBackend(options),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no CUDA device")));
}

TEST(CudaBackendTest, RejectsFloat32ComputeDtype) {
  BackendOptions options;
  options.cuda_compute_dtype = kernels::DType::kF32;
  EXPECT_THAT(CreateCudaBackend(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("compute dtype")));
}

TEST(CudaBackendTest, PreparedLayerMatchesReferenceAndOutlivesBackend) {
  MOE_SKIP_WITHOUT_CUDA();
  for (kernels::DType compute : {kernels::DType::kBF16, kernels::DType::kF16}) {
    LayerSpec spec;
    spec.num_tokens = 33;
    spec.hidden = 72;
    spec.ffn = 40;
    spec.num_experts = 8;
    spec.top_k = 2;
    spec.renormalize = true;
    spec.compute = compute;
    const uint64_t seed = testing::FreshSeed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + spec.ToString());
    std::mt19937_64 rng(seed);
    auto layer = MakeLayer(spec, rng);
    const std::vector<float> x = MakeInput(*layer, rng);

    BackendOptions options;
    options.choice = BackendChoice::kCuda;
    options.cuda_compute_dtype = compute;
    auto backend = CreateCudaBackend(options);
    ASSERT_THAT(backend, IsOk());
    EXPECT_EQ((*backend)->kind(), BackendKind::kCuda);
    EXPECT_FALSE((*backend)->device_description().empty());
    auto prepared = (*backend)->PrepareLayer(layer->view, layer->router);
    ASSERT_THAT(prepared, IsOk());
    (*backend).reset();  // the layer keeps the device context alive

    const int64_t t = spec.num_tokens, d = spec.hidden, e = spec.num_experts;
    std::vector<float> out(t * d, NAN), logits(t * e, NAN), ref(t * d), ref_logits(t * e);
    std::vector<int64_t> counts(e, -1);
    kernels::MoELayerOutputs outputs;
    outputs.output = out.data();
    outputs.router_logits = logits.data();
    outputs.expert_token_counts = counts.data();
    ASSERT_THAT((*prepared)->Forward(x.data(), t, outputs), IsOk());
    kernels::MoELayerOutputs ref_outputs;
    ref_outputs.output = ref.data();
    ref_outputs.router_logits = ref_logits.data();
    ASSERT_THAT(kernels::MoEForwardReference(layer->view, layer->router, x.data(), t, ref_outputs),
                IsOk());
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    EXPECT_EQ(total, t * spec.top_k);
    const std::vector<bool> decisive = DecisiveTokens(ref_logits, *layer, t);
    std::vector<float> got, want;
    for (int64_t i = 0; i < t; ++i) {
      if (!decisive[i]) continue;
      got.insert(got.end(), out.begin() + i * d, out.begin() + (i + 1) * d);
      want.insert(want.end(), ref.begin() + i * d, ref.begin() + (i + 1) * d);
    }
    ASSERT_FALSE(got.empty()) << "no decisive token left to compare the output on";
    const double error = RelativeL2(got.data(), want.data(), got.size());
    EXPECT_LE(error, OutputTolerance(compute))
        << "relative L2 against MoEForwardReference, tolerance " << OutputTolerance(compute);
    prepared->reset();
  }
}

}  // namespace
}  // namespace moe::engine
