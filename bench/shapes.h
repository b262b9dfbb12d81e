// The MoE layer shapes moe-bench knows by name, and the token counts it runs them at.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace moe::bench {

// One MoE layer's dimensions. Every named shape uses SwiGLU experts (in_rows = 2f) and softmax
// routing over all experts, as the models they come from do.
struct MoEShape {
  std::string name;     // "mixtral-8x7b", or "custom" for a shape given by flags
  int64_t hidden = 0;   // d
  int64_t ffn = 0;      // f, per expert
  int64_t experts = 0;  // E
  int top_k = 0;        // k
  bool renormalize = false;
};

// Mixtral-8x7B, Qwen3-30B-A3B and OLMoE-1B-7B, in that order.
const std::vector<MoEShape>& NamedShapes();

// The named shape with this name (case-insensitive), or nullopt.
std::optional<MoEShape> FindNamedShape(absl::string_view name);

// Comma-separated names of every named shape, for help texts and error messages.
std::string NamedShapeList();

// Token counts of the full sweep, and the subset a default CPU run uses (T = 8192 is skipped:
// one forward pass of the named shapes takes 3-30 s on a 2-core CPU).
inline constexpr int64_t kSweepTokens[] = {1, 16, 128, 1024, 8192};
inline constexpr int64_t kDefaultCpuTokens[] = {1, 16, 128, 1024};

}  // namespace moe::bench
