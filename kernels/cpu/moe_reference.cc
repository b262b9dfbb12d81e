// The plain reference of the MoE layer: one token at a time, double accumulators, its own
// routing loops, no BLAS and no threads. Slow by design; tests and other backends compare
// against it.
#include <cmath>
#include <cstdint>
#include <vector>

#include "moe/common/status_macros.h"
#include "moe/kernels/cpu_moe.h"

namespace moe::kernels {
namespace {

double WeightAt(const void* base, DType dtype, int64_t index) {
  switch (dtype) {
    case DType::kBF16:
      return BF16ToFloat(static_cast<const uint16_t*>(base)[index]);
    case DType::kF16:
      return HalfToFloat(static_cast<const uint16_t*>(base)[index]);
    default:
      return static_cast<const float*>(base)[index];
  }
}

double Activate(Activation activation, double gate, double up) {
  switch (activation) {
    case Activation::kSwiGLU:
      return gate / (1.0 + std::exp(-gate)) * up;
    case Activation::kGeGLU:
      return 0.5 * gate *
             (1.0 + std::tanh(0.7978845608028654 * (gate + 0.044715 * gate * gate * gate))) * up;
    case Activation::kReLU:
      return gate > 0.0 ? gate : 0.0;
    case Activation::kGELU:
      return 0.5 * gate * (1.0 + std::erf(gate / std::sqrt(2.0)));
  }
  return 0.0;
}

// y[d] += scale * expert(x), for an expert whose weights start at w_in / w_out.
void AddExpert(const MoELayerWeightsView& w, int64_t ffn, const void* w_in, const void* w_out,
               const float* b_in, const float* b_out, const float* x, double scale,
               std::vector<double>& y) {
  const int64_t d = w.hidden_size;
  const bool gated = IsGated(w.activation);
  std::vector<double> act(ffn);
  for (int64_t j = 0; j < ffn; ++j) {
    double gate = b_in != nullptr ? b_in[j] : 0.0;
    double up = gated && b_in != nullptr ? b_in[ffn + j] : 0.0;
    for (int64_t c = 0; c < d; ++c) {
      gate += WeightAt(w_in, w.weight_dtype, j * d + c) * x[c];
      if (gated) up += WeightAt(w_in, w.weight_dtype, (ffn + j) * d + c) * x[c];
    }
    act[j] = Activate(w.activation, gate, up);
  }
  for (int64_t r = 0; r < d; ++r) {
    double sum = b_out != nullptr ? b_out[r] : 0.0;
    for (int64_t j = 0; j < ffn; ++j) sum += WeightAt(w_out, w.weight_dtype, r * ffn + j) * act[j];
    y[r] += scale * sum;
  }
}

bool RanksBefore(double a, int64_t ia, double b, int64_t ib) {
  if (std::isnan(a) != std::isnan(b)) return std::isnan(b);
  if (!std::isnan(a) && a != b) return a > b;
  return ia < ib;
}

}  // namespace

absl::Status MoEForwardReference(const MoELayerWeightsView& w, const RouterConfig& router,
                                 const float* input, int64_t num_tokens,
                                 const MoELayerOutputs& outputs) {
  MOE_RETURN_IF_ERROR(ValidateMoEForward(w, router, num_tokens, outputs));
  if (num_tokens > 0 && input == nullptr) {
    return absl::InvalidArgumentError("MoE forward: input is null");
  }
  const int64_t d = w.hidden_size;
  const int64_t f = w.ffn_size;
  const int64_t num_experts = w.num_experts;
  const int k = router.top_k;
  const int64_t capacity = ExpertCapacity(router, num_tokens, num_experts);
  const size_t elem = DTypeSize(w.weight_dtype);
  std::vector<int64_t> counts(num_experts, 0);
  int64_t dropped = 0;

  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* x = input + t * d;
    std::vector<double> logits(num_experts);
    for (int64_t e = 0; e < num_experts; ++e) {
      double sum = 0.0;
      for (int64_t c = 0; c < d; ++c) sum += static_cast<double>(w.router_weight[e * d + c]) * x[c];
      logits[e] = sum;
      if (outputs.router_logits != nullptr) {
        outputs.router_logits[t * num_experts + e] = static_cast<float>(sum);
      }
    }
    std::vector<double> scores(num_experts);
    if (router.scoring == ScoringFunc::kSoftmax) {
      double max_logit = -INFINITY;
      for (double l : logits) max_logit = l > max_logit ? l : max_logit;
      if (max_logit == INFINITY) {
        int64_t infinite = 0;
        for (double l : logits) infinite += l == INFINITY ? 1 : 0;
        for (int64_t e = 0; e < num_experts; ++e) {
          scores[e] = logits[e] == INFINITY ? 1.0 / static_cast<double>(infinite) : 0.0;
        }
      } else {
        double total = 0.0;
        for (int64_t e = 0; e < num_experts; ++e) {
          total += scores[e] = std::exp(logits[e] - max_logit);
        }
        for (double& s : scores) s /= total;
      }
    } else {
      for (int64_t e = 0; e < num_experts; ++e) scores[e] = 1.0 / (1.0 + std::exp(-logits[e]));
    }
    // Selection: k passes, each taking the best expert not yet chosen.
    std::vector<bool> taken(num_experts, false);
    std::vector<int64_t> chosen;
    for (int s = 0; s < k; ++s) {
      int64_t best = -1;
      double best_key = 0.0;
      for (int64_t e = 0; e < num_experts; ++e) {
        if (taken[e]) continue;
        const double key = scores[e] + (w.router_bias != nullptr ? w.router_bias[e] : 0.0);
        if (best < 0 || RanksBefore(key, e, best_key, best)) {
          best = e;
          best_key = key;
        }
      }
      taken[best] = true;
      chosen.push_back(best);
    }
    double chosen_sum = 0.0;
    for (int64_t e : chosen) chosen_sum += scores[e];

    std::vector<double> y(d, 0.0);
    for (int s = 0; s < k; ++s) {
      const int64_t e = chosen[s];
      double weight = scores[e];
      if (router.renormalize && chosen_sum > 0.0) weight /= chosen_sum;
      weight *= router.routed_scaling_factor;
      if (outputs.topk_ids != nullptr) outputs.topk_ids[t * k + s] = static_cast<int32_t>(e);
      if (outputs.topk_weights != nullptr)
        outputs.topk_weights[t * k + s] = static_cast<float>(weight);
      if (counts[e] >= capacity) {
        ++dropped;
        continue;
      }
      ++counts[e];
      const int64_t in_rows = w.in_rows();
      AddExpert(w, f, static_cast<const char*>(w.w_in) + e * in_rows * d * elem,
                static_cast<const char*>(w.w_out) + e * d * f * elem,
                w.b_in != nullptr ? w.b_in + e * in_rows : nullptr,
                w.b_out != nullptr ? w.b_out + e * d : nullptr, x, weight, y);
    }
    if (w.shared_ffn_size > 0) {
      double gate = 1.0;
      if (w.shared_gate != nullptr) {
        double dot = 0.0;
        for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(w.shared_gate[c]) * x[c];
        gate = 1.0 / (1.0 + std::exp(-dot));
      }
      AddExpert(w, w.shared_ffn_size, w.shared_w_in, w.shared_w_out, nullptr, nullptr, x, gate, y);
    }
    for (int64_t c = 0; c < d; ++c) outputs.output[t * d + c] = static_cast<float>(y[c]);
  }
  if (outputs.expert_token_counts != nullptr) {
    for (int64_t e = 0; e < num_experts; ++e) outputs.expert_token_counts[e] = counts[e];
  }
  if (outputs.dropped_assignments != nullptr) *outputs.dropped_assignments = dropped;
  return absl::OkStatus();
}

}  // namespace moe::kernels
