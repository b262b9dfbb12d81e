// Iteration-level batching must not change what a sequence computes: a prompt prefilled in
// chunks gives the logits of one whole chunk, and sequences stepped together (joining at
// different steps, mixing prefill chunks and decode tokens) give the logits and greedy tokens
// each gives alone. Random prompts, lengths and chunkings from a fresh seed, printed.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/random.h"
#include "tests/testing/reference_fixture.h"
#include "tests/unit/decoder/decoder_test_util.h"

namespace moe {
namespace {

// Batching changes only the row count of the dense GEMMs (BLAS may block the sums differently)
// and the MoE layer's per-expert row groups; everything else is computed per token.
constexpr double kBatchTolerance = 1e-5;

std::vector<int32_t> RandomTokens(std::mt19937_64& rng, int64_t count, int64_t vocab) {
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  for (int32_t& t : tokens) t = token(rng);
  return tokens;
}

class DecoderBatchingTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    seed_ = testing::FreshSeed();
    std::printf("seed %llu (MOE_TEST_SEED replays)\n", static_cast<unsigned long long>(seed_));
    rng_.seed(seed_);
  }
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_P(DecoderBatchingTest, ChunkedPrefillGivesTheLogitsOfOneChunk) {
  testing::LoadedDecoder loaded;
  ASSERT_NO_FATAL_FAILURE(testing::LoadDecoder(GetParam(), &loaded, 64, 4));
  engine::DecoderModel& model = *loaded.model;
  const int64_t vocab = model.spec().vocab_size;
  const int64_t length = std::uniform_int_distribution<int64_t>(20, 60)(rng_);
  const std::vector<int32_t> prompt = RandomTokens(rng_, length, vocab);

  engine::KvSequence whole(loaded.cache.get());
  std::vector<float> want;
  ASSERT_NO_FATAL_FAILURE(testing::StepOne(model, whole, prompt, true, &want));

  engine::KvSequence chunked(loaded.cache.get());
  std::vector<float> got;
  std::vector<int64_t> sizes;
  for (int64_t at = 0; at < length;) {
    const int64_t n =
        std::min<int64_t>(std::uniform_int_distribution<int64_t>(1, 9)(rng_), length - at);
    std::vector<float> logits;
    ASSERT_NO_FATAL_FAILURE(testing::StepOne(
        model, chunked, std::vector<int32_t>(prompt.begin() + at, prompt.begin() + at + n), true,
        &logits));
    got.insert(got.end(), logits.begin(), logits.end());
    sizes.push_back(n);
    at += n;
  }
  ASSERT_EQ(got.size(), want.size());
  const double error = testing::RelativeL2(got.data(), want.data(), got.size());
  EXPECT_LT(error, kBatchTolerance)
      << "chunked vs whole prefill logits relative L2 " << error << " (tolerance "
      << kBatchTolerance << "), " << sizes.size() << " chunks, seed " << seed_;
}

// One sequence's life in the batched run: a prompt prefilled in random chunks from its join
// step on, then greedy decoding.
struct Plan {
  std::vector<int32_t> prompt;
  int join_step = 0;
  int decode_tokens = 0;
  // Logits of the last prompt token, then of each decode step; and the greedy tokens.
  std::vector<std::vector<float>> logits;
  std::vector<int32_t> generated;
};

TEST_P(DecoderBatchingTest, SequencesSteppedTogetherMatchEachAlone) {
  testing::LoadedDecoder loaded;
  // Small blocks, and sequences reserving as they go, so their pages interleave in the pool.
  ASSERT_NO_FATAL_FAILURE(testing::LoadDecoder(GetParam(), &loaded, 256, 4));
  engine::DecoderModel& model = *loaded.model;
  const int64_t vocab = model.spec().vocab_size;

  std::vector<Plan> plans(4);
  for (Plan& plan : plans) {
    plan.prompt = RandomTokens(rng_, std::uniform_int_distribution<int64_t>(1, 40)(rng_), vocab);
    plan.join_step = std::uniform_int_distribution<int>(0, 5)(rng_);
    plan.decode_tokens = std::uniform_int_distribution<int>(3, 8)(rng_);
  }

  // Batched.
  std::vector<engine::KvSequence> sequences;
  for (size_t i = 0; i < plans.size(); ++i) sequences.emplace_back(loaded.cache.get());
  std::vector<size_t> prefilled(plans.size(), 0);
  std::vector<std::vector<int32_t>> histories(plans.size());
  for (int step = 0;; ++step) {
    std::vector<engine::DecoderChunk> chunks;
    std::vector<std::vector<int32_t>> tokens(plans.size());
    std::vector<size_t> members;
    for (size_t i = 0; i < plans.size(); ++i) {
      Plan& plan = plans[i];
      if (step < plan.join_step) continue;
      if (prefilled[i] < plan.prompt.size()) {
        const size_t n = std::min<size_t>(std::uniform_int_distribution<size_t>(1, 16)(rng_),
                                          plan.prompt.size() - prefilled[i]);
        tokens[i].assign(plan.prompt.begin() + prefilled[i],
                         plan.prompt.begin() + prefilled[i] + n);
        prefilled[i] += n;
      } else if (static_cast<int>(plan.generated.size()) < plan.decode_tokens) {
        tokens[i] = {plan.generated.back()};
      } else {
        continue;
      }
      ASSERT_TRUE(sequences[i].Reserve(sequences[i].length() + tokens[i].size()));
      members.push_back(i);
    }
    if (members.empty()) {
      bool waiting = false;
      for (const Plan& plan : plans) waiting |= step < plan.join_step;
      if (!waiting) break;
      continue;
    }
    for (const size_t i : members) chunks.push_back({&sequences[i], tokens[i], false});
    std::vector<float> logits(chunks.size() * vocab, NAN);
    engine::DecoderStepOutputs outputs;
    outputs.logits = logits.data();
    MOE_ASSERT_OK(model.Step(chunks, outputs)) << "step " << step << ", seed " << seed_;
    for (size_t c = 0; c < members.size(); ++c) {
      Plan& plan = plans[members[c]];
      if (prefilled[members[c]] < plan.prompt.size()) continue;  // mid-prompt: logits unused
      const std::vector<float> row(logits.begin() + c * vocab, logits.begin() + (c + 1) * vocab);
      plan.logits.push_back(row);
      std::vector<int32_t>& history = histories[members[c]];
      if (history.empty()) history = plan.prompt;
      engine::TokenSampler greedy(engine::SamplingParams{});
      plan.generated.push_back(greedy.Sample(row, history, nullptr));
      history.push_back(plan.generated.back());
    }
  }

  // Each alone, in a fresh cache position: whole prompt, then one token per step.
  for (size_t i = 0; i < plans.size(); ++i) {
    const Plan& plan = plans[i];
    SCOPED_TRACE("sequence " + std::to_string(i) + " of " + std::to_string(plan.prompt.size()) +
                 " prompt tokens joining at step " + std::to_string(plan.join_step) + ", seed " +
                 std::to_string(seed_));
    ASSERT_EQ(static_cast<int>(plan.generated.size()), plan.decode_tokens);
    engine::KvSequence alone(loaded.cache.get());
    std::vector<float> logits;
    ASSERT_NO_FATAL_FAILURE(testing::StepOne(model, alone, plan.prompt, false, &logits));
    for (int t = 0; t < plan.decode_tokens; ++t) {
      const double error = testing::RelativeL2(plan.logits[t].data(), logits.data(), logits.size());
      EXPECT_LT(error, kBatchTolerance)
          << "batched vs alone logits at generated token " << t << ": relative L2 " << error
          << " (tolerance " << kBatchTolerance << ")";
      const int32_t next =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      ASSERT_EQ(plan.generated[t], next) << "greedy token " << t << " differs";
      if (t + 1 < plan.decode_tokens) {
        ASSERT_NO_FATAL_FAILURE(testing::StepOne(model, alone, {next}, false, &logits));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DecoderBatchingTest,
                         ::testing::ValuesIn(testing::FixtureFolders()), testing::FixtureTestName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(DecoderBatchingTest);
// Qwen3-MoE's dense layers and per-head norms too (make_qwen3moe_reference.py).
INSTANTIATE_TEST_SUITE_P(Qwen3, DecoderBatchingTest,
                         ::testing::Values(std::string(MOE_SOURCE_DIR
                                                       "/tests/unit/decoder/testdata/"
                                                       "qwen3moe-tiny-f32")),
                         testing::FixtureTestName);

}  // namespace
}  // namespace moe
