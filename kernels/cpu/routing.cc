// Router scoring and top-k selection on the CPU.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "moe/kernels/cpu_routing.h"

namespace moe::kernels {
namespace {

// Strict weak order "a ranks before b": larger key first, NaN after every number, equal keys
// (and two NaNs) by lower expert index.
struct RanksBefore {
  const float* keys;
  bool operator()(int32_t a, int32_t b) const {
    const float ka = keys[a];
    const float kb = keys[b];
    const bool a_nan = std::isnan(ka);
    const bool b_nan = std::isnan(kb);
    if (a_nan != b_nan) return b_nan;
    if (!a_nan && ka != kb) return ka > kb;
    return a < b;
  }
};

void RouteOneToken(const float* logits, const float* bias, int64_t num_experts,
                   const RouterConfig& router, std::vector<float>& scores, std::vector<float>& keys,
                   std::vector<int32_t>& order, int32_t* ids, float* weights) {
  const int k = router.top_k;
  if (router.scoring == ScoringFunc::kSoftmax) {
    float max_logit = -INFINITY;
    for (int64_t e = 0; e < num_experts; ++e) {
      if (logits[e] > max_logit) max_logit = logits[e];
    }
    if (max_logit == INFINITY) {
      // exp(inf - inf) is NaN; the limit of softmax gives the +inf experts equal shares.
      int64_t infinite = 0;
      for (int64_t e = 0; e < num_experts; ++e) infinite += logits[e] == INFINITY ? 1 : 0;
      for (int64_t e = 0; e < num_experts; ++e) {
        scores[e] = logits[e] == INFINITY ? 1.0f / static_cast<float>(infinite) : 0.0f;
      }
    } else {
      float sum = 0.0f;
      for (int64_t e = 0; e < num_experts; ++e) {
        scores[e] = std::exp(logits[e] - max_logit);
        sum += scores[e];
      }
      for (int64_t e = 0; e < num_experts; ++e) scores[e] /= sum;
    }
  } else {
    for (int64_t e = 0; e < num_experts; ++e) scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
  }
  // Softmax is monotonic in the logits, so ranking by logit selects the same experts while
  // staying exact where two probabilities round to the same float (and where a logit is +inf).
  const float* rank_keys = logits;
  if (router.scoring == ScoringFunc::kSigmoid || bias != nullptr) {
    for (int64_t e = 0; e < num_experts; ++e) {
      keys[e] = scores[e] + (bias != nullptr ? bias[e] : 0.0f);
    }
    rank_keys = keys.data();
  }
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), RanksBefore{rank_keys});

  float selected_sum = 0.0f;
  for (int s = 0; s < k; ++s) {
    ids[s] = order[s];
    weights[s] = scores[order[s]];
    selected_sum += weights[s];
  }
  // Sigmoid scores can all underflow to 0: then there is nothing to renormalise, and dividing
  // would turn the weights into NaN.
  const float scale = router.renormalize && selected_sum > 0.0f
                          ? router.routed_scaling_factor / selected_sum
                          : router.routed_scaling_factor;
  if (router.renormalize || router.routed_scaling_factor != 1.0f) {
    for (int s = 0; s < k; ++s) weights[s] *= scale;
  }
}

}  // namespace

void RouteTopKCpu(const float* logits, const float* bias, int64_t num_tokens, int64_t num_experts,
                  const RouterConfig& router, int32_t* topk_ids, float* topk_weights) {
  const int k = router.top_k;
#pragma omp parallel if (num_tokens * num_experts > 32768)
  {
    std::vector<float> scores(num_experts);
    std::vector<float> keys(num_experts);
    std::vector<int32_t> order(num_experts);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < num_tokens; ++t) {
      RouteOneToken(logits + t * num_experts, bias, num_experts, router, scores, keys, order,
                    topk_ids + t * k, topk_weights + t * k);
    }
  }
}

}  // namespace moe::kernels
