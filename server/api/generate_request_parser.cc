#include "server/api/generate_request_parser.h"

#include <algorithm>
#include <cmath>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"

namespace moe::api {
namespace {

absl::Status CheckTokenIds(const google::protobuf::RepeatedField<int32_t>& ids, const char* field,
                           int64_t vocab_size) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, "[", i, "] = ", ids[i], " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

// Proto3 zero means "unset" for top_p and repetition_penalty.
absl::StatusOr<engine::SamplingParams> ParseSampling(const moe::v1::SamplingOptions& options,
                                                     int64_t vocab_size) {
  engine::SamplingParams params;
  params.temperature = options.temperature();
  params.top_k = options.top_k();
  params.top_p = options.top_p() == 0.0f ? 1.0f : options.top_p();
  params.repetition_penalty =
      options.repetition_penalty() == 0.0f ? 1.0f : options.repetition_penalty();
  params.seed = options.has_seed() ? options.seed() : absl::Uniform<uint64_t>(absl::BitGen());
  if (absl::Status status = engine::ValidateSamplingParams(params, vocab_size); !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: ", status.message()));
  }
  return params;
}

// The prompt's token ids: given, or prompt_text encoded (BOS first).
absl::StatusOr<std::vector<int32_t>> PromptIds(const moe::v1::GenerateRequest& request,
                                               const GenerationLimits& limits) {
  if (request.prompt_text().empty()) {
    if (request.prompt_token_ids_size() == 0) {
      return absl::InvalidArgumentError(
          "prompt_token_ids is empty: a prompt needs at least one token");
    }
    if (absl::Status status =
            CheckTokenIds(request.prompt_token_ids(), "prompt_token_ids", limits.vocab_size);
        !status.ok()) {
      return status;
    }
    return std::vector<int32_t>(request.prompt_token_ids().begin(),
                                request.prompt_token_ids().end());
  }
  if (request.prompt_token_ids_size() > 0) {
    return absl::InvalidArgumentError("give prompt_token_ids or prompt_text, not both");
  }
  if (limits.tokenizer == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", limits.model_name,
        "' has no tokenizer (no tokenizer.model in its checkpoint): send prompt_token_ids"));
  }
  // Bounded before encoding: a token is at least one byte.
  if (static_cast<int64_t>(request.prompt_text().size()) > 16 * limits.max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat("prompt_text has ", request.prompt_text().size(),
                                                   " bytes, far beyond this model's ",
                                                   limits.max_model_len, " tokens"));
  }
  absl::StatusOr<std::vector<int32_t>> encoded = limits.tokenizer->Encode(request.prompt_text());
  if (!encoded.ok()) return encoded.status();
  std::vector<int32_t> ids;
  // A checkpoint's bos_token_id outside its vocabulary (configs only bound it) is left out: as
  // a prompt id it would fail the whole forward pass this sequence shares with others.
  if (limits.bos_token_id >= 0 && limits.bos_token_id < limits.vocab_size) {
    ids.push_back(static_cast<int32_t>(limits.bos_token_id));
  }
  ids.insert(ids.end(), encoded->begin(), encoded->end());
  if (ids.empty()) {
    return absl::InvalidArgumentError("prompt_text encodes to no token at all");
  }
  return ids;
}

}  // namespace

absl::StatusOr<std::unique_ptr<scheduler::GenerationRequest>> ParseGenerateRequest(
    const moe::v1::GenerateRequest& request, const GenerationLimits& limits) {
  absl::StatusOr<std::vector<int32_t>> prompt_ids = PromptIds(request, limits);
  if (!prompt_ids.ok()) return prompt_ids.status();
  const int64_t prompt = static_cast<int64_t>(prompt_ids->size());
  if (prompt >= limits.max_model_len) {
    return absl::InvalidArgumentError(
        absl::StrCat(request.prompt_text().empty() ? "prompt_token_ids" : "prompt_text", " has ",
                     prompt, " tokens; this model takes at most ", limits.max_model_len - 1,
                     " so that one can be generated"));
  }
  if (request.max_new_tokens() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be 1 or more, got ", request.max_new_tokens()));
  }
  const int64_t room = limits.max_model_len - prompt;
  int64_t max_new = request.max_new_tokens();
  if (max_new == 0) {
    max_new = std::min<int64_t>(kDefaultMaxNewTokens, room);
  } else if (max_new > room) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", prompt, " tokens) plus max_new_tokens (", max_new, ") is ", prompt + max_new,
        " tokens, beyond this model's maximum of ", limits.max_model_len));
  }
  if (request.stop_token_ids_size() > kMaxStopTokenIds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stop_token_ids has ", request.stop_token_ids_size(), " ids; at most ", kMaxStopTokenIds));
  }
  if (absl::Status status =
          CheckTokenIds(request.stop_token_ids(), "stop_token_ids", limits.vocab_size);
      !status.ok()) {
    return status;
  }
  absl::StatusOr<engine::SamplingParams> sampling =
      ParseSampling(request.sampling(), limits.vocab_size);
  if (!sampling.ok()) return sampling.status();

  auto parsed = std::make_unique<scheduler::GenerationRequest>();
  parsed->prompt = std::move(*prompt_ids);
  parsed->max_new_tokens = max_new;
  parsed->sampling = *sampling;
  parsed->stop_token_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  if (!request.ignore_eos()) {
    for (int32_t eos : limits.eos_token_ids) {
      if (std::find(parsed->stop_token_ids.begin(), parsed->stop_token_ids.end(), eos) ==
          parsed->stop_token_ids.end()) {
        parsed->stop_token_ids.push_back(eos);
      }
    }
  }
  parsed->logprobs = request.logprobs();
  return parsed;
}

}  // namespace moe::api
