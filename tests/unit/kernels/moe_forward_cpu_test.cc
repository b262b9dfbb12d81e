// The CPU MoE layer (fast path, reference and naive loop) against an independent
// double-precision implementation written here from the documented semantics: routing, ties,
// renormalisation, capacity, biases, shared expert, every activation and weight dtype, every
// optional output. Also argument validation and row independence.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/kernels/cpu_moe.h"
#include "moe/kernels/dtype.h"
#include "moe/kernels/moe_layer.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::kernels {
namespace {

using ::moe::testing::IsOk;
using ::moe::testing::RelativeL2;
using ::moe::testing::StatusIs;
using ::testing::HasSubstr;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int32_t kIdPoison = -7777;
constexpr int64_t kCountPoison = -1;
constexpr size_t kGuard = 16;  // poisoned elements past the end of each output
constexpr double kTolerance = 1e-5;
// Rows whose sorted selection scores come closer than this may be ordered differently by float
// arithmetic; there the implementation's choice is accepted when it is one of the near-top.
constexpr double kTieMargin = 1e-4;

// Relative L2 error of the layer output or logits, with the reference norm floored at an RMS of
// kOutputFloor per element: with tiny d a whole output can cancel to near zero, and float32
// accumulation then has no relative accuracy left (seen: d=1, one token, |y| ~ 5e-3).
constexpr double kOutputFloor = 0.05;
double FlooredRelativeL2(const float* actual, const float* expected, size_t count) {
  if (count == 0) return 0.0;
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < count; ++i) {
    diff += (static_cast<double>(actual[i]) - expected[i]) *
            (static_cast<double>(actual[i]) - expected[i]);
    ref += static_cast<double>(expected[i]) * expected[i];
  }
  return std::sqrt(diff) /
         std::max(std::sqrt(ref), kOutputFloor * std::sqrt(static_cast<double>(count)));
}

struct LayerSpec {
  int64_t num_tokens = 1;
  int64_t hidden = 8;       // d
  int64_t ffn = 4;          // f
  int64_t num_experts = 4;  // E
  int top_k = 2;
  int64_t shared_ffn = 0;  // fs
  Activation activation = Activation::kSwiGLU;
  ScoringFunc scoring = ScoringFunc::kSoftmax;
  bool renormalize = false;
  float scaling = 1.0f;
  double capacity_factor = 0.0;
  DType dtype = DType::kF32;
  bool router_bias = false;
  bool expert_bias = false;
  bool shared_gate = false;

  std::string ToString() const {
    return "T=" + std::to_string(num_tokens) + " d=" + std::to_string(hidden) +
           " f=" + std::to_string(ffn) + " E=" + std::to_string(num_experts) +
           " k=" + std::to_string(top_k) + " fs=" + std::to_string(shared_ffn) +
           " act=" + ActivationName(activation) +
           " scoring=" + (scoring == ScoringFunc::kSigmoid ? "sigmoid" : "softmax") +
           " renormalize=" + std::to_string(renormalize) + " scaling=" + std::to_string(scaling) +
           " capacity_factor=" + std::to_string(capacity_factor) +
           " dtype=" + std::string(DTypeName(dtype)) +
           " router_bias=" + std::to_string(router_bias) +
           " expert_bias=" + std::to_string(expert_bias) +
           " shared_gate=" + std::to_string(shared_gate);
  }
};

// A layer with owned random weights. Half-precision weights are stored as bits and also kept
// widened (exactly) in the float vectors the reference reads.
struct Layer {
  LayerSpec spec;
  std::vector<float> router_weight, router_bias, b_in, b_out, shared_gate;
  std::vector<float> w_in, w_out, shared_w_in, shared_w_out;
  std::vector<uint16_t> w_in_bits, w_out_bits, shared_w_in_bits, shared_w_out_bits;
  std::vector<float> input;

  int64_t in_rows() const { return IsGated(spec.activation) ? 2 * spec.ffn : spec.ffn; }
  int64_t shared_in_rows() const {
    return IsGated(spec.activation) ? 2 * spec.shared_ffn : spec.shared_ffn;
  }

  MoELayerWeightsView View() const {
    MoELayerWeightsView view;
    view.hidden_size = spec.hidden;
    view.ffn_size = spec.ffn;
    view.num_experts = spec.num_experts;
    view.activation = spec.activation;
    view.weight_dtype = spec.dtype;
    view.router_weight = router_weight.data();
    view.router_bias = spec.router_bias ? router_bias.data() : nullptr;
    const bool half = spec.dtype != DType::kF32;
    view.w_in = half ? static_cast<const void*>(w_in_bits.data()) : w_in.data();
    view.w_out = half ? static_cast<const void*>(w_out_bits.data()) : w_out.data();
    view.b_in = spec.expert_bias ? b_in.data() : nullptr;
    view.b_out = spec.expert_bias ? b_out.data() : nullptr;
    view.shared_ffn_size = spec.shared_ffn;
    if (spec.shared_ffn > 0) {
      view.shared_w_in =
          half ? static_cast<const void*>(shared_w_in_bits.data()) : shared_w_in.data();
      view.shared_w_out =
          half ? static_cast<const void*>(shared_w_out_bits.data()) : shared_w_out.data();
      view.shared_gate = spec.shared_gate ? shared_gate.data() : nullptr;
    }
    return view;
  }

  RouterConfig Router() const {
    RouterConfig router;
    router.top_k = spec.top_k;
    router.scoring = spec.scoring;
    router.renormalize = spec.renormalize;
    router.routed_scaling_factor = spec.scaling;
    router.capacity_factor = spec.capacity_factor;
    return router;
  }
};

// Fills `values` with random weights representable in `dtype`; `bits` gets the 16-bit patterns.
void RandomWeights(std::mt19937_64& rng, size_t count, float scale, DType dtype,
                   std::vector<float>* values, std::vector<uint16_t>* bits) {
  *values = moe::testing::RandomFloats(rng, count, scale);
  if (dtype == DType::kF32) return;
  bits->resize(count);
  for (size_t i = 0; i < count; ++i) {
    if (dtype == DType::kBF16) {
      (*bits)[i] = FloatToBF16((*values)[i]);
      (*values)[i] = BF16ToFloat((*bits)[i]);
    } else {
      (*bits)[i] = FloatToHalf((*values)[i]);
      (*values)[i] = HalfToFloat((*bits)[i]);
    }
  }
}

Layer MakeLayer(const LayerSpec& spec, std::mt19937_64& rng) {
  Layer layer;
  layer.spec = spec;
  const int64_t d = spec.hidden, f = spec.ffn, e = spec.num_experts;
  const auto inv_sqrt = [](int64_t n) { return 1.0f / std::sqrt(static_cast<float>(n)); };
  layer.router_weight = moe::testing::RandomFloats(rng, e * d, 1.5f * inv_sqrt(d));
  layer.router_bias = moe::testing::RandomFloats(rng, e, 0.05f);
  RandomWeights(rng, e * layer.in_rows() * d, inv_sqrt(d), spec.dtype, &layer.w_in,
                &layer.w_in_bits);
  RandomWeights(rng, e * d * f, inv_sqrt(f), spec.dtype, &layer.w_out, &layer.w_out_bits);
  layer.b_in = moe::testing::RandomFloats(rng, e * layer.in_rows(), 0.1f);
  layer.b_out = moe::testing::RandomFloats(rng, e * d, 0.1f);
  if (spec.shared_ffn > 0) {
    RandomWeights(rng, layer.shared_in_rows() * d, inv_sqrt(d), spec.dtype, &layer.shared_w_in,
                  &layer.shared_w_in_bits);
    RandomWeights(rng, d * spec.shared_ffn, inv_sqrt(spec.shared_ffn), spec.dtype,
                  &layer.shared_w_out, &layer.shared_w_out_bits);
    layer.shared_gate = moe::testing::RandomFloats(rng, d, inv_sqrt(d));
  }
  // At least one element so that the input pointer is never null, even for T = 0.
  layer.input = moe::testing::RandomFloats(rng, std::max<int64_t>(1, spec.num_tokens * d));
  return layer;
}

// ---------------------------------------------------------------------------------------------
// The independent reference, in double precision.

double Dot(const float* a, const float* b, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return sum;
}

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// h = act(W_in x + b_in), gate rows [0, f) and up rows [f, 2f) for the gated activations.
std::vector<double> ExpertHidden(Activation activation, const float* w_in, const float* b_in,
                                 const float* x, int64_t d, int64_t f) {
  std::vector<double> h(f);
  for (int64_t j = 0; j < f; ++j) {
    const double a = Dot(w_in + j * d, x, d) + (b_in ? b_in[j] : 0.0);
    switch (activation) {
      case Activation::kSwiGLU:
      case Activation::kGeGLU: {
        const double up = Dot(w_in + (f + j) * d, x, d) + (b_in ? b_in[f + j] : 0.0);
        const double act =
            activation == Activation::kSwiGLU
                ? a * Sigmoid(a)
                : 0.5 * a * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (a + 0.044715 * a * a * a)));
        h[j] = act * up;
        break;
      }
      case Activation::kReLU:
        h[j] = a > 0.0 ? a : 0.0;
        break;
      case Activation::kGELU:
        h[j] = 0.5 * a * (1.0 + std::erf(a / std::sqrt(2.0)));
        break;
    }
  }
  return h;
}

// y += scale * (W_out h + b_out)
void AddExpertOutput(const float* w_out, const float* b_out, const std::vector<double>& h,
                     int64_t d, int64_t f, double scale, double* y) {
  for (int64_t i = 0; i < d; ++i) {
    double sum = b_out ? b_out[i] : 0.0;
    for (int64_t j = 0; j < f; ++j) sum += static_cast<double>(w_out[i * f + j]) * h[j];
    y[i] += scale * sum;
  }
}

struct Expected {
  std::vector<double> output;   // [T, d]
  std::vector<double> logits;   // [T, E]
  std::vector<int32_t> ids;     // [T, k]
  std::vector<double> weights;  // [T, k]
  std::vector<bool> dropped;    // [T, k]
  std::vector<int64_t> counts;  // [E]
  int64_t num_dropped = 0;
  int64_t adopted_rows = 0;           // near-tie rows where the implementation's choice was taken
  std::vector<std::string> rejected;  // near-tie rows whose implementation choice was not valid
};

// `candidate_ids` (nullable): the implementation's choice, adopted for near-tie rows when it is
// a valid near-top-k selection in non-increasing score order.
Expected ReferenceForward(const Layer& layer, const int32_t* candidate_ids) {
  const LayerSpec& s = layer.spec;
  const int64_t T = s.num_tokens, d = s.hidden, f = s.ffn, E = s.num_experts;
  const int k = s.top_k;
  Expected out;
  out.output.assign(T * d, 0.0);
  out.logits.assign(T * E, 0.0);
  out.ids.assign(T * k, -1);
  out.weights.assign(T * k, 0.0);
  out.dropped.assign(T * k, false);
  out.counts.assign(E, 0);

  for (int64_t t = 0; t < T; ++t) {
    const float* x = layer.input.data() + t * d;
    std::vector<double> scores(E), selection(E);
    for (int64_t e = 0; e < E; ++e) {
      out.logits[t * E + e] = Dot(layer.router_weight.data() + e * d, x, d);
    }
    if (s.scoring == ScoringFunc::kSoftmax) {
      const double max_logit =
          *std::max_element(out.logits.begin() + t * E, out.logits.begin() + (t + 1) * E);
      double sum = 0.0;
      for (int64_t e = 0; e < E; ++e)
        sum += scores[e] = std::exp(out.logits[t * E + e] - max_logit);
      for (double& score : scores) score /= sum;
    } else {
      for (int64_t e = 0; e < E; ++e) scores[e] = Sigmoid(out.logits[t * E + e]);
    }
    for (int64_t e = 0; e < E; ++e) {
      selection[e] = scores[e] + (s.router_bias ? layer.router_bias[e] : 0.0);
    }
    std::vector<int32_t> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return selection[a] > selection[b]; });
    double margin = std::numeric_limits<double>::infinity();
    for (int64_t j = 1; j < std::min<int64_t>(E, k + 1); ++j) {
      margin = std::min(margin, selection[order[j - 1]] - selection[order[j]]);
    }
    std::vector<int32_t> chosen(order.begin(), order.begin() + k);
    if (margin <= kTieMargin && candidate_ids != nullptr) {
      const int32_t* candidate = candidate_ids + t * k;
      bool valid = true;
      std::set<int32_t> seen;
      for (int j = 0; j < k && valid; ++j) {
        const int32_t id = candidate[j];
        valid = id >= 0 && id < E && seen.insert(id).second &&
                selection[id] >= selection[order[k - 1]] - kTieMargin &&
                (j == 0 || selection[id] <= selection[candidate[j - 1]] + kTieMargin);
      }
      if (valid) {
        chosen.assign(candidate, candidate + k);
        ++out.adopted_rows;
      } else {
        out.rejected.push_back("token " + std::to_string(t));
      }
    }
    double chosen_sum = 0.0;
    for (int32_t id : chosen) chosen_sum += scores[id];
    for (int j = 0; j < k; ++j) {
      out.ids[t * k + j] = chosen[j];
      double weight = scores[chosen[j]];
      if (s.renormalize) weight /= chosen_sum;
      out.weights[t * k + j] = weight * s.scaling;
    }
  }

  // Capacity: per expert, assignments in token order (then slot order) past the limit drop.
  int64_t capacity = std::numeric_limits<int64_t>::max();
  if (s.capacity_factor > 0) {
    capacity = static_cast<int64_t>(
        std::ceil(s.capacity_factor * static_cast<double>(T * k) / static_cast<double>(E)));
  }
  for (int64_t a = 0; a < T * k; ++a) {
    const int32_t e = out.ids[a];
    if (out.counts[e] < capacity) {
      ++out.counts[e];
    } else {
      out.dropped[a] = true;
      ++out.num_dropped;
    }
  }

  const int64_t in_rows = layer.in_rows();
  for (int64_t t = 0; t < T; ++t) {
    const float* x = layer.input.data() + t * d;
    double* y = out.output.data() + t * d;
    for (int j = 0; j < k; ++j) {
      if (out.dropped[t * k + j]) continue;
      const int32_t e = out.ids[t * k + j];
      const std::vector<double> h =
          ExpertHidden(s.activation, layer.w_in.data() + e * in_rows * d,
                       s.expert_bias ? layer.b_in.data() + e * in_rows : nullptr, x, d, f);
      AddExpertOutput(layer.w_out.data() + e * d * f,
                      s.expert_bias ? layer.b_out.data() + e * d : nullptr, h, d, f,
                      out.weights[t * k + j], y);
    }
    if (s.shared_ffn > 0) {
      const double scale = s.shared_gate ? Sigmoid(Dot(layer.shared_gate.data(), x, d)) : 1.0;
      const std::vector<double> h =
          ExpertHidden(s.activation, layer.shared_w_in.data(), nullptr, x, d, s.shared_ffn);
      AddExpertOutput(layer.shared_w_out.data(), nullptr, h, d, s.shared_ffn, scale, y);
    }
  }
  return out;
}

std::vector<float> ToFloat(const std::vector<double>& values) {
  return std::vector<float>(values.begin(), values.end());
}

// ---------------------------------------------------------------------------------------------
// Running an implementation with poisoned outputs.

using ForwardFn = std::function<absl::Status(const MoELayerWeightsView&, const RouterConfig&,
                                             const float*, int64_t, const MoELayerOutputs&)>;

struct PoisonedOutputs {
  explicit PoisonedOutputs(const LayerSpec& s)
      : output(s.num_tokens * s.hidden + kGuard, kNaN),
        router_logits(s.num_tokens * s.num_experts + kGuard, kNaN),
        topk_ids(s.num_tokens * s.top_k + kGuard, kIdPoison),
        topk_weights(s.num_tokens * s.top_k + kGuard, kNaN),
        counts(s.num_experts + kGuard, kCountPoison),
        dropped(1 + kGuard, kCountPoison) {}

  MoELayerOutputs All() {
    return {output.data(),       router_logits.data(), topk_ids.data(),
            topk_weights.data(), counts.data(),        dropped.data()};
  }
  MoELayerOutputs OutputOnly() {
    MoELayerOutputs outputs;
    outputs.output = output.data();
    return outputs;
  }

  std::vector<float> output, router_logits;
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_weights;
  std::vector<int64_t> counts, dropped;
};

template <typename T>
void ExpectGuardIntact(const std::vector<T>& values, size_t used, const char* what) {
  for (size_t i = used; i < values.size(); ++i) {
    if constexpr (std::is_floating_point_v<T>) {
      ASSERT_TRUE(std::isnan(values[i])) << what << ": wrote past its end at element " << i;
    } else {
      ASSERT_EQ(values[i], values.back()) << what << ": wrote past its end at element " << i;
    }
  }
}

void ExpectAllWritten(const std::vector<float>& values, size_t used, int64_t row_size,
                      const char* what) {
  for (size_t i = 0; i < used; ++i) {
    ASSERT_FALSE(std::isnan(values[i])) << what << ": row " << i / row_size << " column "
                                        << i % row_size << " not written (still NaN poison)";
  }
}

// Runs `forward` on `layer` with every output, then with `output` alone, and compares both with
// the double-precision reference.
void ExpectMatchesReference(const ForwardFn& forward, const Layer& layer) {
  const LayerSpec& s = layer.spec;
  const int64_t T = s.num_tokens, d = s.hidden, E = s.num_experts;
  const int k = s.top_k;
  PoisonedOutputs run(s);
  ASSERT_THAT(forward(layer.View(), layer.Router(), layer.input.data(), T, run.All()), IsOk());

  // Ids: in range, distinct per token.
  for (int64_t t = 0; t < T; ++t) {
    std::set<int32_t> seen;
    for (int j = 0; j < k; ++j) {
      const int32_t id = run.topk_ids[t * k + j];
      ASSERT_TRUE(id >= 0 && id < E) << "token " << t << " slot " << j << " id " << id;
      ASSERT_TRUE(seen.insert(id).second) << "token " << t << " repeats expert " << id;
    }
  }
  const Expected expected = ReferenceForward(layer, run.topk_ids.data());
  EXPECT_TRUE(expected.rejected.empty())
      << "near-tie rows where the chosen experts are not among the near-top-k: "
      << ::testing::PrintToString(expected.rejected);
  for (int64_t a = 0; a < T * k; ++a) {
    ASSERT_EQ(run.topk_ids[a], expected.ids[a])
        << "token " << a / k << " slot " << a % k << " (selection margin > " << kTieMargin << ")";
  }

  ExpectAllWritten(run.output, T * d, d, "output");
  ExpectGuardIntact(run.output, T * d, "output");
  const std::vector<float> expected_output = ToFloat(expected.output);
  EXPECT_LT(FlooredRelativeL2(run.output.data(), expected_output.data(), T * d), kTolerance)
      << "output: relative L2 error vs double reference (norm floored at RMS " << kOutputFloor
      << ") must be < " << kTolerance;

  ExpectAllWritten(run.router_logits, T * E, E, "router_logits");
  ExpectGuardIntact(run.router_logits, T * E, "router_logits");
  const std::vector<float> expected_logits = ToFloat(expected.logits);
  EXPECT_LT(FlooredRelativeL2(run.router_logits.data(), expected_logits.data(), T * E), kTolerance)
      << "router_logits: relative L2 error vs double reference (norm floored at RMS "
      << kOutputFloor << ") must be < " << kTolerance;

  // Combine weights: kept assignments must match; a dropped one may show its weight or 0.
  std::vector<float> kept_actual, kept_expected;
  for (int64_t a = 0; a < T * k; ++a) {
    const float actual = run.topk_weights[a];
    ASSERT_FALSE(std::isnan(actual)) << "topk_weights: token " << a / k << " slot " << a % k
                                     << " not written (still NaN poison)";
    if (expected.dropped[a]) {
      const double w = expected.weights[a];
      EXPECT_TRUE(actual == 0.0f || std::fabs(actual - w) <= kTolerance * std::fabs(w))
          << "topk_weights of dropped token " << a / k << " slot " << a % k << ": " << actual
          << ", expected 0 or " << w;
      continue;
    }
    kept_actual.push_back(actual);
    kept_expected.push_back(static_cast<float>(expected.weights[a]));
  }
  ExpectGuardIntact(run.topk_weights, T * k, "topk_weights");
  EXPECT_LT(RelativeL2(kept_actual.data(), kept_expected.data(), kept_actual.size()), kTolerance)
      << "topk_weights: relative L2 error vs double reference must be < " << kTolerance;

  EXPECT_EQ(std::vector<int64_t>(run.counts.begin(), run.counts.begin() + E), expected.counts)
      << "expert_token_counts";
  ExpectGuardIntact(run.counts, E, "expert_token_counts");
  EXPECT_EQ(run.dropped[0], expected.num_dropped) << "dropped_assignments";
  EXPECT_EQ(std::accumulate(run.counts.begin(), run.counts.begin() + E, int64_t{0}),
            T * k - expected.num_dropped)
      << "sum of expert_token_counts must be T*k - dropped";

  // Only the required output: same result.
  PoisonedOutputs bare(s);
  ASSERT_THAT(forward(layer.View(), layer.Router(), layer.input.data(), T, bare.OutputOnly()),
              IsOk());
  ExpectAllWritten(bare.output, T * d, d, "output (no optional outputs)");
  ExpectGuardIntact(bare.output, T * d, "output (no optional outputs)");
  EXPECT_LT(FlooredRelativeL2(bare.output.data(), expected_output.data(), T * d), kTolerance)
      << "output without optional outputs: relative L2 error vs double reference (norm floored "
      << "at RMS " << kOutputFloor << ") must be < " << kTolerance;
}

ForwardFn FastPath(CpuMoEWorkspace* workspace) {
  return [workspace](const MoELayerWeightsView& w, const RouterConfig& r, const float* x, int64_t t,
                     const MoELayerOutputs& o) { return MoEForwardCpu(w, r, x, t, o, workspace); };
}

ForwardFn ReferencePath() {
  return [](const MoELayerWeightsView& w, const RouterConfig& r, const float* x, int64_t t,
            const MoELayerOutputs& o) { return MoEForwardReference(w, r, x, t, o); };
}

ForwardFn NaiveLoopPath(CpuMoEWorkspace* workspace) {
  return [workspace](const MoELayerWeightsView& w, const RouterConfig& r, const float* x, int64_t t,
                     const MoELayerOutputs& o) {
    return MoEForwardNaiveLoopCpu(w, r, x, t, o, workspace);
  };
}

LayerSpec RandomSpec(std::mt19937_64& rng) {
  static const int64_t kSizes[] = {1, 3, 17, 96, 130};
  static const int64_t kTokens[] = {0, 1, 2, 7, 64, 300};
  static const Activation kActivations[] = {Activation::kSwiGLU, Activation::kGeGLU,
                                            Activation::kReLU, Activation::kGELU};
  static const double kCapacityFactors[] = {0.0, 0.0, 0.5, 1.0, 1.25};
  const auto pick_size = [&]() {
    return (rng() & 1u) ? kSizes[rng() % 5] : 1 + static_cast<int64_t>(rng() % 130);
  };
  LayerSpec s;
  s.num_tokens = kTokens[rng() % 6];
  s.hidden = pick_size();
  s.ffn = pick_size();
  if (s.num_tokens == 300) {  // keep the double-precision reference quick
    s.hidden = std::min<int64_t>(s.hidden, 96);
    s.ffn = std::min<int64_t>(s.ffn, 96);
  }
  s.num_experts = 1 + static_cast<int64_t>(rng() % 64);
  s.top_k = 1 + static_cast<int>(rng() % std::min<int64_t>(s.num_experts, 8));
  s.shared_ffn = (rng() % 3 == 0) ? std::vector<int64_t>{1, 17, 64}[rng() % 3] : 0;
  s.shared_gate = s.shared_ffn > 0 && (rng() & 1u);
  s.activation = kActivations[rng() % 4];
  s.scoring = (rng() & 1u) ? ScoringFunc::kSigmoid : ScoringFunc::kSoftmax;
  s.renormalize = (rng() & 1u) != 0;
  s.scaling = (rng() % 3 == 0) ? 2.5f : 1.0f;
  s.capacity_factor = kCapacityFactors[rng() % 5];
  s.router_bias = (rng() % 3) == 0;
  s.expert_bias = (rng() % 3) == 0;
  return s;
}

TEST(MoEForwardCpuTest, MatchesDoublePrecisionReferenceOnRandomLayers) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 rng(seed);
  CpuMoEWorkspace workspace;  // shared by every case: it must cope with growing and shrinking
  for (int c = 0; c < 80; ++c) {
    LayerSpec spec = RandomSpec(rng);
    spec.dtype = std::vector<DType>{DType::kF32, DType::kF32, DType::kBF16, DType::kF16}[rng() % 4];
    SCOPED_TRACE("seed=" + std::to_string(seed) + " case=" + std::to_string(c) + " " +
                 spec.ToString());
    const Layer layer = MakeLayer(spec, rng);
    {
      SCOPED_TRACE("MoEForwardCpu");
      ExpectMatchesReference(FastPath(&workspace), layer);
    }
    {
      SCOPED_TRACE("MoEForwardReference");
      ExpectMatchesReference(ReferencePath(), layer);
    }
  }
}

// Each feature on its own at a size where every path through the kernel is taken.
TEST(MoEForwardCpuTest, MatchesReferenceForEveryActivationScoringAndDType) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 rng(seed);
  CpuMoEWorkspace workspace;
  for (Activation activation :
       {Activation::kSwiGLU, Activation::kGeGLU, Activation::kReLU, Activation::kGELU}) {
    for (ScoringFunc scoring : {ScoringFunc::kSoftmax, ScoringFunc::kSigmoid}) {
      for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
        LayerSpec spec;
        spec.num_tokens = 64;
        spec.hidden = 48;
        spec.ffn = 17;
        spec.num_experts = 8;
        spec.top_k = 2;
        spec.activation = activation;
        spec.scoring = scoring;
        spec.dtype = dtype;
        spec.renormalize = scoring == ScoringFunc::kSoftmax;
        spec.shared_ffn = 24;
        spec.shared_gate = true;
        spec.router_bias = scoring == ScoringFunc::kSigmoid;
        spec.expert_bias = true;
        SCOPED_TRACE("seed=" + std::to_string(seed) + " " + spec.ToString());
        const Layer layer = MakeLayer(spec, rng);
        {
          SCOPED_TRACE("MoEForwardCpu");
          ExpectMatchesReference(FastPath(&workspace), layer);
        }
        {
          SCOPED_TRACE("MoEForwardReference");
          ExpectMatchesReference(ReferencePath(), layer);
        }
      }
    }
  }
}

TEST(MoEForwardCpuTest, CapacityDropsLaterAssignmentsAndCountsThem) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 rng(seed);
  CpuMoEWorkspace workspace;
  for (double factor : {0.5, 1.0, 1.25}) {
    for (int64_t tokens : {7, 64, 300}) {
      LayerSpec spec;
      spec.num_tokens = tokens;
      spec.hidden = 33;
      spec.ffn = 20;
      spec.num_experts = 16;
      spec.top_k = 4;
      spec.capacity_factor = factor;
      spec.renormalize = true;
      spec.shared_ffn = tokens == 64 ? 8 : 0;
      SCOPED_TRACE("seed=" + std::to_string(seed) + " " + spec.ToString());
      const Layer layer = MakeLayer(spec, rng);
      {
        SCOPED_TRACE("MoEForwardCpu");
        ExpectMatchesReference(FastPath(&workspace), layer);
      }
      {
        SCOPED_TRACE("MoEForwardReference");
        ExpectMatchesReference(ReferencePath(), layer);
      }
    }
  }
}

TEST(MoEForwardCpuTest, MostExpertsIdleWithOneToken) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 rng(seed);
  CpuMoEWorkspace workspace;
  for (int k : {1, 2, 8}) {
    LayerSpec spec;
    spec.num_tokens = 1;
    spec.hidden = 96;
    spec.ffn = 130;
    spec.num_experts = 16;
    spec.top_k = k;
    spec.activation = Activation::kGeGLU;
    SCOPED_TRACE("seed=" + std::to_string(seed) + " " + spec.ToString());
    const Layer layer = MakeLayer(spec, rng);
    ExpectMatchesReference(FastPath(&workspace), layer);
    ExpectMatchesReference(ReferencePath(), layer);
  }
}

TEST(MoEForwardCpuTest, HandComputedTwoTokenLayer) {
  // d = 2, f = 1, E = 2, ReLU, top-1 renormalised (weight 1).
  const float router_weight[] = {1, 0, 0, 1};
  const float w_in[] = {1, 1, 1, -1};  // expert 0: [1 1], expert 1: [1 -1]
  const float w_out[] = {1, 2, 3, 4};  // expert 0: [1; 2], expert 1: [3; 4]
  const float b_in[] = {0, 0};
  const float b_out[] = {0, 0, 0.5f, -0.5f};
  const float input[] = {2, 1, -1, 1};  // token 0 -> expert 0, token 1 -> expert 1
  MoELayerWeightsView weights;
  weights.hidden_size = 2;
  weights.ffn_size = 1;
  weights.num_experts = 2;
  weights.activation = Activation::kReLU;
  weights.router_weight = router_weight;
  weights.w_in = w_in;
  weights.w_out = w_out;
  weights.b_in = b_in;
  weights.b_out = b_out;
  RouterConfig router;
  router.top_k = 1;
  router.renormalize = true;
  for (bool fast : {true, false}) {
    SCOPED_TRACE(fast ? "MoEForwardCpu" : "MoEForwardReference");
    float output[4] = {kNaN, kNaN, kNaN, kNaN};
    int32_t ids[2] = {kIdPoison, kIdPoison};
    int64_t counts[2] = {kCountPoison, kCountPoison};
    MoELayerOutputs outputs;
    outputs.output = output;
    outputs.topk_ids = ids;
    outputs.expert_token_counts = counts;
    CpuMoEWorkspace workspace;
    ASSERT_THAT(fast ? MoEForwardCpu(weights, router, input, 2, outputs, &workspace)
                     : MoEForwardReference(weights, router, input, 2, outputs),
                IsOk());
    // Token 0: h = relu(2 + 1) = 3, y = [3, 6]. Token 1: h = relu(-1 - 1) = 0, y = b_out.
    EXPECT_THAT(output, ::testing::ElementsAre(3.0f, 6.0f, 0.5f, -0.5f));
    EXPECT_THAT(ids, ::testing::ElementsAre(0, 1));
    EXPECT_THAT(counts, ::testing::ElementsAre(1, 1));
  }
}

TEST(MoEForwardCpuTest, ZeroTokensWritesNothingAndCountsZero) {
  const uint64_t seed = moe::testing::FreshSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  LayerSpec spec;
  spec.num_tokens = 0;
  spec.capacity_factor = 1.0;
  spec.shared_ffn = 5;
  const Layer layer = MakeLayer(spec, rng);
  CpuMoEWorkspace workspace;
  for (const ForwardFn& forward : {FastPath(&workspace), ReferencePath()}) {
    PoisonedOutputs run(spec);
    ASSERT_THAT(forward(layer.View(), layer.Router(), layer.input.data(), 0, run.All()), IsOk());
    ExpectGuardIntact(run.output, 0, "output");
    ExpectGuardIntact(run.router_logits, 0, "router_logits");
    ExpectGuardIntact(run.topk_ids, 0, "topk_ids");
    ExpectGuardIntact(run.topk_weights, 0, "topk_weights");
    EXPECT_EQ(std::vector<int64_t>(run.counts.begin(), run.counts.begin() + spec.num_experts),
              std::vector<int64_t>(spec.num_experts, 0));
    EXPECT_EQ(run.dropped[0], 0);
    // With no tokens there is nothing to read: a null input is fine.
    EXPECT_THAT(forward(layer.View(), layer.Router(), nullptr, 0, run.All()), IsOk());
  }
}

TEST(MoEForwardCpuTest, TokenOutputDoesNotDependOnItsBatch) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 rng(seed);
  CpuMoEWorkspace workspace;
  for (Activation activation : {Activation::kSwiGLU, Activation::kGELU}) {
    LayerSpec spec;
    spec.num_tokens = 1;
    spec.hidden = 64;
    spec.ffn = 40;
    spec.num_experts = 16;
    spec.top_k = 4;
    spec.activation = activation;
    spec.renormalize = true;
    spec.shared_ffn = 16;
    const Layer alone = MakeLayer(spec, rng);
    PoisonedOutputs alone_run(spec);
    ASSERT_THAT(MoEForwardCpu(alone.View(), alone.Router(), alone.input.data(), 1, alone_run.All(),
                              &workspace),
                IsOk());
    for (int64_t batch : {2, 7, 64, 300}) {
      const int64_t position = static_cast<int64_t>(rng() % batch);
      SCOPED_TRACE("seed=" + std::to_string(seed) + " batch=" + std::to_string(batch) +
                   " position=" + std::to_string(position) + " " + spec.ToString());
      Layer batched = alone;
      batched.spec.num_tokens = batch;
      batched.input = moe::testing::RandomFloats(rng, batch * spec.hidden);
      std::copy(alone.input.begin(), alone.input.end(),
                batched.input.begin() + position * spec.hidden);
      PoisonedOutputs batch_run(batched.spec);
      ASSERT_THAT(MoEForwardCpu(batched.View(), batched.Router(), batched.input.data(), batch,
                                batch_run.All(), &workspace),
                  IsOk());
      for (int j = 0; j < spec.top_k; ++j) {
        EXPECT_EQ(batch_run.topk_ids[position * spec.top_k + j], alone_run.topk_ids[j])
            << "slot " << j;
      }
      const double difference = RelativeL2(batch_run.output.data() + position * spec.hidden,
                                           alone_run.output.data(), spec.hidden);
      EXPECT_LE(difference, 1e-6)
          << "token's output row in a batch vs alone: relative L2 must be <= 1e-6";
    }
  }
}

// The benchmark baseline covers gated experts without capacity, expert biases or a shared
// expert (it stands for a plain framework loop); within that scope it must give the same results.
TEST(MoEForwardNaiveLoopCpuTest, MatchesDoublePrecisionReferenceForGatedExperts) {
  const uint64_t seed = moe::testing::FreshSeed();
  std::mt19937_64 rng(seed);
  CpuMoEWorkspace workspace;
  for (int c = 0; c < 12; ++c) {
    LayerSpec spec = RandomSpec(rng);
    spec.activation = (rng() & 1u) ? Activation::kSwiGLU : Activation::kGeGLU;
    spec.capacity_factor = 0.0;
    spec.expert_bias = false;
    spec.shared_ffn = 0;
    spec.shared_gate = false;
    spec.dtype = std::vector<DType>{DType::kF32, DType::kBF16, DType::kF16}[rng() % 3];
    SCOPED_TRACE("seed=" + std::to_string(seed) + " case=" + std::to_string(c) + " " +
                 spec.ToString());
    const Layer layer = MakeLayer(spec, rng);
    ExpectMatchesReference(NaiveLoopPath(&workspace), layer);
  }
}

// ---------------------------------------------------------------------------------------------
// Argument validation.

class MoEForwardValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LayerSpec spec;
    spec.num_tokens = 3;
    spec.num_experts = 4;
    spec.top_k = 2;
    spec.shared_ffn = 4;
    std::mt19937_64 rng(1);
    layer_ = MakeLayer(spec, rng);
    weights_ = layer_.View();
    router_ = layer_.Router();
    output_.assign(3 * spec.hidden, 0.0f);
    outputs_.output = output_.data();
  }

  // Every entry point must refuse the call with INVALID_ARGUMENT and a message containing
  // `mentions`.
  void ExpectRefused(const MoELayerWeightsView& weights, const RouterConfig& router,
                     const float* input, int64_t num_tokens, const MoELayerOutputs& outputs,
                     const std::string& mentions) {
    CpuMoEWorkspace workspace;
    const auto invalid = StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(mentions));
    EXPECT_THAT(MoEForwardCpu(weights, router, input, num_tokens, outputs, &workspace), invalid)
        << "MoEForwardCpu";
    EXPECT_THAT(MoEForwardReference(weights, router, input, num_tokens, outputs), invalid)
        << "MoEForwardReference";
    EXPECT_THAT(MoEForwardNaiveLoopCpu(weights, router, input, num_tokens, outputs, &workspace),
                invalid)
        << "MoEForwardNaiveLoopCpu";
  }

  Layer layer_;
  MoELayerWeightsView weights_;
  RouterConfig router_;
  std::vector<float> output_;
  MoELayerOutputs outputs_;
};

TEST_F(MoEForwardValidationTest, AcceptsValidArguments) {
  EXPECT_THAT(ValidateMoELayer(weights_, router_), IsOk());
  EXPECT_THAT(ValidateMoEForward(weights_, router_, 3, outputs_), IsOk());
  CpuMoEWorkspace workspace;
  EXPECT_THAT(MoEForwardCpu(weights_, router_, layer_.input.data(), 3, outputs_, &workspace),
              IsOk());
}

TEST_F(MoEForwardValidationTest, RefusesNullInputWithTokens) {
  ExpectRefused(weights_, router_, nullptr, 3, outputs_, "");
}

TEST_F(MoEForwardValidationTest, RefusesTopKAboveExpertCount) {
  RouterConfig router = router_;
  router.top_k = 9;
  EXPECT_THAT(ValidateMoEForward(weights_, router, 3, outputs_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("9")));
  ExpectRefused(weights_, router, layer_.input.data(), 3, outputs_, "9");
  router.top_k = 5;  // E + 1
  ExpectRefused(weights_, router, layer_.input.data(), 3, outputs_, "5");
}

TEST_F(MoEForwardValidationTest, RefusesTopKBelowOne) {
  for (int k : {0, -1}) {
    RouterConfig router = router_;
    router.top_k = k;
    EXPECT_THAT(ValidateMoEForward(weights_, router, 3, outputs_),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(std::to_string(k))));
    ExpectRefused(weights_, router, layer_.input.data(), 3, outputs_, std::to_string(k));
  }
}

TEST_F(MoEForwardValidationTest, RefusesNegativeTokenCount) {
  EXPECT_THAT(ValidateMoEForward(weights_, router_, -3, outputs_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("-3")));
  ExpectRefused(weights_, router_, layer_.input.data(), -3, outputs_, "-3");
}

TEST_F(MoEForwardValidationTest, RefusesNullOutput) {
  MoELayerOutputs outputs = outputs_;
  outputs.output = nullptr;
  EXPECT_THAT(ValidateMoEForward(weights_, router_, 3, outputs),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
  ExpectRefused(weights_, router_, layer_.input.data(), 3, outputs, "");
}

TEST_F(MoEForwardValidationTest, RefusesUnsupportedWeightDType) {
  for (DType dtype : {DType::kI32, DType::kF64, DType::kU8, DType::kF8E4M3}) {
    MoELayerWeightsView weights = weights_;
    weights.weight_dtype = dtype;
    const std::string name(DTypeName(dtype));
    EXPECT_THAT(ValidateMoELayer(weights, router_),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(name)));
    ExpectRefused(weights, router_, layer_.input.data(), 3, outputs_, name);
  }
}

TEST_F(MoEForwardValidationTest, RefusesIncompleteLayerDescription) {
  {
    MoELayerWeightsView weights = weights_;
    weights.num_experts = 0;
    EXPECT_THAT(ValidateMoELayer(weights, router_),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
  }
  {
    MoELayerWeightsView weights = weights_;
    weights.hidden_size = 0;
    EXPECT_THAT(ValidateMoELayer(weights, router_),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
  }
  {
    MoELayerWeightsView weights = weights_;
    weights.router_weight = nullptr;
    EXPECT_THAT(ValidateMoELayer(weights, router_),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
    ExpectRefused(weights, router_, layer_.input.data(), 3, outputs_, "");
  }
  {
    MoELayerWeightsView weights = weights_;
    weights.w_in = nullptr;
    EXPECT_THAT(ValidateMoELayer(weights, router_),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
    ExpectRefused(weights, router_, layer_.input.data(), 3, outputs_, "");
  }
  {
    MoELayerWeightsView weights = weights_;
    weights.w_out = nullptr;
    EXPECT_THAT(ValidateMoELayer(weights, router_),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
  }
  {
    MoELayerWeightsView weights = weights_;
    weights.shared_w_in = nullptr;  // shared_ffn_size > 0 says there is a shared expert
    EXPECT_THAT(ValidateMoELayer(weights, router_),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
  }
}

}  // namespace
}  // namespace moe::kernels
