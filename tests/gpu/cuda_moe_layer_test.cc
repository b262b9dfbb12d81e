// The CUDA MoE layer against the CPU: every op's output is checked on its own (router logits
// against the float64 reference, top-k against RouteTopKCpu on the device's logits, the
// permutation's counts and drops against BuildExpertPermutationCpu on the device's ids) and the
// layer output against MoEForwardReference, over awkward shapes, every activation, scoring
// function, capacity limits, shared experts, both compute dtypes and both expert-GEMM paths.
// Outputs are poisoned before every run; seeds are printed for replay (MOE_TEST_SEED).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/kernels/cpu_moe.h"
#include "moe/kernels/cpu_routing.h"
#include "moe/kernels/cuda_moe.h"
#include "moe/kernels/moe_layer.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::kernels {
namespace {

using gpu_testing::CudaTest;
using gpu_testing::DecisiveTokens;
using gpu_testing::HostLayer;
using gpu_testing::LayerSpec;
using gpu_testing::MakeInput;
using gpu_testing::MakeLayer;
using gpu_testing::OutputTolerance;
using ::moe::testing::IsOk;
using ::moe::testing::RelativeL2;
using ::moe::testing::StatusIs;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int32_t kIdPoison = -7777;
constexpr int64_t kCountPoison = -1;
// The device's float32 router GEMM sums in another order than the float64 reference.
constexpr double kLogitTolerance = 1e-5;

// Host-side results of one forward pass, poisoned until written.
struct HostResults {
  explicit HostResults(const HostLayer& layer, int64_t num_tokens)
      : output(num_tokens * layer.spec.hidden, kNaN),
        logits(num_tokens * layer.spec.num_experts, kNaN),
        ids(num_tokens * layer.spec.top_k, kIdPoison),
        weights(num_tokens * layer.spec.top_k, kNaN),
        counts(layer.spec.num_experts, kCountPoison),
        dropped(kCountPoison) {}

  MoELayerOutputs Outputs() {
    MoELayerOutputs o;
    o.output = output.data();
    o.router_logits = logits.data();
    o.topk_ids = ids.data();
    o.topk_weights = weights.data();
    o.expert_token_counts = counts.data();
    o.dropped_assignments = &dropped;
    return o;
  }

  std::vector<float> output, logits;
  std::vector<int32_t> ids;
  std::vector<float> weights;
  std::vector<int64_t> counts;
  int64_t dropped;
};

// Rows of `values` ([T, width]) for the tokens marked in `keep`.
std::vector<float> KeepRows(const std::vector<float>& values, int64_t width,
                            const std::vector<bool>& keep) {
  std::vector<float> out;
  for (size_t t = 0; t < keep.size(); ++t) {
    if (!keep[t]) continue;
    out.insert(out.end(), values.begin() + t * width, values.begin() + (t + 1) * width);
  }
  return out;
}

bool AllFinite(const std::vector<float>& values) {
  return std::all_of(values.begin(), values.end(), [](float v) { return std::isfinite(v); });
}

absl::StatusOr<std::unique_ptr<CudaMoELayer>> Upload(CudaContext& context, const HostLayer& layer) {
  CudaLayerOptions options;
  options.compute_dtype = layer.spec.compute;
  return CudaMoELayer::Upload(context, layer.view, layer.router, options);
}

// Checks one device run against the CPU, op by op. `reference` is MoEForwardReference's result
// on the same input.
void ExpectMatchesCpu(const HostLayer& layer, const HostResults& reference, const HostResults& gpu,
                      const std::string& what) {
  SCOPED_TRACE(what);
  const LayerSpec& spec = layer.spec;
  const int64_t t_count = spec.num_tokens;
  const int64_t e_count = spec.num_experts;
  const int k = spec.top_k;

  // 1. Router GEMM.
  ASSERT_TRUE(AllFinite(gpu.logits)) << "router logits left poisoned or non-finite";
  const double logit_error =
      RelativeL2(gpu.logits.data(), reference.logits.data(), gpu.logits.size());
  EXPECT_LE(logit_error, kLogitTolerance)
      << "router logits relative L2 " << logit_error << " > " << kLogitTolerance;

  // 2. Top-k on the device's own logits, against the CPU routine on the same logits.
  std::vector<int32_t> cpu_ids(t_count * k);
  std::vector<float> cpu_weights(t_count * k);
  RouteTopKCpu(gpu.logits.data(), layer.view.router_bias, t_count, e_count, layer.router,
               cpu_ids.data(), cpu_weights.data());
  // Ranking by logit (softmax without bias) compares the same floats on both sides: exact.
  const bool exact_ranking = spec.scoring == ScoringFunc::kSoftmax && !spec.router_bias;
  const std::vector<bool> decisive_gpu = DecisiveTokens(gpu.logits, layer, t_count);
  int64_t id_mismatches = 0;
  for (int64_t t = 0; t < t_count; ++t) {
    std::set<int32_t> distinct;
    for (int s = 0; s < k; ++s) {
      const int32_t id = gpu.ids[t * k + s];
      ASSERT_TRUE(id >= 0 && id < e_count) << "token " << t << " slot " << s << " id " << id;
      distinct.insert(id);
    }
    ASSERT_EQ(distinct.size(), static_cast<size_t>(k)) << "token " << t << " repeats an expert";
    if (!exact_ranking && !decisive_gpu[t]) continue;
    for (int s = 0; s < k; ++s) {
      if (gpu.ids[t * k + s] != cpu_ids[t * k + s]) {
        ++id_mismatches;
        ADD_FAILURE() << "token " << t << " slot " << s << ": device id " << gpu.ids[t * k + s]
                      << ", RouteTopKCpu on the device logits " << cpu_ids[t * k + s];
        continue;
      }
      const float w = gpu.weights[t * k + s];
      const float w_cpu = cpu_weights[t * k + s];
      EXPECT_NEAR(w, w_cpu, 1e-5 * (1.0 + std::fabs(w_cpu)))
          << "token " << t << " slot " << s << " combine weight (tolerance 1e-5 relative)";
    }
    if (id_mismatches > 10) FAIL() << "too many top-k mismatches";
  }

  // 3. Permutation: counts and drops from the device's ids, exactly.
  std::vector<int64_t> offsets(e_count + 1), to_assignment(t_count * k), to_permuted(t_count * k);
  const int64_t cpu_dropped = BuildExpertPermutationCpu(
      gpu.ids.data(), t_count, k, e_count, ExpertCapacity(layer.router, t_count, e_count),
      {offsets.data(), to_assignment.data(), to_permuted.data()});
  EXPECT_EQ(gpu.dropped, cpu_dropped) << "assignments dropped by the capacity limit";
  for (int64_t e = 0; e < e_count; ++e) {
    EXPECT_EQ(gpu.counts[e], offsets[e + 1] - offsets[e]) << "expert " << e << " token count";
  }

  // 4. The routing against the float64 reference, where the choice is decisive.
  const std::vector<bool> decisive = DecisiveTokens(reference.logits, layer, t_count);
  int64_t undecided = 0;
  bool same_routing = true;
  for (int64_t t = 0; t < t_count; ++t) {
    if (!decisive[t]) {
      ++undecided;
      continue;
    }
    for (int s = 0; s < k; ++s) {
      if (gpu.ids[t * k + s] != reference.ids[t * k + s]) same_routing = false;
      EXPECT_EQ(gpu.ids[t * k + s], reference.ids[t * k + s])
          << "token " << t << " slot " << s << " against MoEForwardReference";
    }
  }
  if (t_count >= 17) {
    EXPECT_LE(undecided, t_count / 10) << "too few decisive tokens for a meaningful comparison";
  }

  // 5. The layer output.
  ASSERT_TRUE(AllFinite(gpu.output)) << "output left poisoned or non-finite";
  if (!same_routing) return;
  const double tolerance = OutputTolerance(spec.compute);
  if (spec.capacity_factor > 0 && undecided > 0) {
    // Under a capacity limit one token's routing changes which later assignments are dropped;
    // compare only when every choice is decisive.
    std::cout << "note: " << undecided
              << " near-tied tokens under a capacity limit; output comparison skipped\n";
    return;
  }
  const std::vector<float> got = KeepRows(gpu.output, spec.hidden, decisive);
  const std::vector<float> want = KeepRows(reference.output, spec.hidden, decisive);
  ASSERT_FALSE(got.empty()) << "no decisive token left to compare the output on";
  const double error = RelativeL2(got.data(), want.data(), got.size());
  EXPECT_LE(error, tolerance) << "output relative L2 " << error << " > " << tolerance << " ("
                              << DTypeName(spec.compute) << ", " << undecided
                              << " near-tied tokens excluded)";
}

class LayerMatchesCpuTest : public ::testing::WithParamInterface<LayerSpec>, public CudaTest {};

TEST_P(LayerMatchesCpuTest, EveryOpAndOutputMatchCpu) {
  const LayerSpec& spec = GetParam();
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " " + spec.ToString());
  std::mt19937_64 rng(seed);
  auto layer = MakeLayer(spec, rng);
  const std::vector<float> x = MakeInput(*layer, rng);

  HostResults reference(*layer, spec.num_tokens);
  ASSERT_THAT(MoEForwardReference(layer->view, layer->router, x.data(), spec.num_tokens,
                                  reference.Outputs()),
              IsOk());

  auto device_layer = Upload(*context_, *layer);
  ASSERT_THAT(device_layer, IsOk());
  for (CudaExpertGemm mode : {CudaExpertGemm::kGrouped, CudaExpertGemm::kPerExpert}) {
    HostResults gpu(*layer, spec.num_tokens);
    CudaForwardOptions options;
    options.expert_gemm = mode;
    ASSERT_THAT((*device_layer)->ForwardHost(x.data(), spec.num_tokens, gpu.Outputs(), options),
                IsOk());
    // A grouped request that silently ran per expert would test the per-expert path twice.
    EXPECT_FALSE((*device_layer)->grouped_gemm_unsupported())
        << "cuBLAS reported cublasGemmGroupedBatchedEx unsupported; the grouped path fell back";
    EXPECT_TRUE((*device_layer)->last_expert_gemm() == mode) << "expert GEMM path that ran";
    ExpectMatchesCpu(*layer, reference, gpu,
                     mode == CudaExpertGemm::kGrouped ? "grouped GEMM" : "per-expert GEMM");
  }
}

LayerSpec Spec(int64_t t, int64_t d, int64_t f, int64_t e, int k) {
  LayerSpec s;
  s.num_tokens = t;
  s.hidden = d;
  s.ffn = f;
  s.num_experts = e;
  s.top_k = k;
  return s;
}

std::vector<LayerSpec> Specs() {
  std::vector<LayerSpec> specs;
  {  // One token, Mixtral-style routing.
    LayerSpec s = Spec(1, 40, 24, 8, 2);
    s.renormalize = true;
    specs.push_back(s);
  }
  {  // Qwen2-MoE style: many experts, gated shared expert, f16.
    LayerSpec s = Spec(3, 100, 52, 60, 4);
    s.shared_ffn = 36;
    s.shared_gate = true;
    s.compute = DType::kF16;
    specs.push_back(s);
  }
  {  // Ungated shared expert, bf16 host weights.
    LayerSpec s = Spec(17, 72, 200, 60, 4);
    s.shared_ffn = 40;
    s.host_weights = DType::kBF16;
    specs.push_back(s);
  }
  {  // GeGLU, f16 host weights into bf16 compute.
    LayerSpec s = Spec(256, 136, 88, 8, 2);
    s.activation = Activation::kGeGLU;
    s.host_weights = DType::kF16;
    s.renormalize = true;
    specs.push_back(s);
  }
  {  // A single expert, ReLU, expert biases (MoEMLP).
    LayerSpec s = Spec(256, 40, 24, 1, 1);
    s.activation = Activation::kReLU;
    s.expert_bias = true;
    s.compute = DType::kF16;
    specs.push_back(s);
  }
  {  // DeepSeek-style sigmoid scoring with selection bias, renormalised and scaled.
    LayerSpec s = Spec(2256, 96, 40, 60, 4);
    s.scoring = ScoringFunc::kSigmoid;
    s.router_bias = true;
    s.renormalize = true;
    s.scaling = 2.5f;
    specs.push_back(s);
  }
  {  // GELU, top-1, expert biases, f16.
    LayerSpec s = Spec(2256, 72, 56, 32, 1);
    s.activation = Activation::kGELU;
    s.expert_bias = true;
    s.compute = DType::kF16;
    specs.push_back(s);
  }
  {  // Odd sizes: no row is 16-byte aligned on the host side.
    LayerSpec s = Spec(3, 7, 5, 8, 2);
    s.shared_ffn = 3;
    s.shared_gate = true;
    specs.push_back(s);
  }
  {  // Capacity exactly at the average load.
    LayerSpec s = Spec(17, 40, 24, 8, 2);
    s.capacity_factor = 1.0;
    specs.push_back(s);
  }
  {  // Tight capacity: many drops.
    LayerSpec s = Spec(256, 72, 40, 32, 4);
    s.capacity_factor = 0.5;
    s.compute = DType::kF16;
    specs.push_back(s);
  }
  {  // Softmax with a selection bias, SwiGLU with expert biases.
    LayerSpec s = Spec(256, 100, 36, 32, 2);
    s.router_bias = true;
    s.expert_bias = true;
    specs.push_back(s);
  }
  return specs;
}

INSTANTIATE_TEST_SUITE_P(Shapes, LayerMatchesCpuTest, ::testing::ValuesIn(Specs()),
                         [](const ::testing::TestParamInfo<LayerSpec>& info) {
                           const LayerSpec& s = info.param;
                           return "T" + std::to_string(s.num_tokens) + "_E" +
                                  std::to_string(s.num_experts) + "_k" + std::to_string(s.top_k) +
                                  "_d" + std::to_string(s.hidden) + "_" +
                                  std::to_string(info.index);
                         });

using CudaMoELayerTest = CudaTest;

TEST_F(CudaMoELayerTest, ZeroTokensWriteZeroCounts) {
  LayerSpec spec = Spec(0, 40, 24, 8, 2);
  std::mt19937_64 rng(testing::FreshSeed());
  auto layer = MakeLayer(spec, rng);
  auto device_layer = Upload(*context_, *layer);
  ASSERT_THAT(device_layer, IsOk());
  HostResults gpu(*layer, 0);
  float unused = 0.0f;
  MoELayerOutputs outputs = gpu.Outputs();
  outputs.output = &unused;  // a valid pointer for zero rows
  ASSERT_THAT((*device_layer)->ForwardHost(nullptr, 0, outputs), IsOk());
  EXPECT_THAT(gpu.counts, ::testing::Each(0));
  EXPECT_EQ(gpu.dropped, 0);

  // The device API too: device counts and dropped are zeroed.
  auto counts = DeviceBuffer::Allocate(*context_, sizeof(int64_t) * spec.num_experts);
  auto dropped = DeviceBuffer::Allocate(*context_, sizeof(int64_t));
  auto out = DeviceBuffer::Allocate(*context_, 16);
  ASSERT_THAT(counts, IsOk());
  ASSERT_THAT(dropped, IsOk());
  ASSERT_THAT(out, IsOk());
  ASSERT_THAT(counts->FillBytes(0xff), IsOk());
  ASSERT_THAT(dropped->FillBytes(0xff), IsOk());
  CudaMoEOutputs device_outputs;
  device_outputs.output = out->data();
  device_outputs.expert_token_counts = counts->as<int64_t>();
  device_outputs.dropped_assignments = dropped->as<int64_t>();
  ASSERT_THAT((*device_layer)->Forward(nullptr, 0, device_outputs), IsOk());
  std::vector<int64_t> host_counts(spec.num_experts, kCountPoison);
  int64_t host_dropped = kCountPoison;
  ASSERT_THAT(counts->CopyToHost(host_counts.data(), counts->bytes()), IsOk());
  ASSERT_THAT(dropped->CopyToHost(&host_dropped, sizeof(host_dropped)), IsOk());
  EXPECT_THAT(host_counts, ::testing::Each(0));
  EXPECT_EQ(host_dropped, 0);
}

TEST_F(CudaMoELayerTest, ExpertsWithoutTokensStayEmptyAndOutputMatches) {
  // A selection bias of -1 keeps experts 3.. below experts 0..2 whatever the softmax scores.
  LayerSpec spec = Spec(256, 72, 40, 32, 2);
  spec.router_bias = true;
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto layer = MakeLayer(spec, rng);
  for (int64_t e = 0; e < spec.num_experts; ++e) layer->router_bias[e] = e < 3 ? 0.0f : -1.0f;
  const std::vector<float> x = MakeInput(*layer, rng);
  HostResults reference(*layer, spec.num_tokens);
  ASSERT_THAT(MoEForwardReference(layer->view, layer->router, x.data(), spec.num_tokens,
                                  reference.Outputs()),
              IsOk());
  auto device_layer = Upload(*context_, *layer);
  ASSERT_THAT(device_layer, IsOk());
  HostResults gpu(*layer, spec.num_tokens);
  ASSERT_THAT((*device_layer)->ForwardHost(x.data(), spec.num_tokens, gpu.Outputs()), IsOk());
  for (int64_t e = 3; e < spec.num_experts; ++e) EXPECT_EQ(gpu.counts[e], 0) << "expert " << e;
  EXPECT_EQ(gpu.counts[0] + gpu.counts[1] + gpu.counts[2], spec.num_tokens * spec.top_k);
  ExpectMatchesCpu(*layer, reference, gpu, "three busy experts of 32");
}

TEST_F(CudaMoELayerTest, AllTiedLogitsPickTheLowestExperts) {
  // Identical router rows: every logit of a token is equal, so the k lowest indices win, in
  // order, each with weight 1/E.
  LayerSpec spec = Spec(17, 40, 24, 8, 3);
  std::mt19937_64 rng(testing::FreshSeed());
  auto layer = MakeLayer(spec, rng);
  for (int64_t e = 1; e < spec.num_experts; ++e) {
    std::copy_n(layer->router_weight.begin(), spec.hidden,
                layer->router_weight.begin() + e * spec.hidden);
  }
  const std::vector<float> x = MakeInput(*layer, rng);
  auto device_layer = Upload(*context_, *layer);
  ASSERT_THAT(device_layer, IsOk());
  HostResults gpu(*layer, spec.num_tokens);
  ASSERT_THAT((*device_layer)->ForwardHost(x.data(), spec.num_tokens, gpu.Outputs()), IsOk());
  for (int64_t t = 0; t < spec.num_tokens; ++t) {
    for (int s = 0; s < spec.top_k; ++s) {
      EXPECT_EQ(gpu.ids[t * spec.top_k + s], s) << "token " << t;
      EXPECT_FLOAT_EQ(gpu.weights[t * spec.top_k + s], 1.0f / spec.num_experts) << "token " << t;
    }
  }
}

TEST_F(CudaMoELayerTest, NanInputStillRoutesToDistinctExperts) {
  LayerSpec spec = Spec(3, 40, 24, 8, 2);
  std::mt19937_64 rng(testing::FreshSeed());
  auto layer = MakeLayer(spec, rng);
  std::vector<float> x = MakeInput(*layer, rng);
  std::fill_n(x.begin() + spec.hidden, spec.hidden, kNaN);  // token 1
  auto device_layer = Upload(*context_, *layer);
  ASSERT_THAT(device_layer, IsOk());
  HostResults gpu(*layer, spec.num_tokens);
  ASSERT_THAT((*device_layer)->ForwardHost(x.data(), spec.num_tokens, gpu.Outputs()), IsOk());
  // NaN logits rank last and tie by index: experts 0 and 1.
  EXPECT_EQ(gpu.ids[2], 0);
  EXPECT_EQ(gpu.ids[3], 1);
  for (int64_t t : {0, 2}) {
    EXPECT_NE(gpu.ids[t * 2], gpu.ids[t * 2 + 1]);
    for (int64_t j = 0; j < spec.hidden; ++j) {
      EXPECT_TRUE(std::isfinite(gpu.output[t * spec.hidden + j])) << "token " << t;
    }
  }
  EXPECT_EQ(gpu.counts[0] + gpu.counts[1] + gpu.counts[2] + gpu.counts[3] + gpu.counts[4] +
                gpu.counts[5] + gpu.counts[6] + gpu.counts[7],
            spec.num_tokens * spec.top_k);
}

TEST_F(CudaMoELayerTest, InfiniteLogitsShareProbabilityLikeCpu) {
  // One huge input component (2^126, exact in bf16) times router weights of 4 overflows to +inf
  // for experts 2 and 5 and stays finite (+-2^125) for the others: softmax takes the limit,
  // experts 2 and 5 get 1/2 each and every other expert 0, as RouteTopKCpu does. The expert
  // outputs overflow too and are not checked.
  for (bool router_bias : {false, true}) {
    LayerSpec spec = Spec(1, 40, 24, 8, 3);
    spec.router_bias = router_bias;
    const uint64_t seed = testing::FreshSeed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + spec.ToString());
    std::mt19937_64 rng(seed);
    auto layer = MakeLayer(spec, rng);
    const int64_t d = spec.hidden, e_count = spec.num_experts;
    const int k = spec.top_k;
    for (int64_t e = 0; e < e_count; ++e) {
      layer->router_weight[e * d] = e == 2 || e == 5 ? 4.0f : (e % 2 == 0 ? 0.5f : -0.5f);
    }
    std::vector<float> x(d, 0.0f);
    x[0] = std::ldexp(1.0f, 126);
    auto device_layer = Upload(*context_, *layer);
    ASSERT_THAT(device_layer, IsOk());
    HostResults gpu(*layer, spec.num_tokens);
    ASSERT_THAT((*device_layer)->ForwardHost(x.data(), spec.num_tokens, gpu.Outputs()), IsOk());
    for (int64_t e = 0; e < e_count; ++e) {
      if (e == 2 || e == 5) {
        ASSERT_EQ(gpu.logits[e], INFINITY) << "expert " << e;
      } else {
        ASSERT_TRUE(std::isfinite(gpu.logits[e])) << "expert " << e;
      }
    }
    std::vector<int32_t> cpu_ids(k);
    std::vector<float> cpu_weights(k);
    RouteTopKCpu(gpu.logits.data(), layer->view.router_bias, 1, e_count, layer->router,
                 cpu_ids.data(), cpu_weights.data());
    if (!router_bias) {
      EXPECT_THAT(cpu_ids, ::testing::ElementsAre(2, 5, 0));
      EXPECT_THAT(cpu_weights, ::testing::ElementsAre(0.5f, 0.5f, 0.0f));
    }
    for (int s = 0; s < k; ++s) {
      EXPECT_EQ(gpu.ids[s], cpu_ids[s]) << "slot " << s;
      EXPECT_EQ(gpu.weights[s], cpu_weights[s]) << "slot " << s;
    }
  }
}

TEST_F(CudaMoELayerTest, UnderflowingSigmoidScoresRenormaliseToZeroNotNaN) {
  // Router weights of -8 on inputs of 1 give logits of -8d: every sigmoid score underflows to 0,
  // so the chosen scores sum to 0. Renormalising must leave the weights at 0 (times the scaling
  // factor) as RouteTopKCpu does, not divide 0 by 0; the output is then exactly 0.
  LayerSpec spec = Spec(3, 40, 24, 8, 2);
  spec.scoring = ScoringFunc::kSigmoid;
  spec.renormalize = true;
  spec.scaling = 2.5f;
  std::mt19937_64 rng(testing::FreshSeed());
  auto layer = MakeLayer(spec, rng);
  std::fill(layer->router_weight.begin(), layer->router_weight.end(), -8.0f);
  const std::vector<float> x(spec.num_tokens * spec.hidden, 1.0f);
  auto device_layer = Upload(*context_, *layer);
  ASSERT_THAT(device_layer, IsOk());
  HostResults gpu(*layer, spec.num_tokens);
  ASSERT_THAT((*device_layer)->ForwardHost(x.data(), spec.num_tokens, gpu.Outputs()), IsOk());
  const int k = spec.top_k;
  std::vector<int32_t> cpu_ids(spec.num_tokens * k);
  std::vector<float> cpu_weights(spec.num_tokens * k, kNaN);
  RouteTopKCpu(gpu.logits.data(), nullptr, spec.num_tokens, spec.num_experts, layer->router,
               cpu_ids.data(), cpu_weights.data());
  for (int64_t t = 0; t < spec.num_tokens; ++t) {
    ASSERT_EQ(gpu.logits[t * spec.num_experts], -8.0f * spec.hidden) << "token " << t;
    for (int s = 0; s < k; ++s) {
      EXPECT_EQ(gpu.ids[t * k + s], s) << "token " << t << ": all scores tie at 0";
      EXPECT_EQ(gpu.ids[t * k + s], cpu_ids[t * k + s]) << "token " << t;
      EXPECT_EQ(gpu.weights[t * k + s], 0.0f) << "token " << t << " slot " << s;
      EXPECT_EQ(gpu.weights[t * k + s], cpu_weights[t * k + s]) << "token " << t;
    }
  }
  EXPECT_THAT(gpu.output, ::testing::Each(0.0f));
}

TEST_F(CudaMoELayerTest, TwentyRunsAreBitIdentical) {
  LayerSpec spec = Spec(256, 136, 72, 60, 4);
  spec.shared_ffn = 64;
  spec.shared_gate = true;
  spec.capacity_factor = 1.25;
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto layer = MakeLayer(spec, rng);
  const std::vector<float> x = MakeInput(*layer, rng);
  auto device_layer = Upload(*context_, *layer);
  ASSERT_THAT(device_layer, IsOk());
  for (CudaExpertGemm mode : {CudaExpertGemm::kGrouped, CudaExpertGemm::kPerExpert}) {
    CudaForwardOptions options;
    options.expert_gemm = mode;
    HostResults first(*layer, spec.num_tokens);
    ASSERT_THAT((*device_layer)->ForwardHost(x.data(), spec.num_tokens, first.Outputs(), options),
                IsOk());
    for (int run = 1; run < 20; ++run) {
      HostResults again(*layer, spec.num_tokens);
      ASSERT_THAT((*device_layer)->ForwardHost(x.data(), spec.num_tokens, again.Outputs(), options),
                  IsOk());
      ASSERT_EQ(0, std::memcmp(first.output.data(), again.output.data(),
                               first.output.size() * sizeof(float)))
          << "output differs on run " << run;
      ASSERT_EQ(0, std::memcmp(first.logits.data(), again.logits.data(),
                               first.logits.size() * sizeof(float)))
          << "logits differ on run " << run;
      ASSERT_EQ(first.ids, again.ids) << "run " << run;
      ASSERT_EQ(0, std::memcmp(first.weights.data(), again.weights.data(),
                               first.weights.size() * sizeof(float)))
          << "weights differ on run " << run;
      ASSERT_EQ(first.counts, again.counts) << "run " << run;
      ASSERT_EQ(first.dropped, again.dropped) << "run " << run;
    }
  }
}

TEST_F(CudaMoELayerTest, DeviceForwardWritesEveryOutputLikeForwardHost) {
  LayerSpec spec = Spec(17, 72, 40, 32, 4);
  spec.shared_ffn = 24;
  spec.capacity_factor = 1.0;
  std::mt19937_64 rng(testing::FreshSeed());
  auto layer = MakeLayer(spec, rng);
  const std::vector<float> x = MakeInput(*layer, rng);
  auto device_layer = Upload(*context_, *layer);
  ASSERT_THAT(device_layer, IsOk());
  HostResults host(*layer, spec.num_tokens);
  ASSERT_THAT((*device_layer)->ForwardHost(x.data(), spec.num_tokens, host.Outputs()), IsOk());

  const int64_t t = spec.num_tokens, d = spec.hidden, e = spec.num_experts, k = spec.top_k;
  auto x_dev = DeviceBuffer::Allocate(*context_, 2 * t * d);
  auto y_dev = DeviceBuffer::Allocate(*context_, 2 * t * d);
  auto logits_dev = DeviceBuffer::Allocate(*context_, 4 * t * e);
  auto ids_dev = DeviceBuffer::Allocate(*context_, 4 * t * k);
  auto weights_dev = DeviceBuffer::Allocate(*context_, 4 * t * k);
  auto counts_dev = DeviceBuffer::Allocate(*context_, 8 * e);
  auto dropped_dev = DeviceBuffer::Allocate(*context_, 8);
  for (auto* b : {&x_dev, &y_dev, &logits_dev, &ids_dev, &weights_dev, &counts_dev, &dropped_dev}) {
    ASSERT_THAT(*b, IsOk());
    ASSERT_THAT((*b)->FillBytes(0xff), IsOk());  // NaN / -1 everywhere
  }
  ASSERT_THAT(UploadFloats(*context_, x.data(), t * d, spec.compute, x_dev->data()), IsOk());
  CudaMoEOutputs outputs;
  outputs.output = y_dev->data();
  outputs.router_logits = logits_dev->as<float>();
  outputs.topk_ids = ids_dev->as<int32_t>();
  outputs.topk_weights = weights_dev->as<float>();
  outputs.expert_token_counts = counts_dev->as<int64_t>();
  outputs.dropped_assignments = dropped_dev->as<int64_t>();
  std::vector<int64_t> host_counts(e, kCountPoison);
  int64_t host_dropped = kCountPoison;
  outputs.host_expert_token_counts = host_counts.data();
  outputs.host_dropped_assignments = &host_dropped;
  ASSERT_THAT((*device_layer)->Forward(x_dev->data(), t, outputs), IsOk());

  HostResults device(*layer, t);
  ASSERT_THAT(DownloadFloats(*context_, y_dev->data(), spec.compute, t * d, device.output.data()),
              IsOk());
  ASSERT_THAT(logits_dev->CopyToHost(device.logits.data(), 4 * t * e), IsOk());
  ASSERT_THAT(ids_dev->CopyToHost(device.ids.data(), 4 * t * k), IsOk());
  ASSERT_THAT(weights_dev->CopyToHost(device.weights.data(), 4 * t * k), IsOk());
  ASSERT_THAT(counts_dev->CopyToHost(device.counts.data(), 8 * e), IsOk());
  ASSERT_THAT(dropped_dev->CopyToHost(&device.dropped, 8), IsOk());

  EXPECT_EQ(0, std::memcmp(device.output.data(), host.output.data(), 4 * t * d));
  EXPECT_EQ(0, std::memcmp(device.logits.data(), host.logits.data(), 4 * t * e));
  EXPECT_EQ(device.ids, host.ids);
  EXPECT_EQ(0, std::memcmp(device.weights.data(), host.weights.data(), 4 * t * k));
  EXPECT_EQ(device.counts, host.counts);
  EXPECT_EQ(device.dropped, host.dropped);
  EXPECT_EQ(host_counts, host.counts);
  EXPECT_EQ(host_dropped, host.dropped);
}

TEST_F(CudaMoELayerTest, NaiveLoopAndPerExpertAgreeWithGrouped) {
  for (Activation activation : {Activation::kSwiGLU, Activation::kGELU}) {
    LayerSpec spec = Spec(256, 72, 40, 32, 2);
    spec.activation = activation;
    spec.shared_ffn = 24;
    spec.expert_bias = true;
    const uint64_t seed = testing::FreshSeed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + spec.ToString());
    std::mt19937_64 rng(seed);
    auto layer = MakeLayer(spec, rng);
    const std::vector<float> x = MakeInput(*layer, rng);
    auto device_layer = Upload(*context_, *layer);
    ASSERT_THAT(device_layer, IsOk());
    const int64_t t = spec.num_tokens, d = spec.hidden;
    auto x_dev = DeviceBuffer::Allocate(*context_, 2 * t * d);
    auto y_dev = DeviceBuffer::Allocate(*context_, 2 * t * d);
    ASSERT_THAT(x_dev, IsOk());
    ASSERT_THAT(y_dev, IsOk());
    ASSERT_THAT(UploadFloats(*context_, x.data(), t * d, spec.compute, x_dev->data()), IsOk());
    CudaMoEOutputs outputs;
    outputs.output = y_dev->data();
    auto run = [&](int path, std::vector<float>* out) -> absl::Status {
      absl::Status status = y_dev->FillBytes(0xff);
      if (!status.ok()) return status;
      CudaForwardOptions options;
      options.expert_gemm = path == 1 ? CudaExpertGemm::kPerExpert : CudaExpertGemm::kGrouped;
      status = path == 2 ? (*device_layer)->ForwardNaiveLoop(x_dev->data(), t, outputs)
                         : (*device_layer)->Forward(x_dev->data(), t, outputs, options);
      if (!status.ok()) return status;
      out->assign(t * d, kNaN);
      return DownloadFloats(*context_, y_dev->data(), spec.compute, t * d, out->data());
    };
    std::vector<float> grouped, per_expert, naive;
    ASSERT_THAT(run(0, &grouped), IsOk());
    EXPECT_TRUE((*device_layer)->last_expert_gemm() == CudaExpertGemm::kGrouped)
        << "the grouped GEMM fell back to per-expert GEMMs";
    ASSERT_THAT(run(1, &per_expert), IsOk());
    ASSERT_THAT(run(2, &naive), IsOk());
    ASSERT_TRUE(AllFinite(grouped));
    const double tolerance = OutputTolerance(spec.compute) / 4;
    const double e1 = RelativeL2(per_expert.data(), grouped.data(), grouped.size());
    const double e2 = RelativeL2(naive.data(), grouped.data(), grouped.size());
    EXPECT_LE(e1, tolerance) << "per-expert vs grouped relative L2";
    EXPECT_LE(e2, tolerance) << "naive loop vs grouped relative L2";
  }
}

TEST_F(CudaMoELayerTest, RejectsBadArguments) {
  LayerSpec spec = Spec(3, 40, 24, 8, 2);
  std::mt19937_64 rng(1);
  auto layer = MakeLayer(spec, rng);
  CudaLayerOptions f32;
  f32.compute_dtype = DType::kF32;
  EXPECT_THAT(CudaMoELayer::Upload(*context_, layer->view, layer->router, f32),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("F32")));
  RouterConfig bad_router = layer->router;
  bad_router.top_k = 9;
  EXPECT_THAT(CudaMoELayer::Upload(*context_, layer->view, bad_router),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("top_k")));
  auto device_layer = Upload(*context_, *layer);
  ASSERT_THAT(device_layer, IsOk());
  const std::vector<float> x = MakeInput(*layer, rng);
  MoELayerOutputs no_output;
  EXPECT_THAT((*device_layer)->ForwardHost(x.data(), 3, no_output),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("output")));
  HostResults gpu(*layer, 3);
  EXPECT_THAT((*device_layer)->ForwardHost(x.data(), -1, gpu.Outputs()),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("token count")));
  EXPECT_THAT((*device_layer)->ForwardHost(nullptr, 3, gpu.Outputs()),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("input")));
}

}  // namespace
}  // namespace moe::kernels
