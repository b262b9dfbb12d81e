// The whole decoder forward pass against the reference checkpoints of tests/fixtures (or
// $MOE_FIXTURES): every folder, every reference sequence. Prompt logits must match the float64
// reference within relative L2 1e-4 (tests/fixtures/README.md: float32 compute; the dense and
// attention parts compute in float32 even for bf16 weights, which widen exactly), and 8 tokens
// of greedy decoding, one Step per token through the paged KV cache, must equal the reference's.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/random.h"
#include "tests/testing/reference_fixture.h"
#include "tests/unit/decoder/decoder_test_util.h"

namespace moe {
namespace {

constexpr double kFp32Tolerance = 1e-4;

class DecoderFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DecoderFixtureTest, PromptLogitsAndGreedyTokensMatchReference) {
  const std::string dir = GetParam();
  testing::LoadedDecoder loaded;
  // Blocks of 4 tokens, so even the short prompts span several pages.
  ASSERT_NO_FATAL_FAILURE(testing::LoadDecoder(dir, &loaded, /*blocks=*/64, /*block_tokens=*/4));
  MOE_ASSERT_OK_AND_ASSIGN(auto reference,
                           model::SafetensorsFile::Open(
                               (std::filesystem::path(dir) / "reference.safetensors").string()));
  const std::set<std::string> sequences = testing::ReferenceSequences(*reference);
  ASSERT_FALSE(sequences.empty()) << dir << ": no seqS.input_ids in reference.safetensors";
  const int64_t vocab = loaded.model->spec().vocab_size;

  for (const std::string& seq : sequences) {
    SCOPED_TRACE(dir + " " + seq);
    std::vector<int32_t> prompt, want_greedy;
    std::vector<float> want_logits;
    ASSERT_NO_FATAL_FAILURE(testing::ReadTokenIds(*reference, seq + ".input_ids", &prompt));
    ASSERT_NO_FATAL_FAILURE(testing::ReadTokenIds(*reference, seq + ".greedy_ids", &want_greedy));
    ASSERT_NO_FATAL_FAILURE(testing::ReadFloats(*reference, seq + ".logits", &want_logits));
    ASSERT_EQ(want_logits.size(), prompt.size() * vocab);

    engine::KvSequence sequence(loaded.cache.get());
    std::vector<float> logits;
    ASSERT_NO_FATAL_FAILURE(
        testing::StepOne(*loaded.model, sequence, prompt, /*all_logits=*/true, &logits));
    EXPECT_EQ(sequence.length(), static_cast<int64_t>(prompt.size()));
    const double error = testing::RelativeL2(logits.data(), want_logits.data(), logits.size());
    EXPECT_LT(error, kFp32Tolerance)
        << "prompt logits relative L2 " << error << " (tolerance " << kFp32Tolerance << ")";

    std::vector<int32_t> greedy;
    ASSERT_NO_FATAL_FAILURE(testing::GreedyDecode(*loaded.model, sequence, prompt, logits,
                                                  static_cast<int>(want_greedy.size()), &greedy));
    EXPECT_EQ(greedy, want_greedy) << "greedy tokens differ from the reference";
    std::printf("%s %s: %zu prompt tokens, logits rel L2 %.2e, %zu greedy tokens %s\n",
                std::filesystem::path(dir).filename().c_str(), seq.c_str(), prompt.size(), error,
                greedy.size(), greedy == want_greedy ? "match" : "DIFFER");
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DecoderFixtureTest,
                         ::testing::ValuesIn(testing::FixtureFolders()), testing::FixtureTestName);
// Qwen3-MoE (per-head q/k norm, head_dim given, a dense layer) has no folder in tests/fixtures;
// its reference comes from make_qwen3moe_reference.py, a float64 numpy implementation of
// transformers' semantics written apart from the engine, in the same format.
INSTANTIATE_TEST_SUITE_P(Qwen3, DecoderFixtureTest,
                         ::testing::Values(std::string(MOE_SOURCE_DIR
                                                       "/tests/unit/decoder/testdata/"
                                                       "qwen3moe-tiny-f32")),
                         testing::FixtureTestName);
// YaRN (rope_scaling factor 4) on Qwen2-MoE, prompts past max_position_embeddings: the
// reference is transformers 4.46.3's Qwen2MoeForCausalLM in float64
// (make_rope_scaling_reference.py).
INSTANTIATE_TEST_SUITE_P(Qwen2MoeYarn, DecoderFixtureTest,
                         ::testing::Values(std::string(MOE_SOURCE_DIR
                                                       "/tests/unit/decoder/testdata/"
                                                       "qwen2moe-yarn-tiny-f32")),
                         testing::FixtureTestName);

}  // namespace
}  // namespace moe
