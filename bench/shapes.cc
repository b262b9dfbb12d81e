// Named MoE layer shapes, taken from the models' Hugging Face configs.
#include "bench/shapes.h"

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"

namespace moe::bench {

const std::vector<MoEShape>& NamedShapes() {
  static const auto* const kShapes = new std::vector<MoEShape>{
      // hidden_size, intermediate_size, num_local_experts, num_experts_per_tok
      {.name = "mixtral-8x7b",
       .hidden = 4096,
       .ffn = 14336,
       .experts = 8,
       .top_k = 2,
       .renormalize = true},
      // hidden_size, moe_intermediate_size, num_experts, num_experts_per_tok, norm_topk_prob
      {.name = "qwen3-30b-a3b",
       .hidden = 2048,
       .ffn = 768,
       .experts = 128,
       .top_k = 8,
       .renormalize = true},
      // hidden_size, intermediate_size, num_experts, num_experts_per_tok, norm_topk_prob=false
      {.name = "olmoe-1b-7b",
       .hidden = 2048,
       .ffn = 1024,
       .experts = 64,
       .top_k = 8,
       .renormalize = false},
  };
  return *kShapes;
}

std::optional<MoEShape> FindNamedShape(absl::string_view name) {
  for (const MoEShape& shape : NamedShapes()) {
    if (absl::EqualsIgnoreCase(shape.name, name)) return shape;
  }
  return std::nullopt;
}

std::string NamedShapeList() {
  return absl::StrJoin(NamedShapes(), ",",
                       [](std::string* out, const MoEShape& shape) { out->append(shape.name); });
}

}  // namespace moe::bench
