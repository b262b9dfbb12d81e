// The built-in MoEMLP model served on the CUDA backend (bf16 experts, the server's default on a
// GPU) against the same model on the CPU backend (float32), on the held-out digits.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/model_loader.h"
#include "server/engine/moe_backend.h"
#include "server/model/safetensors.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::engine {
namespace {

// bf16 activations and expert weights against float32: ~1e-2 relative is rounding; a wrong
// layout or a missing bias is O(1).
constexpr double kLogitsTolerance = 5e-2;
constexpr double kMinAccuracy = 0.95;
// Rows whose predicted digit may flip under bf16 rounding (near-tied logits).
constexpr double kMinArgmaxAgreement = 0.98;

TEST(CudaMoEMLPTest, BuiltinModelOnCudaMatchesTheCpuBackend) {
  MOE_SKIP_WITHOUT_CUDA();
  MOE_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<model::SafetensorsFile> held_out,
      model::SafetensorsFile::Open(MOE_SOURCE_DIR "/models/builtin/heldout.safetensors"));
  const model::TensorInfo* features = held_out->Find("features");
  const model::TensorInfo* labels = held_out->Find("labels");
  ASSERT_TRUE(features != nullptr && labels != nullptr);
  ASSERT_EQ(features->dtype, kernels::DType::kF32);
  const int64_t rows = features->shape[0];
  std::vector<float> x(features->num_elements);
  std::memcpy(x.data(), features->data.data(), x.size() * sizeof(float));
  std::vector<int64_t> y(rows);
  for (int64_t r = 0; r < rows; ++r) {
    y[r] = labels->dtype == kernels::DType::kI64
               ? reinterpret_cast<const int64_t*>(labels->data.data())[r]
               : reinterpret_cast<const int32_t*>(labels->data.data())[r];
  }

  std::unique_ptr<MoEBackend> cpu = CreateCpuBackend();
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<MoEBackend> cuda, CreateCudaBackend({}));
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ServableModel> on_cpu, LoadBuiltinModel(*cpu));
  MOE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ServableModel> on_cuda, LoadBuiltinModel(*cuda));
  EXPECT_EQ(on_cuda->description().backend, "cuda");

  const int64_t classes = on_cpu->description().output_width;
  std::vector<float> cpu_logits(rows * classes);
  std::vector<float> cuda_logits(rows * classes, std::nanf(""));
  MOE_ASSERT_OK(on_cpu->Run(x.data(), rows, {.output = cpu_logits.data()}));
  MOE_ASSERT_OK(on_cuda->Run(x.data(), rows, {.output = cuda_logits.data()}));

  const double error =
      testing::RelativeL2(cuda_logits.data(), cpu_logits.data(), cpu_logits.size());
  EXPECT_LT(error, kLogitsTolerance)
      << "relative L2 of CUDA logits vs CPU, tolerance " << kLogitsTolerance;
  int64_t correct = 0, agree = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = &cuda_logits[r * classes];
    const float* p = &cpu_logits[r * classes];
    const int64_t cuda_class = std::max_element(c, c + classes) - c;
    correct += cuda_class == y[r];
    agree += cuda_class == std::max_element(p, p + classes) - p;
  }
  EXPECT_GE(static_cast<double>(correct) / rows, kMinAccuracy) << correct << "/" << rows;
  EXPECT_GE(static_cast<double>(agree) / rows, kMinArgmaxAgreement) << agree << "/" << rows;
}

}  // namespace
}  // namespace moe::engine
