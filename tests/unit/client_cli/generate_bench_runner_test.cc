// The closed-loop generation load against a fake Client that streams max_new_tokens tokens in
// messages of a set size: exactly --requests counted requests, output tokens that add up to
// completed requests x tokens, prompt and output lengths drawn within their ranges from the
// seed, inter-token samples per token, errors by gRPC code.
#include "client/cli/generate_bench_runner.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace moe::client::cli {
namespace {

using ::moe::testing::IsOk;
using ::moe::testing::StatusIs;
using ::testing::Each;
using ::testing::Ge;
using ::testing::Le;

class FakeGenerateClient : public Client {
 public:
  FakeGenerateClient(int tokens_per_message, int fail_every)
      : tokens_per_message_(tokens_per_message), fail_every_(fail_every) {}

  absl::Status WaitForReady(absl::Duration) override { return absl::OkStatus(); }
  absl::StatusOr<bool> ServerLive() override { return true; }
  absl::StatusOr<bool> ServerReady() override { return true; }
  absl::StatusOr<bool> ModelReady(const std::string&) override { return true; }
  absl::StatusOr<HealthStatus> Health(const std::string&) override {
    return HealthStatus::kServing;
  }
  absl::StatusOr<std::vector<ModelInfo>> ListModels() override { return std::vector<ModelInfo>{}; }
  absl::StatusOr<ModelInfo> DescribeModel(const std::string&) override { return ModelInfo{}; }
  absl::StatusOr<InferResult> Infer(const std::string&, const std::vector<InferInput>&,
                                    const InferOptions&) override {
    return absl::UnimplementedError("fake");
  }
  void InferAsync(const std::string&, const std::vector<InferInput>&, const InferOptions&,
                  absl::AnyInvocable<void(absl::StatusOr<InferResult>)> done) override {
    done(absl::UnimplementedError("fake"));
  }

  absl::StatusOr<GenerateResult> Generate(const std::string&,
                                          const std::vector<int32_t>& prompt_token_ids,
                                          const GenerateOptions& options,
                                          GenerateCallback on_chunk) override {
    int64_t call = 0;
    {
      absl::MutexLock lock(&mu_);
      call = ++calls_;
      prompts_.push_back(prompt_token_ids);
      max_new_.push_back(options.max_new_tokens);
      ignore_eos_ &= options.ignore_eos;
    }
    if (fail_every_ > 0 && call % fail_every_ == 0) {
      return absl::ResourceExhaustedError("Generate: queue is full");
    }
    GenerateResult result;
    absl::SleepFor(absl::Microseconds(200));  // to the first token
    int32_t next = 0;
    while (next < options.max_new_tokens) {
      GenerateChunk chunk;
      for (int i = 0; i < tokens_per_message_ && next < options.max_new_tokens; ++i) {
        chunk.token_ids.push_back(next++);
      }
      if (!on_chunk(chunk)) return absl::CancelledError("stopped");
      result.token_ids.insert(result.token_ids.end(), chunk.token_ids.begin(),
                              chunk.token_ids.end());
      absl::SleepFor(absl::Microseconds(100));
    }
    result.finish_reason = FinishReason::kLength;
    result.prompt_tokens = static_cast<int32_t>(prompt_token_ids.size());
    result.completion_tokens = next;
    result.preemptions = 1;
    return result;
  }

  std::vector<std::vector<int32_t>> prompts() {
    absl::MutexLock lock(&mu_);
    return prompts_;
  }
  std::vector<int32_t> max_new() {
    absl::MutexLock lock(&mu_);
    return max_new_;
  }
  bool all_ignore_eos() {
    absl::MutexLock lock(&mu_);
    return ignore_eos_;
  }

 private:
  const int tokens_per_message_;
  const int fail_every_;
  absl::Mutex mu_;
  int64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::vector<int32_t>> prompts_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> max_new_ ABSL_GUARDED_BY(mu_);
  bool ignore_eos_ ABSL_GUARDED_BY(mu_) = true;
};

GenerateBenchOptions Options(int64_t requests, int concurrency) {
  GenerateBenchOptions options;
  options.model = "lm";
  options.concurrency = concurrency;
  options.requests = requests;
  options.warmup = absl::ZeroDuration();
  options.vocab_size = 50;
  options.prompt_len = {4, 4};
  options.max_new_tokens = {6, 6};
  options.generate.ignore_eos = true;
  options.seed = 7;
  return options;
}

TEST(ClientCliGenerateBench, FixedLengthCountsAddUp) {
  FakeGenerateClient client(/*tokens_per_message=*/1, /*fail_every=*/0);
  auto report = RunGenerateBench({&client, &client}, Options(20, 3));
  ASSERT_THAT(report, IsOk());
  EXPECT_EQ(report->requests_completed, 20);
  EXPECT_EQ(report->requests_failed, 0);
  EXPECT_EQ(report->output_tokens, 20 * 6);
  EXPECT_EQ(report->prompt_tokens, 20 * 4);
  EXPECT_EQ(report->preemptions, 20);
  EXPECT_EQ(report->finish_reasons.at("length"), 20);
  EXPECT_EQ(report->connections, 2);
  EXPECT_EQ(report->ttft_ms.count, 20);
  EXPECT_EQ(report->e2e_ms.count, 20);
  EXPECT_EQ(report->tpot_ms.count, 20);
  EXPECT_EQ(report->itl_ms.count, 20 * 5) << "one sample per token after the first";
  EXPECT_GT(report->ttft_ms.p50, 0);
  EXPECT_LE(report->ttft_ms.p50, report->e2e_ms.p50);
  EXPECT_GT(report->seconds, 0);
  EXPECT_DOUBLE_EQ(report->output_tokens_per_second(), 120 / report->seconds);
  EXPECT_EQ(client.prompts().size(), 20u) << "no request beyond --requests";
  EXPECT_TRUE(client.all_ignore_eos());
  for (const std::vector<int32_t>& prompt : client.prompts()) {
    EXPECT_EQ(prompt.size(), 4u);
    EXPECT_THAT(prompt, Each(::testing::AllOf(Ge(0), Le(49))));
  }
}

TEST(ClientCliGenerateBench, SeveralTokensPerMessageGiveOneItlSamplePerToken) {
  FakeGenerateClient client(/*tokens_per_message=*/3, /*fail_every=*/0);
  GenerateBenchOptions options = Options(5, 1);
  options.max_new_tokens = {7, 7};  // messages of 3, 3, 1
  auto report = RunGenerateBench({&client}, options);
  ASSERT_THAT(report, IsOk());
  EXPECT_EQ(report->output_tokens, 35);
  EXPECT_EQ(report->itl_ms.count, 5 * 4) << "the first message's 3 tokens count towards TTFT";
}

TEST(ClientCliGenerateBench, LengthsAreDrawnWithinTheirRangesFromTheSeed) {
  FakeGenerateClient client(1, 0);
  GenerateBenchOptions options = Options(60, 1);
  options.prompt_len = {1, 5};
  options.max_new_tokens = {2, 9};
  auto report = RunGenerateBench({&client}, options);
  ASSERT_THAT(report, IsOk());
  const std::vector<int32_t> max_new = client.max_new();
  ASSERT_EQ(max_new.size(), 60u);
  EXPECT_THAT(max_new, Each(::testing::AllOf(Ge(2), Le(9))));
  EXPECT_GT(*std::max_element(max_new.begin(), max_new.end()),
            *std::min_element(max_new.begin(), max_new.end()))
      << "mixed lengths";
  EXPECT_EQ(report->output_tokens, std::accumulate(max_new.begin(), max_new.end(), int64_t{0}));
  int64_t prompt_tokens = 0;
  for (const auto& prompt : client.prompts()) {
    EXPECT_GE(prompt.size(), 1u);
    EXPECT_LE(prompt.size(), 5u);
    prompt_tokens += static_cast<int64_t>(prompt.size());
  }
  EXPECT_EQ(report->prompt_tokens, prompt_tokens);

  // The same seed, the same workload.
  FakeGenerateClient again(1, 0);
  ASSERT_THAT(RunGenerateBench({&again}, options), IsOk());
  EXPECT_EQ(again.max_new(), max_new);
  EXPECT_EQ(again.prompts(), client.prompts());
}

TEST(ClientCliGenerateBench, ErrorsAreCountedByCodeNotAsTokens) {
  FakeGenerateClient client(1, /*fail_every=*/4);
  auto report = RunGenerateBench({&client}, Options(20, 1));
  ASSERT_THAT(report, IsOk());
  EXPECT_EQ(report->requests_completed, 15);
  EXPECT_EQ(report->requests_failed, 5);
  EXPECT_EQ(report->errors.at("RESOURCE_EXHAUSTED"), 5);
  EXPECT_EQ(report->error_messages.at("RESOURCE_EXHAUSTED"), "Generate: queue is full");
  EXPECT_EQ(report->output_tokens, 15 * 6);
  EXPECT_EQ(report->e2e_ms.count, 15);
}

TEST(ClientCliGenerateBench, DurationRunsStopStartingRequestsAtTheEnd) {
  FakeGenerateClient client(1, 0);
  GenerateBenchOptions options = Options(0, 2);
  options.duration = absl::Milliseconds(200);
  const absl::Time start = absl::Now();
  auto report = RunGenerateBench({&client}, options);
  ASSERT_THAT(report, IsOk());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_GT(report->requests_completed, 2);
  EXPECT_EQ(report->output_tokens, report->requests_completed * 6);
}

TEST(ClientCliGenerateBench, RefusesBadOptionsNamingTheFlag) {
  FakeGenerateClient client(1, 0);
  auto bad = [&](auto edit, const char* flag) {
    GenerateBenchOptions options = Options(1, 1);
    edit(options);
    EXPECT_THAT(RunGenerateBench({&client}, options),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr(flag)));
  };
  bad([](auto& o) { o.concurrency = 0; }, "--concurrency");
  bad([](auto& o) { o.vocab_size = 0; }, "--vocab-size");
  bad([](auto& o) { o.max_new_tokens = {0, 3}; }, "--max-new-tokens");
  bad([](auto& o) { o.prompt_len = {0, 3}; }, "--prompt-len");
  bad([](auto& o) { o.requests = -1; }, "--requests");
  bad(
      [](auto& o) {
        o.requests = 0;
        o.duration = absl::ZeroDuration();
      },
      "--duration");
  EXPECT_THAT(RunGenerateBench({}, Options(1, 1)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(client.prompts().empty()) << "nothing sent";
}

}  // namespace
}  // namespace moe::client::cli
