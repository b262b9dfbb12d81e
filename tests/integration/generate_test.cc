// moe.v1.Generate against the live server, on every reference checkpoint of the fixture folder
// (tests/fixtures/ or $MOE_FIXTURES), each served under its folder's name:
//   - greedy decoding gives the reference's `seqS.greedy_ids` exactly, and the log-probability
//     of the first generated token matches the reference logits' log-softmax (relative 1e-4);
//   - many concurrent streams with mixed prompts, lengths and arrival times get exactly what
//     each gets alone (iteration-level batching and preemption do not change results);
//   - seeded sampling is reproducible; cancellation frees the sequence's KV blocks;
//   - every kind of bad input is INVALID_ARGUMENT naming the problem.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <future>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/moe_service.grpc.pb.h"
#include "server/model/safetensors.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/exposition_text.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/http_get.h"
#include "tests/testing/random.h"
#include "tests/testing/reference_fixture.h"

namespace moe::integration {
namespace {

using ::testing::HasSubstr;

// One fixture's reference: prompts, greedy continuations, last-row logits.
struct Reference {
  std::string model;  // the folder name, as served
  int64_t vocab = 0;
  std::map<std::string, std::vector<int32_t>> prompts;
  std::map<std::string, std::vector<int32_t>> greedy;
  std::map<std::string, std::vector<float>> last_logits;  // [vocab] of the prompt's last token
};

std::vector<int32_t> Narrow(const std::vector<int64_t>& ids) {
  return std::vector<int32_t>(ids.begin(), ids.end());
}

Reference LoadReference(const std::string& dir) {
  Reference ref;
  ref.model = std::filesystem::path(dir).filename().string();
  auto file =
      model::SafetensorsFile::Open((std::filesystem::path(dir) / "reference.safetensors").string());
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return ref;
  for (const std::string seq : {"seq0", "seq1"}) {
    const model::TensorInfo* ids = (*file)->Find(seq + ".input_ids");
    const model::TensorInfo* logits = (*file)->Find(seq + ".logits");
    if (ids == nullptr || logits == nullptr) continue;
    const int64_t tokens = ids->shape[0];
    ref.vocab = logits->shape[1];
    std::vector<int64_t> prompt, greedy;
    std::vector<float> all_logits;
    testing::ReadReferenceTensor(**file, seq + ".input_ids", tokens, &prompt);
    testing::ReadReferenceTensor(**file, seq + ".greedy_ids", 8, &greedy);
    testing::ReadReferenceTensor(**file, seq + ".logits", tokens * ref.vocab, &all_logits);
    ref.prompts[seq] = Narrow(prompt);
    ref.greedy[seq] = Narrow(greedy);
    ref.last_logits[seq].assign(all_logits.end() - ref.vocab, all_logits.end());
  }
  return ref;
}

struct Generated {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  moe::v1::GenerateResponse final;
  int messages = 0;
};

Generated Generate(moe::v1::MoEService::Stub& stub, const moe::v1::GenerateRequest& request) {
  Generated out;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = stub.Generate(&context, request);
  moe::v1::GenerateResponse message;
  while (reader->Read(&message)) {
    ++out.messages;
    out.tokens.insert(out.tokens.end(), message.token_ids().begin(), message.token_ids().end());
    out.logprobs.insert(out.logprobs.end(), message.logprobs().begin(), message.logprobs().end());
    out.final = message;
  }
  out.status = reader->Finish();
  return out;
}

moe::v1::GenerateRequest Greedy(const std::string& model, const std::vector<int32_t>& prompt,
                                int max_new) {
  moe::v1::GenerateRequest request;
  request.set_model(model);
  for (int32_t id : prompt) request.add_prompt_token_ids(id);
  request.set_max_new_tokens(max_new);
  request.set_ignore_eos(true);
  return request;
}

// "--model NAME=DIR" for every fixture folder, served under the folder's name.
std::vector<std::string> FixtureModelFlags() {
  std::vector<std::string> args;
  for (const std::string& dir : testing::FixtureFolders()) {
    args.push_back("--model");
    args.push_back(absl::StrCat(std::filesystem::path(dir).filename().string(), "=", dir));
  }
  return args;
}

// A suite's shared server with the moe.v1 stub and a /metrics scrape.
template <typename Derived>
class GenerateServerTest : public SharedServerTest<Derived> {
 protected:
  void SetUp() override {
    SharedServerTest<Derived>::SetUp();
    moe_ = moe::v1::MoEService::NewStub(this->server().channel());
  }
  static std::string Scrape() {
    absl::StatusOr<std::string> text =
        testing::HttpGet(SharedServerTest<Derived>::server().metrics_port(), "/metrics");
    return text.ok() ? *text : std::string(text.status().message());
  }
  std::unique_ptr<moe::v1::MoEService::Stub> moe_;
};

class GenerateTest : public GenerateServerTest<GenerateTest> {
 public:
  static std::vector<std::string> ServerArgs() {
    std::vector<std::string> args = DigitsModelFlag();
    for (std::string& flag : FixtureModelFlags()) args.push_back(std::move(flag));
    args.push_back("--max-batch-tokens=64");
    return args;
  }
};

TEST_F(GenerateTest, FixtureFoldersExist) {
  EXPECT_FALSE(testing::FixtureFolders().empty()) << "no fixture in " << testing::FixturesRoot();
}

TEST_F(GenerateTest, GreedyDecodingMatchesEveryFixtureReference) {
  for (const std::string& dir : testing::FixtureFolders()) {
    const Reference ref = LoadReference(dir);
    ASSERT_FALSE(ref.prompts.empty()) << dir;
    for (const auto& [seq, prompt] : ref.prompts) {
      SCOPED_TRACE(ref.model + " " + seq);
      moe::v1::GenerateRequest request = Greedy(ref.model, prompt, 8);
      request.set_logprobs(true);
      const Generated got = Generate(*moe_, request);
      ASSERT_TRUE(got.status.ok()) << got.status.error_message();
      EXPECT_EQ(got.tokens, ref.greedy.at(seq));
      EXPECT_EQ(got.final.finish_reason(), moe::v1::FINISH_REASON_LENGTH);
      EXPECT_EQ(got.final.completion_tokens(), 8);
      EXPECT_EQ(got.final.prompt_tokens(), static_cast<int>(prompt.size()));
      EXPECT_GT(got.final.time_to_first_token_seconds(), 0.0);
      ASSERT_EQ(got.logprobs.size(), 8u);
      // The first token's log-probability from the reference logits (log-softmax in double).
      const std::vector<float>& logits = ref.last_logits.at(seq);
      const double max = *std::max_element(logits.begin(), logits.end());
      double sum = 0;
      for (float v : logits) sum += std::exp(v - max);
      const double expected = logits[ref.greedy.at(seq)[0]] - max - std::log(sum);
      EXPECT_NEAR(got.logprobs[0], expected, 1e-4 * std::max(1.0, std::abs(expected)));
      for (float lp : got.logprobs) EXPECT_LE(lp, 0.0f);
    }
  }
}

TEST_F(GenerateTest, SeededSamplingIsReproducibleAndSeedsDiffer) {
  const Reference ref = LoadReference(testing::FixtureFolders().front());
  moe::v1::GenerateRequest request = Greedy(ref.model, ref.prompts.begin()->second, 24);
  request.mutable_sampling()->set_temperature(1.5f);
  request.mutable_sampling()->set_seed(1234);
  const Generated a = Generate(*moe_, request);
  const Generated b = Generate(*moe_, request);
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.tokens, b.tokens);
  int differing = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    request.mutable_sampling()->set_seed(seed);
    differing += Generate(*moe_, request).tokens != a.tokens;
  }
  EXPECT_GE(differing, 3) << "other seeds should give other samples at temperature 1.5";
}

TEST_F(GenerateTest, StopTokenEndsTheSequenceWithReasonStop) {
  const Reference ref = LoadReference(testing::FixtureFolders().front());
  const auto& [seq, prompt] = *ref.prompts.begin();
  moe::v1::GenerateRequest request = Greedy(ref.model, prompt, 8);
  request.add_stop_token_ids(ref.greedy.at(seq)[2]);
  const Generated got = Generate(*moe_, request);
  ASSERT_TRUE(got.status.ok());
  const auto& greedy = ref.greedy.at(seq);
  const auto stop = std::find(greedy.begin(), greedy.end(), greedy[2]);
  EXPECT_EQ(got.tokens, std::vector<int32_t>(greedy.begin(), stop + 1));
  EXPECT_EQ(got.final.finish_reason(), moe::v1::FINISH_REASON_STOP);
}

TEST_F(GenerateTest, CancellingAStreamFreesItsKvBlocks) {
  const Reference ref = LoadReference(testing::FixtureFolders().front());
  grpc::ClientContext context;
  moe::v1::GenerateRequest request = Greedy(ref.model, ref.prompts.begin()->second, 400);
  auto reader = moe_->Generate(&context, request);
  moe::v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));  // it runs
  context.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The server's gauge of blocks in use returns to zero.
  bool freed = false;
  for (int i = 0; i < 100 && !freed; ++i) {
    const std::string text = Scrape();
    freed =
        text.find("moe_kv_cache_blocks_used{model=\"" + ref.model + "\"} 0") != std::string::npos;
    if (!freed) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(freed) << Scrape();
}

TEST_F(GenerateTest, MetricsCountTheTokensLatenciesAndQueueWaitOfAGeneration) {
  const Reference ref = LoadReference(testing::FixtureFolders().front());
  const std::vector<testing::ExpositionSample> before = testing::ParseExposition(Scrape());
  const Generated got = Generate(*moe_, Greedy(ref.model, ref.prompts.begin()->second, 6));
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  ASSERT_EQ(got.tokens.size(), 6u);
  // Everything is recorded before the stream ends, so one scrape after it sees it all.
  const std::vector<testing::ExpositionSample> after = testing::ParseExposition(Scrape());
  auto delta = [&](const std::string& name) {
    const std::optional<double> was = testing::FindSample(before, name, {{"model", ref.model}});
    const std::optional<double> is = testing::FindSample(after, name, {{"model", ref.model}});
    EXPECT_TRUE(is.has_value()) << name << " not exported";
    return is.value_or(0.0) - was.value_or(0.0);
  };
  EXPECT_EQ(delta("moe_generated_tokens_total"), 6);
  EXPECT_EQ(delta("moe_time_to_first_token_seconds_count"), 1);
  EXPECT_GT(delta("moe_time_to_first_token_seconds_sum"), 0.0);
  EXPECT_EQ(delta("moe_inter_token_latency_seconds_count"), 5);  // between 6 tokens
  EXPECT_EQ(delta("moe_request_queue_duration_seconds_count"), 1);
  EXPECT_EQ(delta("moe_preemptions_total"), 0);
  EXPECT_GE(delta("moe_batches_total"), 6) << "a pass per token at least";
}

TEST_F(GenerateTest, BadRequestsAreInvalidArgumentNamingTheProblem) {
  const Reference ref = LoadReference(testing::FixtureFolders().front());
  const std::vector<int32_t> prompt = ref.prompts.begin()->second;
  struct Bad {
    std::string what;
    moe::v1::GenerateRequest request;
    std::string message;
  };
  std::vector<Bad> bad;
  auto add = [&](std::string what, auto edit, std::string message) {
    moe::v1::GenerateRequest request = Greedy(ref.model, prompt, 4);
    edit(request);
    bad.push_back({std::move(what), std::move(request), std::move(message)});
  };
  add(
      "empty prompt", [](auto& r) { r.clear_prompt_token_ids(); }, "prompt_token_ids is empty");
  add(
      "token outside the vocabulary",
      [&](auto& r) { r.set_prompt_token_ids(1, static_cast<int32_t>(ref.vocab)); },
      "outside the vocabulary");
  add(
      "negative token", [](auto& r) { r.set_prompt_token_ids(0, -1); }, "outside the vocabulary");
  add(
      "too long", [](auto& r) { r.set_max_new_tokens(1 << 20); }, "beyond this model's maximum");
  add(
      "negative max_new_tokens", [](auto& r) { r.set_max_new_tokens(-3); }, "max_new_tokens");
  add(
      "prompt longer than the context",
      [](auto& r) {
        for (int i = 0; i < 5000; ++i) r.add_prompt_token_ids(1);
      },
      "prompt_token_ids has");
  add(
      "negative temperature", [](auto& r) { r.mutable_sampling()->set_temperature(-1); },
      "temperature");
  add(
      "NaN temperature", [](auto& r) { r.mutable_sampling()->set_temperature(std::nanf("")); },
      "temperature");
  add(
      "top_p above 1", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }, "top_p");
  add(
      "negative top_k", [](auto& r) { r.mutable_sampling()->set_top_k(-2); }, "top_k");
  add(
      "negative repetition penalty",
      [](auto& r) { r.mutable_sampling()->set_repetition_penalty(-1); }, "repetition_penalty");
  add(
      "too many stop ids",
      [](auto& r) {
        for (int i = 0; i < 17; ++i) r.add_stop_token_ids(1);
      },
      "stop_token_ids has 17");
  add(
      "stop id outside the vocabulary", [&](auto& r) { r.add_stop_token_ids(1 << 30); },
      "stop_token_ids[0]");
  for (const Bad& b : bad) {
    const Generated got = Generate(*moe_, b.request);
    EXPECT_EQ(got.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << b.what;
    EXPECT_THAT(got.status.error_message(), HasSubstr(b.message)) << b.what;
    EXPECT_TRUE(got.tokens.empty()) << b.what;
  }
  // Not a language model; not a model.
  EXPECT_EQ(Generate(*moe_, Greedy(kDigits, {1, 2}, 4)).status.error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Generate(*moe_, Greedy("no-such-model", {1, 2}, 4)).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  // The server still serves.
  EXPECT_TRUE(Generate(*moe_, Greedy(ref.model, prompt, 2)).status.ok());
}

// A KV cache of about 100 KB per model (8 to 12 blocks of 16 tokens): any one request fits,
// two dozen concurrent ones do not, so sequences are preempted and recomputed.
class GenerateUnderPressureTest : public GenerateServerTest<GenerateUnderPressureTest> {
 public:
  static std::vector<std::string> ServerArgs() {
    std::vector<std::string> args = FixtureModelFlags();
    args.push_back("--kv-cache-bytes=100000");
    args.push_back("--max-batch-tokens=64");
    return args;
  }
};

TEST_F(GenerateUnderPressureTest, ConcurrentMixedStreamsGetWhatEachGetsAloneThoughPreempted) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (MOE_TEST_SEED replays it)");
  std::mt19937_64 rng(seed);
  const std::vector<std::string> dirs = testing::FixtureFolders();
  ASSERT_FALSE(dirs.empty());
  struct Case {
    moe::v1::GenerateRequest request;
    Generated alone;
    int delay_ms = 0;
  };
  std::vector<Case> cases(24);
  for (Case& c : cases) {
    const Reference ref = LoadReference(dirs[rng() % dirs.size()]);
    std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(ref.vocab - 1));
    std::vector<int32_t> prompt(1 + rng() % 40);
    for (int32_t& id : prompt) id = token(rng);
    c.request = Greedy(ref.model, prompt, 8 + static_cast<int>(rng() % 24));
    if (rng() % 2 == 0) {  // seeded sampling too: the same stream alone and batched
      c.request.mutable_sampling()->set_temperature(0.8f);
      c.request.mutable_sampling()->set_top_p(0.9f);
      c.request.mutable_sampling()->set_seed(rng());
    }
    c.delay_ms = static_cast<int>(rng() % 4);
  }
  for (Case& c : cases) {
    c.alone = Generate(*moe_, c.request);
    ASSERT_TRUE(c.alone.status.ok()) << c.alone.status.error_message();
  }
  std::vector<std::future<Generated>> batched;
  for (const Case& c : cases) {
    batched.push_back(std::async(std::launch::async, [this, &c] {
      std::this_thread::sleep_for(std::chrono::milliseconds(c.delay_ms));
      return Generate(*moe_, c.request);
    }));
  }
  int preemptions = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Generated got = batched[i].get();
    ASSERT_TRUE(got.status.ok()) << i << ": " << got.status.error_message();
    EXPECT_EQ(got.tokens, cases[i].alone.tokens)
        << "stream " << i << " of model " << cases[i].request.model();
    preemptions += got.final.preemptions();
  }
  // The pool holds a few sequences per model at a time: some were preempted and recomputed.
  EXPECT_GT(preemptions, 0);
  EXPECT_THAT(Scrape(), HasSubstr("moe_preemptions_total"));
}

}  // namespace
}  // namespace moe::integration
