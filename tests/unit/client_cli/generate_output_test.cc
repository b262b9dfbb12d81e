// What `moe-client generate` and `bench --generate` print: the streamed ids (with
// log-probabilities), the summary line, and the JSON objects' field names that scripts read.
#include "client/cli/generate_output.h"

#include "client/cli/generate_bench_report.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moe::client::cli {
namespace {

using ::testing::HasSubstr;

TEST(ClientCliGenerateOutput, ChunksJoinIntoOneSpaceSeparatedLine) {
  const GenerateChunk a{.token_ids = {5, 17}};
  const GenerateChunk b{.token_ids = {42}};
  EXPECT_EQ(FormatChunk(a, /*first=*/true) + FormatChunk(b, /*first=*/false), "5 17 42");
  const GenerateChunk with_logprobs{.token_ids = {5, 17}, .logprobs = {-0.03125f, -1.25f}};
  EXPECT_EQ(FormatChunk(with_logprobs, true), "5:-0.0312 17:-1.2500");
}

TEST(ClientCliGenerateOutput, SummaryAndJsonCarryTheCountsAndTimes) {
  GenerateResult result;
  result.finish_reason = FinishReason::kStop;
  result.prompt_tokens = 3;
  result.completion_tokens = 4;
  result.token_ids = {9, 8, 7, 2};
  result.logprobs = {-1, -2, -3, -4};
  result.time_to_first_token = absl::Milliseconds(12);
  result.server_time_to_first_token = absl::Milliseconds(10);
  result.total_time = absl::Milliseconds(40);
  result.preemptions = 1;
  const std::string summary = FormatSummary(result);
  for (const char* part :
       {"finish_reason=stop", "prompt_tokens=3", "completion_tokens=4", "ttft_ms=12.00",
        "server_ttft_ms=10.00", "e2e_ms=40.00", "tokens_per_second=100.0", "preemptions=1"}) {
    EXPECT_THAT(summary, HasSubstr(part));
  }
  const nlohmann::json json = nlohmann::json::parse(FormatGenerateJson("lm", result, true));
  EXPECT_EQ(json["model"], "lm");
  EXPECT_EQ(json["token_ids"], nlohmann::json({9, 8, 7, 2}));
  EXPECT_EQ(json["logprobs"].size(), 4u);
  EXPECT_EQ(json["finish_reason"], "stop");
  EXPECT_DOUBLE_EQ(json["tokens_per_second"].get<double>(), 100.0);
  EXPECT_FALSE(nlohmann::json::parse(FormatGenerateJson("lm", result, false)).contains("logprobs"));
}

TEST(ClientCliGenerateBenchReport, JsonHasTheFieldsBenchmarkScriptsRead) {
  GenerateBenchReport report;
  report.seconds = 2;
  report.requests_completed = 10;
  report.output_tokens = 640;
  report.ttft_ms = {.count = 10, .p50 = 1.5, .p90 = 2.5, .p99 = 3.5};
  report.itl_ms = {.count = 630, .p50 = 0.5};
  report.errors = {{"UNAVAILABLE", 2}};
  const nlohmann::json json = nlohmann::json::parse(FormatGenerateJson(report));
  EXPECT_DOUBLE_EQ(json["output_tokens_per_second"].get<double>(), 320);
  EXPECT_DOUBLE_EQ(json["requests_per_second"].get<double>(), 5);
  EXPECT_DOUBLE_EQ(json["ttft_p50_ms"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(json["ttft_p90_ms"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(json["ttft_p99_ms"].get<double>(), 3.5);
  EXPECT_DOUBLE_EQ(json["itl_p50_ms"].get<double>(), 0.5);
  EXPECT_EQ(json["errors"]["UNAVAILABLE"], 2);
  for (const char* field :
       {"requests_completed", "requests_failed", "output_tokens", "prompt_tokens", "itl_p90_ms",
        "itl_p99_ms", "e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms", "tpot_p50_ms", "seconds",
        "concurrency", "max_new_tokens_min", "max_new_tokens_max", "prompt_len_min"}) {
    EXPECT_TRUE(json.contains(field)) << field;
  }
  const std::string text = FormatGenerateText(report);
  EXPECT_THAT(text, HasSubstr("640 output (320.0 tokens/s)"));
  EXPECT_THAT(text, HasSubstr("UNAVAILABLE 2"));
}

}  // namespace
}  // namespace moe::client::cli
