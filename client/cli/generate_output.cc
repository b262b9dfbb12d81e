#include "client/cli/generate_output.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace moe::client::cli {
namespace {

double TokensPerSecond(const GenerateResult& result) {
  const double seconds = absl::ToDoubleSeconds(result.total_time);
  return seconds > 0 ? static_cast<double>(result.token_ids.size()) / seconds : 0;
}

}  // namespace

std::string FormatChunk(const GenerateChunk& chunk, bool first) {
  std::string out;
  for (size_t i = 0; i < chunk.token_ids.size(); ++i) {
    if (!first || i > 0) out += ' ';
    absl::StrAppend(&out, chunk.token_ids[i]);
    if (i < chunk.logprobs.size()) absl::StrAppendFormat(&out, ":%.4f", chunk.logprobs[i]);
  }
  return out;
}

std::string FormatSummary(const GenerateResult& result) {
  return absl::StrFormat(
      "finish_reason=%s prompt_tokens=%d completion_tokens=%d ttft_ms=%.2f server_ttft_ms=%.2f "
      "e2e_ms=%.2f tokens_per_second=%.1f preemptions=%d",
      FinishReasonName(result.finish_reason), result.prompt_tokens, result.completion_tokens,
      absl::ToDoubleMilliseconds(result.time_to_first_token),
      absl::ToDoubleMilliseconds(result.server_time_to_first_token),
      absl::ToDoubleMilliseconds(result.total_time), TokensPerSecond(result), result.preemptions);
}

std::string FormatGenerateJson(const std::string& model, const GenerateResult& result,
                               bool logprobs) {
  nlohmann::json out = {
      {"model", model},
      {"token_ids", result.token_ids},
      {"finish_reason", std::string(FinishReasonName(result.finish_reason))},
      {"prompt_tokens", result.prompt_tokens},
      {"completion_tokens", result.completion_tokens},
      {"ttft_ms", absl::ToDoubleMilliseconds(result.time_to_first_token)},
      {"server_ttft_ms", absl::ToDoubleMilliseconds(result.server_time_to_first_token)},
      {"e2e_ms", absl::ToDoubleMilliseconds(result.total_time)},
      {"tokens_per_second", TokensPerSecond(result)},
      {"preemptions", result.preemptions},
      {"messages", result.messages},
  };
  if (logprobs) out["logprobs"] = result.logprobs;
  if (!result.text.empty()) out["text"] = result.text;
  return out.dump();
}

}  // namespace moe::client::cli
