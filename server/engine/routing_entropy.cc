#include "server/engine/routing_entropy.h"

#include <algorithm>
#include <cmath>

namespace moe::engine {
namespace {

// H(softmax(z)) = log(sum_j e^(z_j - m)) - sum_j p_j (z_j - m), with m = max z: one exp per
// expert, no log of tiny probabilities.
double SoftmaxEntropy(const float* logits, int64_t num_experts) {
  const float largest = *std::max_element(logits, logits + num_experts);
  double partition = 0.0;
  double weighted = 0.0;
  for (int64_t e = 0; e < num_experts; ++e) {
    const double shifted = static_cast<double>(logits[e]) - largest;
    const double w = std::exp(shifted);
    partition += w;
    weighted += w * shifted;
  }
  return std::log(partition) - weighted / partition;
}

double SigmoidEntropy(const float* logits, int64_t num_experts) {
  double total = 0.0;
  for (int64_t e = 0; e < num_experts; ++e) total += 1.0 / (1.0 + std::exp(-logits[e]));
  double entropy = 0.0;
  for (int64_t e = 0; e < num_experts; ++e) {
    const double p = 1.0 / (1.0 + std::exp(-logits[e])) / total;
    if (p > 0.0) entropy -= p * std::log(p);
  }
  return entropy;
}

}  // namespace

double GateEntropySumNats(const float* router_logits, int64_t rows, int64_t num_experts,
                          kernels::ScoringFunc scoring) {
  if (router_logits == nullptr || rows <= 0 || num_experts <= 0) return 0.0;
  double sum = 0.0;
  for (int64_t row = 0; row < rows; ++row) {
    const float* logits = router_logits + row * num_experts;
    sum += scoring == kernels::ScoringFunc::kSoftmax ? SoftmaxEntropy(logits, num_experts)
                                                     : SigmoidEntropy(logits, num_experts);
  }
  return sum;
}

}  // namespace moe::engine
