// The C++ client library (moe::client) against the real moe-server: health and readiness, model
// listing and description of the built-in digits model, inference typed and raw in FP32, FP16
// and BF16 classifying the held-out digits as trained, routing outputs, the server's errors
// carried through with their codes and messages, retries against a server that is down,
// deadlines, many InferAsync calls in flight, a bearer token; Generate on every reference
// checkpoint (the fixture's greedy tokens, streamed chunk by chunk), stopped early from its
// callback, and its errors. moe-server has no TLS yet: TLS is
// tested against an in-process server in tests/unit/client/client_tls_test.cc; here only that a
// TLS client cannot talk to the plaintext server.
#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/client/client.h"
#include "server/model/safetensors.h"
#include "tests/integration/async_calls.h"
#include "tests/integration/greedy_reference.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/random.h"
#include "tests/testing/status_matchers.h"

namespace moe::integration {
namespace {

using ::moe::client::Client;
using ::moe::client::ConnectOptions;
using ::moe::client::FinishReason;
using ::moe::client::GenerateChunk;
using ::moe::client::GenerateOptions;
using ::moe::client::GenerateResult;
using ::moe::client::HealthStatus;
using ::moe::client::InferInput;
using ::moe::client::InferResult;
using ::moe::client::OutputTensor;
using ::moe::client::WireType;
using ::moe::testing::IsOk;
using ::moe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using ::testing::StartsWith;

std::unique_ptr<Client> ConnectTo(const std::string& address, ConnectOptions options = {}) {
  options.target = address;
  auto client = Client::Connect(options);
  EXPECT_THAT(client, IsOk());
  return client.ok() ? *std::move(client) : nullptr;
}

InferInput DigitsInput(std::vector<float> values, WireType type = WireType::kFp32,
                       bool raw = true) {
  const auto rows = static_cast<int64_t>(values.size()) / kDigitsWidth;
  return InferInput{.name = "input",
                    .shape = {rows, kDigitsWidth},
                    .values = std::move(values),
                    .wire_type = type,
                    .raw = raw};
}

// models/builtin/heldout.safetensors: features [N, 64] F32 and labels [N] I64.
struct HeldOut {
  int64_t samples = 0;
  std::vector<float> features;
  std::vector<int64_t> labels;
};

absl::StatusOr<HeldOut> ReadHeldOut() {
  auto file = model::SafetensorsFile::Open(SourceDir() + "/models/builtin/heldout.safetensors");
  if (!file.ok()) return file.status();
  const model::TensorInfo* features = (*file)->Find("features");
  const model::TensorInfo* labels = (*file)->Find("labels");
  if (features == nullptr || labels == nullptr || features->dtype != kernels::DType::kF32 ||
      labels->dtype != kernels::DType::kI64 || features->shape.size() != 2 ||
      features->shape[1] != kDigitsWidth || labels->num_elements != features->shape[0]) {
    return absl::InvalidArgumentError("heldout.safetensors does not hold what the test expects");
  }
  HeldOut held_out;
  held_out.samples = features->shape[0];
  held_out.features.resize(features->num_elements);
  held_out.labels.resize(labels->num_elements);
  std::memcpy(held_out.features.data(), features->data.data(), features->data.size());
  std::memcpy(held_out.labels.data(), labels->data.data(), labels->data.size());
  return held_out;
}

MATCHER_P(IsOkAndHolds, expected, "") {
  if (!arg.ok()) {
    *result_listener << "status: " << arg.status().ToString();
    return false;
  }
  return ::testing::ExplainMatchResult(::testing::Eq(expected), *arg, result_listener);
}

int64_t ArgMax(const std::vector<float>& logits, int64_t row) {
  const float* begin = logits.data() + row * kDigitsOutputs;
  return std::max_element(begin, begin + kDigitsOutputs) - begin;
}

// The built-in model alone, as a fresh machine serves it.
class ClientLibraryTest : public SharedServerTest<ClientLibraryTest> {
 public:
  static std::vector<std::string> ServerArgs() { return {}; }

 protected:
  void SetUp() override {
    SharedServerTest::SetUp();
    if (HasFatalFailure()) return;
    client_ = ConnectTo(server().address());
    ASSERT_NE(client_, nullptr);
  }

  // Every held-out row's logits, in requests of 200 rows.
  std::vector<float> HeldOutLogits(const HeldOut& held_out, WireType type, bool raw) {
    std::vector<float> logits;
    for (int64_t start = 0; start < held_out.samples; start += 200) {
      const int64_t rows = std::min<int64_t>(200, held_out.samples - start);
      std::vector<float> values(held_out.features.begin() + start * kDigitsWidth,
                                held_out.features.begin() + (start + rows) * kDigitsWidth);
      auto result = client_->Infer(kDigits, {DigitsInput(std::move(values), type, raw)});
      EXPECT_THAT(result, IsOk());
      if (!result.ok()) return {};
      const OutputTensor* output = result->Find("logits");
      EXPECT_NE(output, nullptr);
      if (output == nullptr) return {};
      EXPECT_EQ(output->datatype, "FP32");
      EXPECT_THAT(output->shape, ElementsAre(rows, kDigitsOutputs));
      EXPECT_TRUE(result->queue_us.has_value() && result->compute_us.has_value() &&
                  result->batch_rows.has_value())
          << "moe-server's timing parameters";
      logits.insert(logits.end(), output->fp32.begin(), output->fp32.end());
    }
    return logits;
  }

  std::unique_ptr<Client> client_;
};

TEST_F(ClientLibraryTest, ServerIsLiveReadyAndHealthy) {
  MOE_EXPECT_OK(client_->WaitForReady(absl::Seconds(10)));
  EXPECT_THAT(client_->ServerLive(), IsOkAndHolds(true));
  EXPECT_THAT(client_->ServerReady(), IsOkAndHolds(true));
  EXPECT_THAT(client_->ModelReady(kDigits), IsOkAndHolds(true));
  EXPECT_THAT(client_->Health(), IsOkAndHolds(HealthStatus::kServing));
  EXPECT_THAT(client_->Health(kDigits), IsOkAndHolds(HealthStatus::kServing));
  EXPECT_THAT(client_->Health("no-such-model"), IsOkAndHolds(HealthStatus::kServiceUnknown));
  EXPECT_THAT(client_->ModelReady("no-such-model"),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(StartsWith("ModelReady: "), HasSubstr("no-such-model"))));
}

TEST_F(ClientLibraryTest, ListsAndDescribesTheDigitsModel) {
  auto models = client_->ListModels();
  ASSERT_THAT(models, IsOk());
  ASSERT_EQ(models->size(), 1u);
  EXPECT_EQ((*models)[0].name(), kDigits);

  auto info = client_->DescribeModel(kDigits);
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->name(), kDigits);
  EXPECT_EQ(info->architecture(), "MoEMLP");
  EXPECT_TRUE(info->ready());
  EXPECT_TRUE(info->tensor_servable());
  EXPECT_EQ(info->num_moe_layers(), kDigitsMoELayers);
  EXPECT_EQ(info->num_experts(), kDigitsExperts);
  EXPECT_EQ(info->top_k(), kDigitsTopK);
  EXPECT_EQ(info->input_name(), "input");
  EXPECT_EQ(info->input_width(), kDigitsWidth);
  EXPECT_EQ(info->output_name(), "logits");
  EXPECT_EQ(info->output_width(), kDigitsOutputs);
  EXPECT_THAT(info->output_labels(), ElementsAre("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"));
  EXPECT_EQ(info->backend(), "cpu");

  EXPECT_THAT(client_->DescribeModel("no-such-model"),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(StartsWith("GetModelInfo: "), HasSubstr("no-such-model"))));
}

TEST_F(ClientLibraryTest, ClassifiesTheHeldOutDigitsAsTrainedInEveryEncoding) {
  auto held_out = ReadHeldOut();
  ASSERT_THAT(held_out, IsOk());
  const std::vector<float> typed = HeldOutLogits(*held_out, WireType::kFp32, /*raw=*/false);
  const std::vector<float> raw = HeldOutLogits(*held_out, WireType::kFp32, /*raw=*/true);
  const std::vector<float> fp16 = HeldOutLogits(*held_out, WireType::kFp16, /*raw=*/true);
  const std::vector<float> bf16 = HeldOutLogits(*held_out, WireType::kBf16, /*raw=*/true);
  const auto size = static_cast<size_t>(held_out->samples * kDigitsOutputs);
  ASSERT_EQ(typed.size(), size);
  ASSERT_EQ(raw.size(), size);
  ASSERT_EQ(fp16.size(), size);
  ASSERT_EQ(bf16.size(), size);
  EXPECT_EQ(raw, typed) << "raw and typed FP32 are the same numbers";

  struct Encoding {
    const char* name;
    const std::vector<float>* logits;
    int64_t max_differing_from_fp32;
  };
  // FP16 keeps 11 significant bits of the inputs, BF16 8: a row near a class boundary or a
  // routing tie may move (none did when this was written; the bounds leave room for another
  // summation order).
  for (const Encoding& e :
       {Encoding{"FP32", &typed, 0}, Encoding{"FP16", &fp16, 2}, Encoding{"BF16", &bf16, 8}}) {
    int64_t correct = 0, same_as_fp32 = 0;
    for (int64_t row = 0; row < held_out->samples; ++row) {
      correct += ArgMax(*e.logits, row) == held_out->labels[row];
      same_as_fp32 += ArgMax(*e.logits, row) == ArgMax(typed, row);
    }
    // models/builtin/training_report.json: heldout_accuracy 0.9833.
    EXPECT_GE(correct, held_out->samples * 97 / 100)
        << e.name << ": " << correct << " of " << held_out->samples << " correct";
    EXPECT_GE(same_as_fp32, held_out->samples - e.max_differing_from_fp32)
        << e.name << ": " << held_out->samples - same_as_fp32
        << " rows classified differently from FP32";
  }
}

TEST_F(ClientLibraryTest, RoutingOutputsAreRowsByMoeLayersByTopK) {
  auto held_out = ReadHeldOut();
  ASSERT_THAT(held_out, IsOk());
  const int64_t rows = 5;
  std::vector<float> values(held_out->features.begin(),
                            held_out->features.begin() + rows * kDigitsWidth);
  for (bool raw : {false, true}) {
    SCOPED_TRACE(raw ? "raw" : "typed");
    auto result = client_->Infer(kDigits, {DigitsInput(values, WireType::kFp32, raw)},
                                 {.want_routing = true, .request_id = "routing-1"});
    ASSERT_THAT(result, IsOk());
    EXPECT_EQ(result->id, "routing-1");
    EXPECT_EQ(result->model_name, kDigits);
    ASSERT_NE(result->Find("logits"), nullptr);
    const OutputTensor* ids = result->Find("routing_expert_ids");
    const OutputTensor* weights = result->Find("routing_weights");
    ASSERT_NE(ids, nullptr);
    ASSERT_NE(weights, nullptr);
    EXPECT_EQ(ids->datatype, "INT32");
    EXPECT_EQ(weights->datatype, "FP32");
    EXPECT_THAT(ids->shape, ElementsAre(rows, kDigitsMoELayers, kDigitsTopK));
    EXPECT_THAT(weights->shape, ElementsAre(rows, kDigitsMoELayers, kDigitsTopK));
    ASSERT_THAT(ids->int32, SizeIs(rows * kDigitsMoELayers * kDigitsTopK));
    ASSERT_THAT(weights->fp32, SizeIs(rows * kDigitsMoELayers * kDigitsTopK));
    for (size_t i = 0; i < ids->int32.size(); i += kDigitsTopK) {
      EXPECT_GE(ids->int32[i], 0);
      EXPECT_LT(ids->int32[i], kDigitsExperts);
      EXPECT_NE(ids->int32[i], ids->int32[i + 1]) << "top-2 experts are distinct";
      EXPECT_GE(weights->fp32[i], weights->fp32[i + 1]) << "highest weight first";
    }
  }
  // Asked for by name, only what was asked comes back.
  auto only_ids =
      client_->Infer(kDigits, {DigitsInput(values)}, {.outputs = {"routing_expert_ids"}});
  ASSERT_THAT(only_ids, IsOk());
  ASSERT_THAT(only_ids->outputs, SizeIs(1));
  EXPECT_EQ(only_ids->outputs[0].name, "routing_expert_ids");
}

TEST_F(ClientLibraryTest, UnknownModelIsNotFound) {
  EXPECT_THAT(client_->Infer("no-such-model", {DigitsInput(std::vector<float>(kDigitsWidth))}),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(StartsWith("ModelInfer: "), HasSubstr("no-such-model"))));
}

TEST_F(ClientLibraryTest, WrongWidthIsInvalidArgumentWithTheServersMessage) {
  const InferInput narrow{.name = "input", .shape = {2, 63}, .values = std::vector<float>(126)};
  EXPECT_THAT(client_->Infer(kDigits, {narrow}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "ModelInfer: input 'input' has shape [2, 63]; model 'digits' expects "
                       "[rows, 64]"));
}

TEST_F(ClientLibraryTest, ManyConcurrentInferAsyncCallsAllComplete) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  constexpr int kCalls = 64;
  std::vector<std::vector<float>> inputs;
  for (int i = 0; i < kCalls; ++i) inputs.push_back(UniformRows(rng, 1 + i % 7, kDigitsWidth));

  absl::Mutex mutex;
  int finished = 0;
  std::vector<int> runs(kCalls, 0);
  std::vector<absl::StatusOr<InferResult>> results(kCalls, absl::UnknownError("not run"));
  for (int i = 0; i < kCalls; ++i) {
    client_->InferAsync(kDigits, {DigitsInput(inputs[i], WireType::kFp32, /*raw=*/i % 2 == 0)},
                        {.request_id = absl::StrCat("async-", i)},
                        [&, i](absl::StatusOr<InferResult> result) {
                          absl::MutexLock lock(&mutex);
                          results[i] = std::move(result);
                          ++runs[i];
                          ++finished;
                        });
  }
  {
    absl::MutexLock lock(&mutex);
    auto all_done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) { return finished >= kCalls; };
    ASSERT_TRUE(mutex.AwaitWithTimeout(absl::Condition(&all_done), absl::Seconds(120)))
        << finished << " of " << kCalls << " calls finished";
  }
  absl::SleepFor(absl::Milliseconds(50));  // a second run of `done` would show now
  {
    absl::MutexLock lock(&mutex);
    EXPECT_EQ(finished, kCalls);
  }
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_EQ(runs[i], 1) << "call " << i;
    ASSERT_THAT(results[i], IsOk()) << "call " << i;
    EXPECT_EQ(results[i]->id, absl::StrCat("async-", i));
    // The same rows asked one at a time give the same classes (batched with others, the sums
    // may run in another order).
    auto alone = client_->Infer(kDigits, {DigitsInput(inputs[i])});
    ASSERT_THAT(alone, IsOk());
    const std::vector<float>& together = results[i]->Find("logits")->fp32;
    const std::vector<float>& separate = alone->Find("logits")->fp32;
    ASSERT_EQ(together.size(), separate.size()) << "call " << i;
    EXPECT_LE(MaxAbsDifference(together, separate), 1e-4) << "call " << i;
  }
}

TEST_F(ClientLibraryTest, CallsWithABearerTokenSucceed) {
  // moe-server ignores the token today; it must not refuse calls that carry one.
  auto client = ConnectTo(server().address(), {.bearer_token = "test-token.123"});
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->ServerLive(), IsOkAndHolds(true));
  MOE_EXPECT_OK(client->Infer(kDigits, {DigitsInput(std::vector<float>(kDigitsWidth, 0.5f))}));
}

TEST_F(ClientLibraryTest, TlsClientCannotTalkToThePlaintextServer) {
  auto client = ConnectTo(server().address(), {.tls = true, .retry = {.max_attempts = 1}});
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->ServerLive(), StatusIs(absl::StatusCode::kUnavailable));
}

// --- no server ---

TEST(ClientLibraryServerDownTest, UnavailableAfterRetrying) {
  auto port = testing::PickFreeLoopbackPort();
  ASSERT_THAT(port, IsOk());
  const ConnectOptions options{.retry = {.max_attempts = 4,
                                         .initial_backoff = absl::Milliseconds(20),
                                         .max_backoff = absl::Milliseconds(100)}};
  auto client = ConnectTo(absl::StrCat("127.0.0.1:", *port), options);
  ASSERT_NE(client, nullptr);
  // The attempt count is in the message: the retries happened.
  EXPECT_THAT(client->ServerLive(),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(StartsWith("ServerLive: "), HasSubstr("(after 4 attempts)"))));
  absl::Notification done;
  absl::StatusOr<InferResult> async_result = absl::UnknownError("not run");
  client->InferAsync(kDigits, {DigitsInput(std::vector<float>(kDigitsWidth))}, {},
                     [&](absl::StatusOr<InferResult> result) {
                       async_result = std::move(result);
                       done.Notify();
                     });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_THAT(async_result,
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(StartsWith("ModelInfer: "), HasSubstr("(after 4 attempts)"))));
  EXPECT_THAT(client->WaitForReady(absl::Milliseconds(300)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("is not ready after")));
}

// --- deadlines in the queue: the synthetic model, one request per batch, a queue kept busy ---

class ClientLibraryQueueTest : public SharedServerTest<ClientLibraryQueueTest> {
 public:
  static std::vector<std::string> ServerArgs() { return OneRequestPerBatchArgs(); }

 protected:
  static constexpr int kFillers = 40;

  void FillQueue(AsyncCalls& calls, std::mt19937_64& rng) {
    for (int i = 0; i < kFillers; ++i) calls.Start(OneBatchRequest(rng));
    ASSERT_TRUE(calls.WaitForFinished(1));
  }

  InferInput SyntheticRows(std::mt19937_64& rng) {
    return InferInput{.name = "input",
                      .shape = {kOneBatchRows, kSyntheticWidth},
                      .values = UniformRows(rng, kOneBatchRows, kSyntheticWidth)};
  }
};

TEST_F(ClientLibraryQueueTest, QueueTimeoutParameterPassingInTheQueueIsDeadlineExceeded) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  auto client = ConnectTo(server().address());
  ASSERT_NE(client, nullptr);
  AsyncCalls calls(stub());
  ASSERT_NO_FATAL_FAILURE(FillQueue(calls, rng));
  // The call's deadline is a minute away: the server itself says DEADLINE_EXCEEDED.
  EXPECT_THAT(client->Infer(kSynthetic, {SyntheticRows(rng)},
                            {.timeout = absl::Seconds(60), .queue_timeout = absl::Milliseconds(1)}),
              StatusIs(absl::StatusCode::kDeadlineExceeded, StartsWith("ModelInfer: ")));
  ASSERT_TRUE(calls.WaitAll());
}

TEST_F(ClientLibraryQueueTest, CallDeadlinePassingInTheQueueIsDeadlineExceeded) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " (MOE_TEST_SEED replays)");
  std::mt19937_64 rng(seed);
  auto client = ConnectTo(server().address());
  ASSERT_NE(client, nullptr);
  AsyncCalls calls(stub());
  ASSERT_NO_FATAL_FAILURE(FillQueue(calls, rng));
  const absl::Time start = absl::Now();
  EXPECT_THAT(client->Infer(kSynthetic, {SyntheticRows(rng)}, {.timeout = absl::Milliseconds(20)}),
              StatusIs(absl::StatusCode::kDeadlineExceeded, StartsWith("ModelInfer: ")));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  ASSERT_TRUE(calls.WaitAll());
  // The server carries on.
  MOE_EXPECT_OK(client->Infer(kSynthetic, {SyntheticRows(rng)}));
}

// --- Generate: every reference checkpoint of the fixture folder, served under its name ---

class ClientGenerateTest : public SharedServerTest<ClientGenerateTest> {
 public:
  static std::vector<std::string> ServerArgs() {
    std::vector<std::string> args = DigitsModelFlag();
    for (std::string& flag : FixtureModelFlags()) args.push_back(std::move(flag));
    return args;
  }

 protected:
  void SetUp() override {
    SharedServerTest::SetUp();
    if (HasFatalFailure()) return;
    client_ = ConnectTo(server().address());
    ASSERT_NE(client_, nullptr);
    ASSERT_FALSE(testing::FixtureFolders().empty()) << "no fixture in " << testing::FixturesRoot();
    auto ref = LoadGreedyReference(testing::FixtureFolders().front());
    ASSERT_THAT(ref, IsOk());
    first_ = *std::move(ref);
  }

  std::unique_ptr<Client> client_;
  GreedyReference first_;  // of the first fixture folder
};

TEST_F(ClientGenerateTest, GreedyDecodingGivesEveryFixturesReferenceTokens) {
  for (const std::string& dir : testing::FixtureFolders()) {
    auto ref = LoadGreedyReference(dir);
    ASSERT_THAT(ref, IsOk()) << dir;
    for (const auto& [seq, sequence] : ref->sequences) {
      SCOPED_TRACE(ref->model + " " + seq);
      std::vector<int32_t> streamed;
      int chunks = 0;
      auto result = client_->Generate(
          ref->model, sequence.prompt,
          {.max_new_tokens = kGreedyReferenceTokens, .ignore_eos = true, .logprobs = true},
          [&](const GenerateChunk& chunk) {
            ++chunks;
            EXPECT_EQ(chunk.logprobs.size(), chunk.token_ids.size());
            streamed.insert(streamed.end(), chunk.token_ids.begin(), chunk.token_ids.end());
            return true;
          });
      ASSERT_THAT(result, IsOk());
      EXPECT_EQ(result->token_ids, sequence.greedy);
      EXPECT_EQ(streamed, sequence.greedy) << "the chunks are the tokens, in order";
      EXPECT_GE(chunks, 1);
      EXPECT_EQ(result->finish_reason, FinishReason::kLength);
      EXPECT_EQ(result->completion_tokens, kGreedyReferenceTokens);
      EXPECT_EQ(result->prompt_tokens, static_cast<int>(sequence.prompt.size()));
      ASSERT_THAT(result->logprobs, SizeIs(kGreedyReferenceTokens));
      for (float logprob : result->logprobs) EXPECT_LE(logprob, 0.0f);
      EXPECT_GT(result->time_to_first_token, absl::ZeroDuration());
      EXPECT_LE(result->time_to_first_token, result->total_time);
      EXPECT_GT(result->server_time_to_first_token, absl::ZeroDuration());
      EXPECT_EQ(result->preemptions, 0);
    }
  }
}

TEST_F(ClientGenerateTest, StopTokenAndSeededSamplingReachTheServer) {
  const auto& [seq, sequence] = *first_.sequences.begin();
  auto stopped = client_->Generate(first_.model, sequence.prompt,
                                   {.max_new_tokens = kGreedyReferenceTokens,
                                    .stop_token_ids = {sequence.greedy[2]},
                                    .ignore_eos = true},
                                   [](const GenerateChunk&) { return true; });
  ASSERT_THAT(stopped, IsOk());
  const auto stop = std::find(sequence.greedy.begin(), sequence.greedy.end(), sequence.greedy[2]);
  EXPECT_EQ(stopped->token_ids, std::vector<int32_t>(sequence.greedy.begin(), stop + 1));
  EXPECT_EQ(stopped->finish_reason, FinishReason::kStop);

  const GenerateOptions sampled{.max_new_tokens = 16,
                                .temperature = 1.5f,
                                .top_k = 50,
                                .top_p = 0.95f,
                                .repetition_penalty = 1.2f,
                                .seed = 4321,
                                .ignore_eos = true};
  auto a = client_->Generate(first_.model, sequence.prompt, sampled,
                             [](const GenerateChunk&) { return true; });
  auto b = client_->Generate(first_.model, sequence.prompt, sampled,
                             [](const GenerateChunk&) { return true; });
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(a->token_ids, b->token_ids) << "the same seed, the same samples";
  EXPECT_THAT(a->token_ids, SizeIs(16));
}

TEST_F(ClientGenerateTest, ReturningFalseFromTheCallbackCancelsTheStream) {
  const std::vector<int32_t>& prompt = first_.sequences.begin()->second.prompt;
  int chunks = 0;
  const absl::Time start = absl::Now();
  auto result = client_->Generate(first_.model, prompt, {.max_new_tokens = 400, .ignore_eos = true},
                                  [&](const GenerateChunk& chunk) {
                                    EXPECT_FALSE(chunk.token_ids.empty());
                                    ++chunks;
                                    return false;
                                  });
  EXPECT_THAT(result,
              StatusIs(absl::StatusCode::kCancelled,
                       AllOf(StartsWith("Generate: "), HasSubstr("stopped by the caller"))));
  EXPECT_EQ(chunks, 1) << "no callback after it said stop";
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  // The server carries on, and so does the client.
  auto after = client_->Generate(first_.model, prompt, {.max_new_tokens = 2, .ignore_eos = true},
                                 [](const GenerateChunk&) { return true; });
  ASSERT_THAT(after, IsOk());
  EXPECT_THAT(after->token_ids, SizeIs(2));
}

TEST_F(ClientGenerateTest, ErrorsCarryTheServersCodeAndMessage) {
  int callbacks = 0;
  auto count = [&](const GenerateChunk&) {
    ++callbacks;
    return true;
  };
  EXPECT_THAT(client_->Generate("no-such-model", {1, 2}, {}, count),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(StartsWith("Generate: "), HasSubstr("no-such-model"))));
  EXPECT_THAT(client_->Generate(kDigits, {1, 2}, {}, count),
              StatusIs(absl::StatusCode::kFailedPrecondition, StartsWith("Generate: ")));
  EXPECT_THAT(client_->Generate(first_.model, {1, 1 << 30}, {}, count),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the vocabulary")));
  EXPECT_THAT(client_->Generate(first_.model, {1, 2}, {.max_new_tokens = 1 << 20}, count),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_new_tokens")));
  // Found by the client: nothing is sent.
  EXPECT_THAT(client_->Generate(first_.model, {1, 2}, {.temperature = -1}, count),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "Generate: temperature must be a "
                       "finite number >= 0, got -1"));
  EXPECT_THAT(client_->Generate(first_.model, {}, {}, count),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("prompt_token_ids is empty")));
  EXPECT_EQ(callbacks, 0);
}

TEST_F(ClientGenerateTest, APassedDeadlineIsDeadlineExceeded) {
  const std::vector<int32_t>& prompt = first_.sequences.begin()->second.prompt;
  auto result = client_->Generate(
      first_.model, prompt,
      {.max_new_tokens = 400, .ignore_eos = true, .timeout = absl::Microseconds(1)},
      [](const GenerateChunk&) { return true; });
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kDeadlineExceeded, StartsWith("Generate: ")));
}

TEST(ClientGenerateServerDownTest, RetriedWhileNothingHasArrived) {
  auto port = testing::PickFreeLoopbackPort();
  ASSERT_THAT(port, IsOk());
  auto client = ConnectTo(absl::StrCat("127.0.0.1:", *port),
                          {.retry = {.max_attempts = 3,
                                     .initial_backoff = absl::Milliseconds(10),
                                     .max_backoff = absl::Milliseconds(50)}});
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->Generate("lm", {1, 2}, {}, [](const GenerateChunk&) { return true; }),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(StartsWith("Generate: "), HasSubstr("(after 3 attempts)"))));
}

}  // namespace
}  // namespace moe::integration
