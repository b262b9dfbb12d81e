// Router scores + top-k: one warp per token. The warp computes the softmax statistics, keeps
// the selection keys in shared memory, and picks the k best with k warp-wide arg-max passes
// under a strict total order (key descending, NaN last, index ascending), each pass taking the
// best key ranked after the previous pick. Deterministic: the shuffle butterfly reduces a
// total order, so every lane agrees and the result does not depend on scheduling.
#include <algorithm>
#include <cmath>

#include "compute_types.cuh"
#include "cuda_check.cuh"
#include "router_topk.cuh"

namespace moe::kernels::cuda_internal {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxSharedBytes = 48 * 1024;
constexpr int kMaxWarpsPerBlock = 8;

// "a ranks before b" (the CPU reference's order).
__device__ __forceinline__ bool RanksBefore(float key_a, int a, float key_b, int b) {
  const bool a_nan = isnan(key_a);
  const bool b_nan = isnan(key_b);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && key_a != key_b) return key_a > key_b;
  return a < b;
}

// Candidate x beats y; index < 0 means "no candidate" and loses to everything.
__device__ __forceinline__ bool Beats(float key_x, int x, float key_y, int y) {
  if (x < 0) return false;
  if (y < 0) return true;
  return RanksBefore(key_x, x, key_y, y);
}

__global__ void RouterTopKKernel(RouterTopKParams p) {
  extern __shared__ float shared_keys[];  // [warps_per_block, E]
  const int warps_per_block = blockDim.x / kWarp;
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int num_experts = p.num_experts;
  const int k = p.router.top_k;
  const bool softmax = p.router.scoring == ScoringFunc::kSoftmax;
  // Softmax is monotonic in the logits: rank by logit unless a bias shifts the scores.
  const bool rank_by_logit = softmax && p.bias == nullptr;
  float* keys = shared_keys + static_cast<int64_t>(warp) * num_experts;

  for (int64_t t = static_cast<int64_t>(blockIdx.x) * warps_per_block + warp; t < p.num_tokens;
       t += static_cast<int64_t>(gridDim.x) * warps_per_block) {
    const float* logits = p.logits + t * num_experts;  // [E]
    float max_logit = -INFINITY;
    float sum = 0.0f;
    // > 0 when the row holds +inf logits: the softmax limit gives each of them this share and
    // every other expert 0 (exp(inf - inf) would be NaN), as on the CPU.
    float infinite_share = 0.0f;
    if (softmax) {
      for (int e = lane; e < num_experts; e += kWarp) max_logit = fmaxf(max_logit, logits[e]);
      for (int offset = kWarp / 2; offset > 0; offset /= 2) {
        max_logit = fmaxf(max_logit, __shfl_xor_sync(0xffffffffu, max_logit, offset));
      }
      if (max_logit == INFINITY) {  // warp-uniform: every lane holds the reduced maximum
        int infinite = 0;
        for (int e = lane; e < num_experts; e += kWarp) infinite += logits[e] == INFINITY ? 1 : 0;
        for (int offset = kWarp / 2; offset > 0; offset /= 2) {
          infinite += __shfl_xor_sync(0xffffffffu, infinite, offset);
        }
        infinite_share = 1.0f / static_cast<float>(infinite);
      } else {
        for (int e = lane; e < num_experts; e += kWarp) sum += expf(logits[e] - max_logit);
        for (int offset = kWarp / 2; offset > 0; offset /= 2) {
          sum += __shfl_xor_sync(0xffffffffu, sum, offset);
        }
      }
    }
    auto score = [&](int e) -> float {
      if (!softmax) return 1.0f / (1.0f + expf(-logits[e]));
      if (infinite_share > 0.0f) return logits[e] == INFINITY ? infinite_share : 0.0f;
      return expf(logits[e] - max_logit) / sum;
    };
    for (int e = lane; e < num_experts; e += kWarp) {
      keys[e] = rank_by_logit ? logits[e] : score(e) + (p.bias != nullptr ? p.bias[e] : 0.0f);
    }
    __syncwarp();

    float prev_key = 0.0f;
    int prev = -1;
    float selected_sum = 0.0f;
    int32_t* ids = p.topk_ids + t * k;
    float* weights = p.topk_weights + t * k;
    for (int s = 0; s < k; ++s) {
      float best_key = 0.0f;
      int best = -1;
      for (int e = lane; e < num_experts; e += kWarp) {
        const float key = keys[e];
        if (prev >= 0 && !RanksBefore(prev_key, prev, key, e)) continue;  // already taken
        if (Beats(key, e, best_key, best)) {
          best_key = key;
          best = e;
        }
      }
      for (int offset = kWarp / 2; offset > 0; offset /= 2) {
        const float other_key = __shfl_xor_sync(0xffffffffu, best_key, offset);
        const int other = __shfl_xor_sync(0xffffffffu, best, offset);
        if (Beats(other_key, other, best_key, best)) {
          best_key = other_key;
          best = other;
        }
      }
      prev_key = best_key;
      prev = best;
      if (lane == 0) {
        const float weight = score(best);
        ids[s] = best;
        weights[s] = weight;
        selected_sum += weight;
      }
    }
    if (lane == 0 && (p.router.renormalize || p.router.routed_scaling_factor != 1.0f)) {
      // Sigmoid scores can all underflow to 0: then there is nothing to renormalise, and
      // dividing would turn the weights into NaN (as on the CPU).
      const float scale = p.router.renormalize && selected_sum > 0.0f
                              ? p.router.routed_scaling_factor / selected_sum
                              : p.router.routed_scaling_factor;
      for (int s = 0; s < k; ++s) weights[s] *= scale;
    }
    __syncwarp();  // keys are rewritten for the next token
  }
}

}  // namespace

// Bytes: T*E*4 logits read (twice for softmax, L1-resident), E*4 bias, T*k*8 written.
// FLOPs: ~T*E*(3 + k) (exp, compare per pass); latency-bound for small E.
absl::Status LaunchRouterTopK(cudaStream_t stream, const RouterTopKParams& p) {
  if (p.num_tokens == 0) return absl::OkStatus();
  if (p.num_experts <= 0 || p.router.top_k < 1 || p.router.top_k > p.num_experts) {
    return absl::InvalidArgumentError("router top-k: need 1 <= k <= experts");
  }
  const int64_t key_bytes = static_cast<int64_t>(p.num_experts) * sizeof(float);
  if (key_bytes > kMaxSharedBytes) {
    return absl::InvalidArgumentError("router top-k: too many experts for shared memory");
  }
  const int warps =
      static_cast<int>(std::clamp<int64_t>(kMaxSharedBytes / key_bytes, 1, kMaxWarpsPerBlock));
  const int64_t blocks = std::min<int64_t>(CeilDiv(p.num_tokens, warps), int64_t{1} << 20);
  RouterTopKKernel<<<static_cast<unsigned>(blocks), warps * kWarp,
                     static_cast<size_t>(warps * key_bytes), stream>>>(p);
  MOE_CUDA_RETURN_IF_LAUNCH_ERROR("RouterTopKKernel");
  return absl::OkStatus();
}

}  // namespace moe::kernels::cuda_internal
