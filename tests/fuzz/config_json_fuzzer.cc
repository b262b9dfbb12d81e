// libFuzzer target: arbitrary bytes as config.json text, through every config parser: the
// bounded JSON parse (config_json), the Hugging Face families (model_config), the MoEMLP format
// (moe_mlp_config) and IdentifyConfig, which the loader uses to pick between the last two.
//
// Refusals must be INVALID_ARGUMENT with a bounded, printable message naming the file. Accepted
// configs must satisfy the bounds and cross-checks the headers promise, the parsers must agree
// with each other (IdentifyConfig names the kind that parses; no text is both kinds), and a
// MoEMLP config must read back equal from MoEMLPConfigToJson.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/model/config_json.h"
#include "server/model/model_config.h"
#include "server/model/moe_mlp_config.h"
#include "tests/fuzz/fuzz_check.h"

namespace moe::fuzz {
namespace {

using nlohmann::json;

constexpr char kSource[] = "fuzz/config.json";

void CheckRefusedNamingSource(const absl::Status& status) {
  MOE_FUZZ_CHECK_REFUSAL(status, absl::StatusCode::kInvalidArgument);
  MOE_FUZZ_CHECK(absl::StartsWith(status.message(), kSource),
                 "error does not name the file: ", status.ToString());
}

// Nesting depth of `value`, the top-level container counting as one, without recursion.
int Depth(const json& value) {
  int deepest = 0;
  std::vector<std::pair<const json*, int>> stack = {{&value, 0}};
  while (!stack.empty()) {
    const auto [node, depth] = stack.back();
    stack.pop_back();
    if (!node->is_structured()) continue;
    deepest = std::max(deepest, depth + 1);
    for (const json& child : *node) stack.emplace_back(&child, depth + 1);
  }
  return deepest;
}

void CheckModelConfig(const model::ModelConfig& c) {
  MOE_FUZZ_CHECK(!model::ModelFamilyName(c.family).empty());
  MOE_FUZZ_CHECK(c.vocab_size >= 1 && c.hidden_size >= 1 && c.hidden_size <= 65536);
  MOE_FUZZ_CHECK(c.num_layers >= 1 && c.num_layers <= 1024);
  MOE_FUZZ_CHECK(c.num_attention_heads >= 1 && c.num_key_value_heads >= 1 &&
                 c.num_attention_heads % c.num_key_value_heads == 0);
  MOE_FUZZ_CHECK(c.head_dim >= 2 && c.head_dim % 2 == 0, "head_dim ", c.head_dim);
  MOE_FUZZ_CHECK(c.num_experts >= 1 && c.num_experts <= 4096);
  MOE_FUZZ_CHECK(c.top_k >= 1 && c.top_k <= c.num_experts, "top_k ", c.top_k);
  MOE_FUZZ_CHECK(c.moe_intermediate_size >= 1);
  MOE_FUZZ_CHECK(c.layer_is_moe.size() == static_cast<size_t>(c.num_layers));
  MOE_FUZZ_CHECK(!c.MoELayerIndices().empty());
  MOE_FUZZ_CHECK(c.dense_intermediate_size >= 0 && c.shared_expert_intermediate_size >= 0);
  MOE_FUZZ_CHECK((c.family == model::ModelFamily::kQwen2Moe) ==
                 (c.shared_expert_intermediate_size > 0));
  MOE_FUZZ_CHECK(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0 && c.rms_norm_eps <= 1);
  MOE_FUZZ_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 0);
  MOE_FUZZ_CHECK(c.max_position_embeddings >= 1);
  const kernels::RouterConfig router = c.router();
  MOE_FUZZ_CHECK(router.top_k == c.top_k);
}

void CheckMoEMLPConfig(const model::MoEMLPConfig& c) {
  MOE_FUZZ_CHECK(c.input_dim >= 1 && c.hidden_size >= 1 && c.output_dim >= 1);
  MOE_FUZZ_CHECK(c.num_blocks >= 1 && c.num_experts >= 1 && c.expert_ffn_dim >= 1);
  MOE_FUZZ_CHECK(c.top_k >= 1 && c.top_k <= c.num_experts, "top_k ", c.top_k);
  MOE_FUZZ_CHECK(c.expert_in_rows() >= c.expert_ffn_dim);
  MOE_FUZZ_CHECK(std::isfinite(c.layer_norm_eps) && c.layer_norm_eps > 0);
  MOE_FUZZ_CHECK(!c.input_name.empty() && !c.output_name.empty() && c.input_name != c.output_name);
  MOE_FUZZ_CHECK(c.output_labels.empty() ||
                 c.output_labels.size() == static_cast<size_t>(c.output_dim));

  // What it writes, it reads back equal.
  const std::string text = model::MoEMLPConfigToJson(c);
  const absl::StatusOr<model::MoEMLPConfig> again = model::ParseMoEMLPConfig(text, kSource);
  MOE_FUZZ_CHECK(again.ok(), "written config refused: ", again.status().ToString(), "\n", text);
  const model::MoEMLPConfig& b = *again;
  MOE_FUZZ_CHECK(c.input_dim == b.input_dim && c.hidden_size == b.hidden_size &&
                     c.output_dim == b.output_dim && c.num_blocks == b.num_blocks &&
                     c.num_experts == b.num_experts && c.top_k == b.top_k &&
                     c.expert_ffn_dim == b.expert_ffn_dim && c.activation == b.activation &&
                     c.router_scoring == b.router_scoring &&
                     c.normalize_top_k == b.normalize_top_k &&
                     c.layer_norm_eps == b.layer_norm_eps && c.input_name == b.input_name &&
                     c.output_name == b.output_name && c.output_labels == b.output_labels &&
                     c.description == b.description,
                 "config differs after writing it back:\n", text);
}

}  // namespace
}  // namespace moe::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  using fuzz::kSource;
  const std::string text(reinterpret_cast<const char*>(data), size);

  // The bounded parse, at the cap the config readers use and at a small one (the first byte
  // picks it, 1 to 8) so that the cap itself is exercised by ordinary inputs.
  const absl::StatusOr<nlohmann::json> root =
      model::ParseBoundedJson(text, kSource, model::kMaxConfigDepth, "fuzz nests");
  if (root.ok()) {
    MOE_FUZZ_CHECK(fuzz::Depth(*root) <= model::kMaxConfigDepth);
    MOE_FUZZ_CHECK(!root->is_discarded());
    const std::string described = model::DescribeJsonValue(*root);
    MOE_FUZZ_CHECK(!described.empty() && described.size() <= 850, described.substr(0, 300));
  } else {
    fuzz::CheckRefusedNamingSource(root.status());
  }
  const int small_cap = size == 0 ? 1 : 1 + data[0] % 8;
  const absl::StatusOr<nlohmann::json> shallow =
      model::ParseBoundedJson(text, kSource, small_cap, "fuzz nests");
  if (shallow.ok()) {
    MOE_FUZZ_CHECK(fuzz::Depth(*shallow) <= small_cap, "depth ", fuzz::Depth(*shallow),
                   " passed cap ", small_cap);
    MOE_FUZZ_CHECK(root.ok() && *root == *shallow, "the cap changed what was parsed");
  } else {
    fuzz::CheckRefusedNamingSource(shallow.status());
    // Refused at the small cap: for depth, or for the same syntax error as at the big one.
    MOE_FUZZ_CHECK(absl::StrContains(shallow.status().message(), "nested more than") ||
                       (!root.ok() && root.status() == shallow.status()),
                   "refused at cap ", small_cap,
                   " for something else: ", shallow.status().ToString());
  }

  const absl::StatusOr<model::ConfigIdentity> identity = model::IdentifyConfig(text, kSource);
  if (!identity.ok()) fuzz::CheckRefusedNamingSource(identity.status());

  const absl::StatusOr<model::ModelConfig> lm = model::ParseModelConfig(text, kSource);
  if (lm.ok()) {
    fuzz::CheckModelConfig(*lm);
    MOE_FUZZ_CHECK(identity.ok() && identity->kind != model::ConfigIdentity::Kind::kUnknown);
  } else {
    fuzz::CheckRefusedNamingSource(lm.status());
    if (!root.ok()) MOE_FUZZ_CHECK(lm.status() == root.status());
  }

  const absl::StatusOr<model::MoEMLPConfig> mlp = model::ParseMoEMLPConfig(text, kSource);
  if (mlp.ok()) {
    fuzz::CheckMoEMLPConfig(*mlp);
    MOE_FUZZ_CHECK(identity.ok() && identity->kind == model::ConfigIdentity::Kind::kMoEMLP);
    MOE_FUZZ_CHECK(!lm.ok(), "text parses as both a MoEMLP and a ", lm->architecture, " config");
  } else {
    fuzz::CheckRefusedNamingSource(mlp.status());
    if (!root.ok()) MOE_FUZZ_CHECK(mlp.status() == root.status());
  }
  return 0;
}
