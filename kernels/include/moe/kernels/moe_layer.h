// The MoE layer's description shared by every backend: weights in the internal layout, routing
// configuration, and where the forward pass writes its results.
//
// Internal layout (row-major, nn.Linear's [out, in] convention, experts packed expert-major so
// one grouped GEMM walks them with a fixed stride):
//   router_weight  [E, d]            float32 always (routing must select the same experts as
//                                    the reference; widening bf16/f16 router weights is exact)
//   router_bias    [E]               float32, optional: added to the scores for *selection* only
//                                    (DeepSeek-V3 correction bias); the combine weights are the
//                                    unbiased scores
//   w_in           [E, in_rows, d]   in_rows = 2f for gated activations (rows [0, f) are the gate
//                                    projection, rows [f, 2f) the up projection), f otherwise
//   w_out          [E, d, f]         down projection
//   b_in, b_out    [E, in_rows], [E, d]  float32, optional (MoEMLP experts carry biases)
//   shared_w_in    [2fs, d] or [fs, d] and shared_w_out [d, fs]: an always-on shared expert
//   shared_gate    [d]               float32, optional: the shared expert's output is scaled by
//                                    sigmoid(shared_gate . x) (Qwen2-MoE)
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "moe/kernels/dtype.h"

namespace moe::kernels {

enum class Activation : uint8_t {
  kSwiGLU,  // silu(gate) * up, gated: in_rows = 2f
  kGeGLU,   // gelu_tanh(gate) * up, gated: in_rows = 2f
  kReLU,    // relu(x), in_rows = f
  kGELU,    // gelu (erf form), in_rows = f
};

// Lower-case name for logs, test traces and benchmark output ("swiglu", ...).
inline const char* ActivationName(Activation activation) {
  switch (activation) {
    case Activation::kSwiGLU:
      return "swiglu";
    case Activation::kGeGLU:
      return "geglu";
    case Activation::kReLU:
      return "relu";
    case Activation::kGELU:
      return "gelu";
  }
  return "unknown";
}

inline bool IsGated(Activation activation) {
  return activation == Activation::kSwiGLU || activation == Activation::kGeGLU;
}

enum class ScoringFunc : uint8_t {
  kSoftmax,  // softmax over all E router logits, then top-k (Mixtral, OLMoE, Qwen)
  kSigmoid,  // sigmoid per expert (+ optional correction bias for selection), then top-k
};

struct RouterConfig {
  int top_k = 2;
  ScoringFunc scoring = ScoringFunc::kSoftmax;
  // Divide the k selected weights by their sum (Mixtral; `norm_topk_prob` in OLMoE/Qwen).
  bool renormalize = false;
  // Multiplies every combine weight (DeepSeek's routed_scaling_factor); 1 for the others.
  float routed_scaling_factor = 1.0f;
  // Switch-Transformer capacity: each expert takes at most ceil(capacity_factor * T * k / E)
  // assignments, in token order; later assignments are dropped (their weight contributes
  // nothing; the token keeps its residual). <= 0 disables the limit (the default: inference
  // routing is exact).
  double capacity_factor = 0.0;
};

// Non-owning view of one MoE layer's weights. Pointers are host pointers for the CPU backend
// and device pointers for the CUDA backend.
struct MoELayerWeightsView {
  int64_t hidden_size = 0;  // d
  int64_t ffn_size = 0;     // f, per routed expert
  int64_t num_experts = 0;  // E
  Activation activation = Activation::kSwiGLU;
  DType weight_dtype = DType::kF32;  // of w_in, w_out, shared_w_in, shared_w_out

  const float* router_weight = nullptr;  // [E, d]
  const float* router_bias = nullptr;    // [E] or null
  const void* w_in = nullptr;            // [E, in_rows, d]
  const void* w_out = nullptr;           // [E, d, f]
  const float* b_in = nullptr;           // [E, in_rows] or null
  const float* b_out = nullptr;          // [E, d] or null

  int64_t shared_ffn_size = 0;         // fs; 0 = no shared expert
  const void* shared_w_in = nullptr;   // [in_rows(fs), d]
  const void* shared_w_out = nullptr;  // [d, fs]
  const float* shared_gate = nullptr;  // [d] or null (then the shared expert is not gated)

  int64_t in_rows() const { return IsGated(activation) ? 2 * ffn_size : ffn_size; }
  int64_t shared_in_rows() const {
    return IsGated(activation) ? 2 * shared_ffn_size : shared_ffn_size;
  }
};

// Where one forward pass writes. `output` is required when T > 0; every other pointer may be
// null.
// Host pointers for the CPU backend.
struct MoELayerOutputs {
  float* output = nullptr;                 // [T, d]  the MoE block's output (no residual add)
  float* router_logits = nullptr;          // [T, E]
  int32_t* topk_ids = nullptr;             // [T, k]  highest score first, ties -> lower index
  float* topk_weights = nullptr;           // [T, k]  combine weights (after renormalisation)
  int64_t* expert_token_counts = nullptr;  // [E]  assignments each expert computed
  int64_t* dropped_assignments = nullptr;  // [1]  assignments dropped by the capacity limit
  // [E] seconds each routed expert's computation took in this pass, or null. Non-null turns the
  // pass into a profiling pass: the experts run one after another, each still using every
  // thread (CPU) or the whole device (CUDA), timed from its first weight GEMM to its last output
  // row by the steady clock (CPU, on one thread between barriers) or by a CUDA event pair around
  // its work on the stream. Routing, the gather, the combine and the shared expert are in no
  // expert's time; experts that computed no row (expert_token_counts[e] == 0) get 0. The output
  // is the same as without it (bit for bit on the CPU; on CUDA, that of a kPerExpert pass). A
  // profiling pass can be slower than a normal one (experts no longer overlap, which costs where
  // one expert's tasks cannot keep every core or the device busy; CUDA also waits on the device
  // once more), so callers sample it. Filled by the fast paths only
  // (MoEForwardCpu, CudaMoELayer::Forward / ForwardHost); MoEForwardReference and the naive
  // loops leave it untouched.
  double* expert_seconds = nullptr;
};

// Shared validation of a layer description and a forward call's arguments, used by every
// backend: INVALID_ARGUMENT naming the offending value.
absl::Status ValidateMoELayer(const MoELayerWeightsView& weights, const RouterConfig& router);
absl::Status ValidateMoEForward(const MoELayerWeightsView& weights, const RouterConfig& router,
                                int64_t num_tokens, const MoELayerOutputs& outputs);

// Capacity per expert for `num_tokens` tokens under `router` (INT64_MAX when unlimited).
int64_t ExpertCapacity(const RouterConfig& router, int64_t num_tokens, int64_t num_experts);

// FLOPs of one forward pass over T tokens (router GEMM + expert GEMMs + shared expert, 2 FLOPs
// per MAC), counting all T*k assignments (the capacity limit may drop some).
double MoEForwardFlops(const MoELayerWeightsView& weights, int64_t num_tokens, int top_k);

}  // namespace moe::kernels
