#include "server/engine/moe_mlp_reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "moe/kernels/dtype.h"

namespace moe::engine {
namespace {

using kernels::Activation;
using kernels::DType;

double ExpertWeight(const std::vector<std::byte>& bytes, DType dtype, int64_t index) {
  const std::byte* at = bytes.data() + index * static_cast<int64_t>(kernels::DTypeSize(dtype));
  if (dtype == DType::kF32) {
    float value;
    std::memcpy(&value, at, sizeof(value));
    return value;
  }
  uint16_t bits;
  std::memcpy(&bits, at, sizeof(bits));
  return dtype == DType::kBF16 ? kernels::BF16ToFloat(bits) : kernels::HalfToFloat(bits);
}

std::vector<double> Linear(const model::LinearWeights& linear, const std::vector<double>& x) {
  std::vector<double> y(linear.out_features);
  for (int64_t o = 0; o < linear.out_features; ++o) {
    double sum = linear.bias[o];
    for (int64_t i = 0; i < linear.in_features; ++i) {
      sum += static_cast<double>(linear.weight[o * linear.in_features + i]) * x[i];
    }
    y[o] = sum;
  }
  return y;
}

std::vector<double> LayerNorm(const model::LayerNormWeights& norm, double eps,
                              const std::vector<double>& x) {
  const double n = static_cast<double>(x.size());
  double mean = 0.0;
  for (double v : x) mean += v;
  mean /= n;
  double var = 0.0;
  for (double v : x) var += (v - mean) * (v - mean);
  var /= n;
  std::vector<double> y(x.size());
  for (size_t c = 0; c < x.size(); ++c) {
    y[c] = (x[c] - mean) / std::sqrt(var + eps) * norm.weight[c] + norm.bias[c];
  }
  return y;
}

double Activate(Activation activation, double gate, double up) {
  switch (activation) {
    case Activation::kSwiGLU:
      return gate / (1.0 + std::exp(-gate)) * up;
    case Activation::kReLU:
      return gate > 0.0 ? gate : 0.0;
    case Activation::kGELU:
      return 0.5 * gate * (1.0 + std::erf(gate / std::sqrt(2.0)));
    case Activation::kGeGLU:
      return 0.5 * gate *
             (1.0 + std::tanh(0.7978845608028654 * (gate + 0.044715 * gate * gate * gate))) * up;
  }
  return 0.0;
}

// Expert e of `block` on x: w_out act(w_in x + b_in) + b_out.
std::vector<double> Expert(const model::MoEMLPConfig& config,
                           const model::MoEMLPBlockWeights& block, int64_t e,
                           const std::vector<double>& x) {
  const int64_t d = config.hidden_size;
  const int64_t f = config.expert_ffn_dim;
  const int64_t in_rows = config.expert_in_rows();
  const bool gated = kernels::IsGated(config.activation);
  const DType dtype = block.shape.weight_dtype;
  std::vector<double> h(f);
  for (int64_t j = 0; j < f; ++j) {
    double gate = block.b_in[e * in_rows + j];
    double up = gated ? block.b_in[e * in_rows + f + j] : 0.0;
    for (int64_t c = 0; c < d; ++c) {
      gate += ExpertWeight(block.w_in, dtype, (e * in_rows + j) * d + c) * x[c];
      if (gated) up += ExpertWeight(block.w_in, dtype, (e * in_rows + f + j) * d + c) * x[c];
    }
    h[j] = Activate(config.activation, gate, up);
  }
  std::vector<double> y(d);
  for (int64_t r = 0; r < d; ++r) {
    double sum = block.b_out[e * d + r];
    for (int64_t j = 0; j < f; ++j)
      sum += ExpertWeight(block.w_out, dtype, (e * d + r) * f + j) * h[j];
    y[r] = sum;
  }
  return y;
}

}  // namespace

absl::Status MoEMLPReferenceForward(const model::MoEMLPConfig& config,
                                    const model::MoEMLPWeights& weights, const float* input,
                                    int64_t num_rows, const ModelRunOutputs& outputs,
                                    std::vector<double>* routing_margins) {
  if (num_rows < 0 || (num_rows > 0 && (input == nullptr || outputs.output == nullptr))) {
    return absl::InvalidArgumentError("MoEMLP reference: bad arguments");
  }
  const int64_t d = config.hidden_size;
  const int64_t num_experts = config.num_experts;
  const int64_t num_blocks = config.num_blocks;
  const int k = config.top_k;
  if (routing_margins != nullptr) routing_margins->assign(num_rows * num_blocks, 0.0);
  std::vector<int64_t> counts(num_blocks * num_experts, 0);

  for (int64_t row = 0; row < num_rows; ++row) {
    std::vector<double> x(input + row * config.input_dim, input + (row + 1) * config.input_dim);
    std::vector<double> h = Linear(weights.input_proj, x);
    for (int64_t b = 0; b < num_blocks; ++b) {
      const model::MoEMLPBlockWeights& block = weights.blocks[b];
      const std::vector<double> normed = LayerNorm(block.norm, config.layer_norm_eps, h);
      std::vector<double> scores(num_experts);
      for (int64_t e = 0; e < num_experts; ++e) {
        double logit = 0.0;
        for (int64_t c = 0; c < d; ++c) logit += block.router_weight[e * d + c] * normed[c];
        scores[e] = logit;
      }
      if (config.router_scoring == kernels::ScoringFunc::kSoftmax) {
        const double max = *std::max_element(scores.begin(), scores.end());
        double total = 0.0;
        for (double& s : scores) total += s = std::exp(s - max);
        for (double& s : scores) s /= total;
      } else {
        for (double& s : scores) s = 1.0 / (1.0 + std::exp(-s));
      }
      // Experts by descending score, ties to the lower index.
      std::vector<int64_t> order(num_experts);
      for (int64_t e = 0; e < num_experts; ++e) order[e] = e;
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t c) { return scores[a] > scores[c]; });
      if (routing_margins != nullptr) {
        double margin = std::numeric_limits<double>::infinity();
        for (int s = 0; s < k && s + 1 < num_experts; ++s) {
          margin = std::min(margin, scores[order[s]] - scores[order[s + 1]]);
        }
        (*routing_margins)[row * num_blocks + b] = margin;
      }
      double selected_sum = 0.0;
      for (int s = 0; s < k; ++s) selected_sum += scores[order[s]];

      std::vector<double> moe(d, 0.0);
      for (int s = 0; s < k; ++s) {
        const int64_t e = order[s];
        double weight = scores[e];
        if (config.normalize_top_k && selected_sum > 0.0) weight /= selected_sum;
        const int64_t slot = (row * num_blocks + b) * k + s;
        if (outputs.topk_ids != nullptr) outputs.topk_ids[slot] = static_cast<int32_t>(e);
        if (outputs.topk_weights != nullptr)
          outputs.topk_weights[slot] = static_cast<float>(weight);
        ++counts[b * num_experts + e];
        const std::vector<double> y = Expert(config, block, e, normed);
        for (int64_t c = 0; c < d; ++c) moe[c] += weight * y[c];
      }
      for (int64_t c = 0; c < d; ++c) h[c] += moe[c];
    }
    const std::vector<double> out =
        Linear(weights.output_proj, LayerNorm(weights.final_norm, config.layer_norm_eps, h));
    for (int64_t o = 0; o < config.output_dim; ++o) {
      outputs.output[row * config.output_dim + o] = static_cast<float>(out[o]);
    }
  }
  if (outputs.expert_token_counts != nullptr) {
    std::copy(counts.begin(), counts.end(), outputs.expert_token_counts);
  }
  return absl::OkStatus();
}

}  // namespace moe::engine
