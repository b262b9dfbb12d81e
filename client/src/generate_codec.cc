#include "client/src/generate_codec.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace moe::client {
namespace {

constexpr int kMaxStopTokenIds = 16;  // the server's limit (moe_service.proto)

absl::Status CheckIds(const std::vector<int32_t>& ids, const char* field) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, "[", i, "] = ", ids[i], " is negative: token ids start at 0"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckNonNegative(float value, const char* field) {
  if (!std::isfinite(value) || value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " must be a finite number >= 0, got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateGenerateOptions(const std::string& model,
                                     const std::vector<int32_t>& prompt_token_ids,
                                     const GenerateOptions& options) {
  if (model.empty()) return absl::InvalidArgumentError("the model name is empty");
  if (prompt_token_ids.empty()) {
    return absl::InvalidArgumentError(
        "prompt_token_ids is empty: a prompt needs at least one token");
  }
  if (absl::Status status = CheckIds(prompt_token_ids, "prompt_token_ids"); !status.ok()) {
    return status;
  }
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be 1 or more (0: the server's default), got ",
                     options.max_new_tokens));
  }
  if (absl::Status status = CheckNonNegative(options.temperature, "temperature"); !status.ok()) {
    return status;
  }
  if (options.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be 0 (all tokens) or more, got ", options.top_k));
  }
  if (!(options.top_p >= 0 && options.top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p must be in [0, 1] (0 or 1: off), got ", options.top_p));
  }
  if (absl::Status status = CheckNonNegative(options.repetition_penalty, "repetition_penalty");
      !status.ok()) {
    return status;
  }
  if (static_cast<int>(options.stop_token_ids.size()) > kMaxStopTokenIds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stop_token_ids has ", options.stop_token_ids.size(), " ids; at most ", kMaxStopTokenIds));
  }
  if (absl::Status status = CheckIds(options.stop_token_ids, "stop_token_ids"); !status.ok()) {
    return status;
  }
  if (options.timeout.has_value() && *options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout must be positive, got ", absl::FormatDuration(*options.timeout)));
  }
  return absl::OkStatus();
}

absl::StatusOr<moe::v1::GenerateRequest> EncodeGenerateRequest(
    const std::string& model, const std::vector<int32_t>& prompt_token_ids,
    const GenerateOptions& options) {
  if (absl::Status status = ValidateGenerateOptions(model, prompt_token_ids, options);
      !status.ok()) {
    return status;
  }
  moe::v1::GenerateRequest request;
  request.set_model(model);
  request.mutable_prompt_token_ids()->Add(prompt_token_ids.begin(), prompt_token_ids.end());
  request.set_max_new_tokens(options.max_new_tokens);
  moe::v1::SamplingOptions& sampling = *request.mutable_sampling();
  sampling.set_temperature(options.temperature);
  sampling.set_top_k(options.top_k);
  sampling.set_top_p(options.top_p);
  sampling.set_repetition_penalty(options.repetition_penalty);
  if (options.seed.has_value()) sampling.set_seed(*options.seed);
  request.mutable_stop_token_ids()->Add(options.stop_token_ids.begin(),
                                        options.stop_token_ids.end());
  request.set_ignore_eos(options.ignore_eos);
  request.set_logprobs(options.logprobs);
  return request;
}

FinishReason FinishReasonFromProto(moe::v1::FinishReason reason) {
  switch (reason) {
    case moe::v1::FINISH_REASON_LENGTH:
      return FinishReason::kLength;
    case moe::v1::FINISH_REASON_STOP:
      return FinishReason::kStop;
    default:
      return FinishReason::kUnspecified;
  }
}

absl::Status AddGenerateResponse(const moe::v1::GenerateResponse& response, GenerateChunk* chunk,
                                 GenerateResult* result) {
  if (response.logprobs_size() != 0 && response.logprobs_size() != response.token_ids_size()) {
    return absl::InternalError(absl::StrCat("a message carries ", response.token_ids_size(),
                                            " tokens but ", response.logprobs_size(),
                                            " log-probabilities"));
  }
  chunk->token_ids.assign(response.token_ids().begin(), response.token_ids().end());
  chunk->logprobs.assign(response.logprobs().begin(), response.logprobs().end());
  chunk->text = response.text();
  ++result->messages;
  result->token_ids.insert(result->token_ids.end(), chunk->token_ids.begin(),
                           chunk->token_ids.end());
  result->logprobs.insert(result->logprobs.end(), chunk->logprobs.begin(), chunk->logprobs.end());
  result->text += chunk->text;
  if (response.finish_reason() != moe::v1::FINISH_REASON_UNSPECIFIED) {
    result->finish_reason = FinishReasonFromProto(response.finish_reason());
    result->prompt_tokens = response.prompt_tokens();
    result->completion_tokens = response.completion_tokens();
    result->server_time_to_first_token = absl::Seconds(response.time_to_first_token_seconds());
    result->preemptions = response.preemptions();
  }
  return absl::OkStatus();
}

}  // namespace moe::client
