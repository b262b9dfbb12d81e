// Shared pieces of the GPU tests: skipping without a device, random layers whose values are
// exactly representable in the compute dtype (so the CPU reference sees the numbers the device
// sees), and routing margins that tell where two float orders may legitimately disagree.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "moe/kernels/cuda_moe.h"
#include "moe/kernels/dtype.h"
#include "moe/kernels/moe_layer.h"
#include "tests/testing/random.h"

namespace moe::kernels::gpu_testing {

// Whether a missing device fails the test instead of skipping it: MOE_REQUIRE_CUDA set to
// anything but "" or "0". check.sh sets it where nvidia-smi lists a GPU, so that a runtime that
// cannot use the device (a driver older than the CUDA runtime, say) fails the run rather than
// skipping every test.
inline bool CudaRequired() {
  const char* value = std::getenv("MOE_REQUIRE_CUDA");
  return value != nullptr && value[0] != '\0' && std::string(value) != "0";
}

// Skips the current test, saying why, when no CUDA device is usable (fails under
// MOE_REQUIRE_CUDA).
#define MOE_SKIP_WITHOUT_CUDA()                                                           \
  do {                                                                                    \
    std::string moe_why_no_cuda;                                                          \
    if (::moe::kernels::CudaDeviceCount(&moe_why_no_cuda) == 0) {                         \
      if (::moe::kernels::gpu_testing::CudaRequired()) {                                  \
        FAIL() << "no CUDA device although MOE_REQUIRE_CUDA is set: " << moe_why_no_cuda; \
      }                                                                                   \
      GTEST_SKIP() << "no CUDA device: " << moe_why_no_cuda;                              \
    }                                                                                     \
  } while (0)

// A fixture whose SetUp skips without a device and otherwise creates a context on device 0.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MOE_SKIP_WITHOUT_CUDA();
    auto context = CudaContext::Create(0);
    ASSERT_TRUE(context.ok()) << context.status();
    context_ = *std::move(context);
  }
  std::unique_ptr<CudaContext> context_;
};

// Rounds a float to the nearest value of `dtype` (kF32: unchanged).
inline float RoundTo(DType dtype, float value) {
  switch (dtype) {
    case DType::kBF16:
      return BF16ToFloat(FloatToBF16(value));
    case DType::kF16:
      return HalfToFloat(FloatToHalf(value));
    default:
      return value;
  }
}

inline void RoundAll(DType dtype, std::vector<float>& values) {
  for (float& v : values) v = RoundTo(dtype, v);
}

// Relative L2 tolerance of the layer output for a compute dtype (bf16 keeps 8 mantissa bits,
// f16 11; the expert intermediates are stored in it between the GEMMs).
inline double OutputTolerance(DType compute) { return compute == DType::kF16 ? 5e-3 : 2e-2; }

struct LayerSpec {
  int64_t num_tokens = 17;
  int64_t hidden = 40;      // d
  int64_t ffn = 24;         // f
  int64_t num_experts = 8;  // E
  int top_k = 2;
  int64_t shared_ffn = 0;  // fs
  Activation activation = Activation::kSwiGLU;
  ScoringFunc scoring = ScoringFunc::kSoftmax;
  bool renormalize = false;
  float scaling = 1.0f;
  double capacity_factor = 0.0;
  DType compute = DType::kBF16;      // on the device
  DType host_weights = DType::kF32;  // how the host hands the expert weights over
  bool router_bias = false;
  bool expert_bias = false;
  bool shared_gate = false;

  std::string ToString() const {
    return "T=" + std::to_string(num_tokens) + " d=" + std::to_string(hidden) +
           " f=" + std::to_string(ffn) + " E=" + std::to_string(num_experts) +
           " k=" + std::to_string(top_k) + " fs=" + std::to_string(shared_ffn) +
           " act=" + ActivationName(activation) +
           " scoring=" + (scoring == ScoringFunc::kSigmoid ? "sigmoid" : "softmax") +
           " renorm=" + std::to_string(renormalize) + " scale=" + std::to_string(scaling) +
           " capacity=" + std::to_string(capacity_factor) +
           " compute=" + std::string(DTypeName(compute)) +
           " host_weights=" + std::string(DTypeName(host_weights)) +
           " router_bias=" + std::to_string(router_bias) +
           " expert_bias=" + std::to_string(expert_bias) +
           " shared_gate=" + std::to_string(shared_gate);
  }
};

// gtest prints test parameters with this.
inline void PrintTo(const LayerSpec& spec, std::ostream* os) { *os << spec.ToString(); }

// A layer's host weights, owned, with the view over them.
struct HostLayer {
  LayerSpec spec;
  RouterConfig router;
  MoELayerWeightsView view;
  std::vector<float> router_weight, router_bias, w_in, w_out, b_in, b_out, shared_w_in,
      shared_w_out, shared_gate;
  std::vector<uint16_t> w_in16, w_out16, shared_w_in16, shared_w_out16;  // when host dtype 16-bit
};

inline std::vector<uint16_t> Narrow(DType dtype, const std::vector<float>& values) {
  std::vector<uint16_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    out[i] = dtype == DType::kBF16 ? FloatToBF16(values[i]) : FloatToHalf(values[i]);
  }
  return out;
}

// Random weights, every expert-path value representable in both spec.compute and
// spec.host_weights, so conversion on upload is exact.
inline std::unique_ptr<HostLayer> MakeLayer(const LayerSpec& spec, std::mt19937_64& rng) {
  auto layer = std::make_unique<HostLayer>();
  HostLayer& l = *layer;
  l.spec = spec;
  l.router.top_k = spec.top_k;
  l.router.scoring = spec.scoring;
  l.router.renormalize = spec.renormalize;
  l.router.routed_scaling_factor = spec.scaling;
  l.router.capacity_factor = spec.capacity_factor;
  const int64_t d = spec.hidden, f = spec.ffn, e = spec.num_experts;
  const bool gated = IsGated(spec.activation);
  const int64_t in_rows = gated ? 2 * f : f;
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(d));
  const float out_scale = 1.0f / std::sqrt(static_cast<float>(f));
  auto round_both = [&](std::vector<float>& v) {
    RoundAll(spec.compute, v);
    RoundAll(spec.host_weights, v);
    RoundAll(spec.compute, v);
  };
  // The router sees float32 weights and compute-dtype inputs; a larger scale spreads the
  // logits so that most tokens have clear top-k margins.
  l.router_weight = testing::RandomFloats(rng, e * d, 2.0f * in_scale);
  l.w_in = testing::RandomFloats(rng, e * in_rows * d, in_scale);
  l.w_out = testing::RandomFloats(rng, e * d * f, out_scale);
  round_both(l.w_in);
  round_both(l.w_out);
  if (spec.router_bias) l.router_bias = testing::RandomFloats(rng, e, 0.05f);
  if (spec.expert_bias) {
    l.b_in = testing::RandomFloats(rng, e * in_rows, 0.1f);
    l.b_out = testing::RandomFloats(rng, e * d, 0.1f);
  }
  const int64_t fs = spec.shared_ffn;
  const int64_t shared_in_rows = gated ? 2 * fs : fs;
  if (fs > 0) {
    l.shared_w_in = testing::RandomFloats(rng, shared_in_rows * d, in_scale);
    l.shared_w_out = testing::RandomFloats(rng, d * fs, 1.0f / std::sqrt(static_cast<float>(fs)));
    round_both(l.shared_w_in);
    round_both(l.shared_w_out);
    if (spec.shared_gate) l.shared_gate = testing::RandomFloats(rng, d, in_scale);
  }

  MoELayerWeightsView& v = l.view;
  v.hidden_size = d;
  v.ffn_size = f;
  v.num_experts = e;
  v.activation = spec.activation;
  v.weight_dtype = spec.host_weights;
  v.router_weight = l.router_weight.data();
  v.router_bias = l.router_bias.empty() ? nullptr : l.router_bias.data();
  v.b_in = l.b_in.empty() ? nullptr : l.b_in.data();
  v.b_out = l.b_out.empty() ? nullptr : l.b_out.data();
  v.shared_ffn_size = fs;
  v.shared_gate = l.shared_gate.empty() ? nullptr : l.shared_gate.data();
  if (spec.host_weights == DType::kF32) {
    v.w_in = l.w_in.data();
    v.w_out = l.w_out.data();
    v.shared_w_in = fs > 0 ? l.shared_w_in.data() : nullptr;
    v.shared_w_out = fs > 0 ? l.shared_w_out.data() : nullptr;
  } else {
    l.w_in16 = Narrow(spec.host_weights, l.w_in);
    l.w_out16 = Narrow(spec.host_weights, l.w_out);
    v.w_in = l.w_in16.data();
    v.w_out = l.w_out16.data();
    if (fs > 0) {
      l.shared_w_in16 = Narrow(spec.host_weights, l.shared_w_in);
      l.shared_w_out16 = Narrow(spec.host_weights, l.shared_w_out);
      v.shared_w_in = l.shared_w_in16.data();
      v.shared_w_out = l.shared_w_out16.data();
    }
  }
  return layer;
}

// For each token, whether its top-k choice is decisive: among the k+1 best selection keys
// (computed in double from `logits`), consecutive keys differ by more than `margin`. Where they
// do not, two correct float evaluations may order the experts differently.
inline std::vector<bool> DecisiveTokens(const std::vector<float>& logits, const HostLayer& layer,
                                        int64_t num_tokens, double margin = 1e-4) {
  const int64_t e = layer.spec.num_experts;
  const int k = layer.spec.top_k;
  std::vector<bool> decisive(static_cast<size_t>(num_tokens), true);
  std::vector<double> keys(static_cast<size_t>(e));
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* row = logits.data() + t * e;
    double max_logit = -INFINITY;
    for (int64_t i = 0; i < e; ++i) max_logit = std::max<double>(max_logit, row[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < e; ++i) sum += std::exp(row[i] - max_logit);
    bool finite = true;
    for (int64_t i = 0; i < e; ++i) {
      if (!std::isfinite(row[i])) finite = false;
      const double score = layer.spec.scoring == ScoringFunc::kSoftmax
                               ? std::exp(row[i] - max_logit) / sum
                               : 1.0 / (1.0 + std::exp(-static_cast<double>(row[i])));
      keys[i] = score + (layer.router_bias.empty() ? 0.0 : layer.router_bias[i]);
    }
    if (!finite) {
      decisive[t] = false;
      continue;
    }
    std::vector<double> sorted = keys;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    const int last = static_cast<int>(std::min<int64_t>(k, e - 1));
    for (int j = 0; j < last; ++j) {
      if (sorted[j] - sorted[j + 1] <= margin) decisive[t] = false;
    }
  }
  return decisive;
}

// Router logits [T, E] of `x` in double precision, rounded to float.
inline std::vector<float> HostLogits(const HostLayer& layer, const std::vector<float>& x,
                                     int64_t num_tokens) {
  const int64_t d = layer.spec.hidden, e_count = layer.spec.num_experts;
  std::vector<float> logits(num_tokens * e_count);
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t e = 0; e < e_count; ++e) {
      double dot = 0.0;
      for (int64_t j = 0; j < d; ++j) {
        dot += static_cast<double>(x[t * d + j]) * layer.router_weight[e * d + j];
      }
      logits[t * e_count + e] = static_cast<float>(dot);
    }
  }
  return logits;
}

// Input rows rounded to the compute dtype (what the device computes on). Rows whose top-k
// choice is not decisive (see DecisiveTokens) are drawn again, so that the device and the CPU
// must agree on every token's experts, and capacity drops can be compared exactly.
inline std::vector<float> MakeInput(const HostLayer& layer, std::mt19937_64& rng) {
  const LayerSpec& spec = layer.spec;
  const int64_t d = spec.hidden;
  std::vector<float> x = testing::RandomFloats(rng, spec.num_tokens * d, 1.0f);
  RoundAll(spec.compute, x);
  for (int attempt = 0; attempt < 20; ++attempt) {
    const std::vector<bool> decisive =
        DecisiveTokens(HostLogits(layer, x, spec.num_tokens), layer, spec.num_tokens);
    bool redrawn = false;
    for (int64_t t = 0; t < spec.num_tokens; ++t) {
      if (decisive[t]) continue;
      std::vector<float> row = testing::RandomFloats(rng, d, 1.0f);
      RoundAll(spec.compute, row);
      std::copy(row.begin(), row.end(), x.begin() + t * d);
      redrawn = true;
    }
    if (!redrawn) break;
  }
  return x;
}

}  // namespace moe::kernels::gpu_testing
