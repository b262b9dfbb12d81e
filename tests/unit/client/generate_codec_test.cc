// GenerateOptions to a moe.v1 GenerateRequest (every field carried, unset ones left at the
// server's defaults), options refused before sending with the field named, and responses
// gathered into chunks and the final summary.
#include "client/src/generate_codec.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace moe::client {
namespace {

using ::moe::testing::IsOk;
using ::moe::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ClientGenerateCodec, CarriesEveryOption) {
  const GenerateOptions options{.max_new_tokens = 12,
                                .temperature = 0.7f,
                                .top_k = 40,
                                .top_p = 0.9f,
                                .repetition_penalty = 1.1f,
                                .seed = 99,
                                .stop_token_ids = {2, 13},
                                .ignore_eos = true,
                                .logprobs = true};
  auto request = EncodeGenerateRequest("lm", {1, 306, 4658}, options);
  ASSERT_THAT(request, IsOk());
  EXPECT_EQ(request->model(), "lm");
  EXPECT_THAT(request->prompt_token_ids(), ElementsAre(1, 306, 4658));
  EXPECT_EQ(request->max_new_tokens(), 12);
  EXPECT_FLOAT_EQ(request->sampling().temperature(), 0.7f);
  EXPECT_EQ(request->sampling().top_k(), 40);
  EXPECT_FLOAT_EQ(request->sampling().top_p(), 0.9f);
  EXPECT_FLOAT_EQ(request->sampling().repetition_penalty(), 1.1f);
  ASSERT_TRUE(request->sampling().has_seed());
  EXPECT_EQ(request->sampling().seed(), 99u);
  EXPECT_THAT(request->stop_token_ids(), ElementsAre(2, 13));
  EXPECT_TRUE(request->ignore_eos());
  EXPECT_TRUE(request->logprobs());
}

TEST(ClientGenerateCodec, DefaultsLeaveTheServersDefaults) {
  auto request = EncodeGenerateRequest("lm", {5}, {});
  ASSERT_THAT(request, IsOk());
  EXPECT_EQ(request->max_new_tokens(), 0);
  EXPECT_EQ(request->sampling().temperature(), 0.0f);
  EXPECT_FALSE(request->sampling().has_seed()) << "unset: the server draws one";
  EXPECT_FALSE(request->ignore_eos());
  EXPECT_FALSE(request->logprobs());
}

TEST(ClientGenerateCodec, RefusesBadOptionsNamingTheField) {
  struct Bad {
    std::string model;
    std::vector<int32_t> prompt;
    GenerateOptions options;
    const char* field;
  };
  const std::vector<Bad> bad = {
      {"", {1}, {}, "model"},
      {"lm", {}, {}, "prompt_token_ids is empty"},
      {"lm", {1, -5}, {}, "prompt_token_ids[1]"},
      {"lm", {1}, {.max_new_tokens = -1}, "max_new_tokens"},
      {"lm", {1}, {.temperature = -0.5f}, "temperature"},
      {"lm", {1}, {.temperature = std::nanf("")}, "temperature"},
      {"lm", {1}, {.top_k = -1}, "top_k"},
      {"lm", {1}, {.top_p = 1.5f}, "top_p"},
      {"lm", {1}, {.repetition_penalty = -1}, "repetition_penalty"},
      {"lm", {1}, {.stop_token_ids = std::vector<int32_t>(17, 2)}, "stop_token_ids has 17"},
      {"lm", {1}, {.stop_token_ids = {-2}}, "stop_token_ids[0]"},
      {"lm", {1}, {.timeout = absl::ZeroDuration()}, "timeout"},
  };
  for (const Bad& b : bad) {
    EXPECT_THAT(EncodeGenerateRequest(b.model, b.prompt, b.options),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(b.field)))
        << b.field;
  }
}

TEST(ClientGenerateCodec, GathersChunksAndTheFinalMessage) {
  GenerateResult result;
  GenerateChunk chunk;
  moe::v1::GenerateResponse first;
  first.add_token_ids(7);
  first.add_token_ids(8);
  first.add_logprobs(-0.5f);
  first.add_logprobs(-1.5f);
  MOE_ASSERT_OK(AddGenerateResponse(first, &chunk, &result));
  EXPECT_THAT(chunk.token_ids, ElementsAre(7, 8));
  EXPECT_THAT(chunk.logprobs, ElementsAre(-0.5f, -1.5f));
  EXPECT_EQ(result.finish_reason, FinishReason::kUnspecified);

  moe::v1::GenerateResponse last;
  last.add_token_ids(2);
  last.add_logprobs(-0.25f);
  last.set_finish_reason(moe::v1::FINISH_REASON_STOP);
  last.set_prompt_tokens(4);
  last.set_completion_tokens(3);
  last.set_time_to_first_token_seconds(0.125);
  last.set_preemptions(2);
  MOE_ASSERT_OK(AddGenerateResponse(last, &chunk, &result));
  EXPECT_THAT(chunk.token_ids, ElementsAre(2));
  EXPECT_THAT(result.token_ids, ElementsAre(7, 8, 2));
  EXPECT_THAT(result.logprobs, ElementsAre(-0.5f, -1.5f, -0.25f));
  EXPECT_EQ(result.finish_reason, FinishReason::kStop);
  EXPECT_EQ(result.prompt_tokens, 4);
  EXPECT_EQ(result.completion_tokens, 3);
  EXPECT_EQ(result.server_time_to_first_token, absl::Milliseconds(125));
  EXPECT_EQ(result.preemptions, 2);
  EXPECT_EQ(result.messages, 2);
  EXPECT_EQ(FinishReasonName(result.finish_reason), "stop");
}

TEST(ClientGenerateCodec, LogprobsThatDoNotMatchTheTokensAreAnError) {
  GenerateResult result;
  GenerateChunk chunk;
  moe::v1::GenerateResponse response;
  response.add_token_ids(1);
  response.add_token_ids(2);
  response.add_logprobs(-1);
  EXPECT_THAT(AddGenerateResponse(response, &chunk, &result),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("2 tokens but 1")));
}

}  // namespace
}  // namespace moe::client
