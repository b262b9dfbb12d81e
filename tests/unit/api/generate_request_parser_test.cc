// moe.v1.GenerateRequest checking on its own: what a text prompt becomes (BOS included or not)
// and the refusals that bound what a sequence may take.
#include "server/api/generate_request_parser.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace moe::api {
namespace {

using ::moe::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kVocab = 64;

// One token per byte, the byte's value modulo the vocabulary.
class ByteTokenizer : public tokenizer::Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(static_cast<int32_t>(c % kVocab));
    return ids;
  }
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const override {
    return std::string(ids.size(), '?');
  }
  int64_t vocab_size() const override { return kVocab; }
  const std::string& source() const override { return source_; }

 private:
  std::string source_ = "bytes";
};

GenerationLimits Limits(const tokenizer::Tokenizer* tokenizer, int64_t bos) {
  GenerationLimits limits;
  limits.vocab_size = kVocab;
  limits.max_model_len = 32;
  limits.eos_token_ids = {2};
  limits.bos_token_id = bos;
  limits.tokenizer = tokenizer;
  limits.model_name = "bytes";
  return limits;
}

TEST(GenerateRequestParserTest, TextPromptStartsWithTheModelsBos) {
  ByteTokenizer tokenizer;
  moe::v1::GenerateRequest request;
  request.set_prompt_text("AB");  // 65, 66 -> 1, 2
  MOE_ASSERT_OK_AND_ASSIGN(auto parsed, ParseGenerateRequest(request, Limits(&tokenizer, 5)));
  EXPECT_THAT(parsed->prompt, ElementsAre(5, 1, 2));
  EXPECT_THAT(parsed->stop_token_ids, ElementsAre(2));  // eos, ignore_eos unset
}

TEST(GenerateRequestParserTest, ABosOutsideTheVocabularyIsLeftOut) {
  ByteTokenizer tokenizer;
  moe::v1::GenerateRequest request;
  request.set_prompt_text("AB");
  for (int64_t bos : {kVocab, kVocab + 1000, int64_t{-1}}) {
    MOE_ASSERT_OK_AND_ASSIGN(auto parsed, ParseGenerateRequest(request, Limits(&tokenizer, bos)));
    EXPECT_THAT(parsed->prompt, ElementsAre(1, 2)) << "bos " << bos;
  }
}

TEST(GenerateRequestParserTest, RefusesWhatASequenceCannotTake) {
  ByteTokenizer tokenizer;
  const GenerationLimits limits = Limits(&tokenizer, 5);
  moe::v1::GenerateRequest out_of_vocab;
  out_of_vocab.add_prompt_token_ids(kVocab);
  EXPECT_THAT(ParseGenerateRequest(out_of_vocab, limits).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("prompt_token_ids")));
  moe::v1::GenerateRequest too_long;
  too_long.add_prompt_token_ids(1);
  too_long.set_max_new_tokens(32);  // 1 + 32 > 32
  EXPECT_THAT(ParseGenerateRequest(too_long, limits).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("beyond")));
  moe::v1::GenerateRequest both;
  both.add_prompt_token_ids(1);
  both.set_prompt_text("A");
  EXPECT_THAT(ParseGenerateRequest(both, limits).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not both")));
  moe::v1::GenerateRequest huge_text;
  huge_text.set_prompt_text(std::string(16 * 32 + 1, 'a'));
  EXPECT_THAT(ParseGenerateRequest(huge_text, limits).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("prompt_text")));
}

}  // namespace
}  // namespace moe::api
