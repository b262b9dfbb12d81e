// IncrementalDetokenizer over a table tokenizer: the streamed pieces concatenate to the
// decoding of the whole sequence, a character whose UTF-8 bytes span tokens is held back until
// complete, and Finish hands over what is left.
#include "server/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "tests/testing/random.h"

namespace moe::tokenizer {
namespace {

// Id -> bytes; decoding concatenates and turns an incomplete trailing UTF-8 sequence into
// U+FFFD, as SentencePiece's byte fallback does. Ids 1.. are whole words with a leading space
// dropped at the start of the text (SentencePiece's rule), 100+ are single bytes.
class TableTokenizer final : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(const std::string&) const override {
    return absl::UnimplementedError("not needed");
  }
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const override {
    std::string bytes;
    for (int32_t id : ids) {
      if (id >= 100) {
        bytes.push_back(static_cast<char>(id - 100));
      } else {
        bytes += (bytes.empty() ? "" : " ") + Word(id);
      }
    }
    // Complete UTF-8 sequences stay; an incomplete tail becomes U+FFFD.
    size_t end = bytes.size(), lead = end;
    while (lead > 0 && (static_cast<unsigned char>(bytes[lead - 1]) & 0xC0) == 0x80) --lead;
    if (lead > 0) {
      const auto c = static_cast<unsigned char>(bytes[lead - 1]);
      const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      if (need > 1 && end - (lead - 1) < need) return bytes.substr(0, lead - 1) + "\xEF\xBF\xBD";
    }
    return bytes;
  }
  int64_t vocab_size() const override { return 356; }
  const std::string& source() const override { return source_; }
  static std::string Word(int32_t id) { return "w" + std::to_string(id); }

 private:
  std::string source_ = "table";
};

std::vector<int32_t> Utf8Ids(const std::string& text) {
  std::vector<int32_t> ids;
  for (unsigned char c : text) ids.push_back(100 + c);
  return ids;
}

TEST(IncrementalDetokenizer, SplitCharacterIsHeldBackUntilComplete) {
  TableTokenizer table;
  IncrementalDetokenizer detokenizer(&table);
  const std::vector<int32_t> yen = Utf8Ids("\xC2\xA5");  // two bytes
  EXPECT_EQ(*detokenizer.Add({{3}}), "w3");
  EXPECT_EQ(*detokenizer.Add({{yen[0]}}), "");  // half a character: nothing yet
  EXPECT_EQ(*detokenizer.Add({{yen[1]}}), "\xC2\xA5");
  EXPECT_EQ(*detokenizer.Finish(), "");
}

TEST(IncrementalDetokenizer, FinishReturnsAnIncompleteTail) {
  TableTokenizer table;
  IncrementalDetokenizer detokenizer(&table);
  EXPECT_EQ(*detokenizer.Add({{7}}), "w7");
  EXPECT_EQ(*detokenizer.Add({{100 + 0xE6}}), "");
  EXPECT_EQ(*detokenizer.Finish(), "\xEF\xBF\xBD");
}

TEST(IncrementalDetokenizer, RandomStreamsConcatenateToTheWholeDecoding) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (MOE_TEST_SEED replays it)");
  std::mt19937_64 rng(seed);
  TableTokenizer table;
  const std::vector<std::string> characters = {"a", "\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x98\x80"};
  for (int round = 0; round < 200; ++round) {
    std::vector<int32_t> ids;
    const int n = 1 + static_cast<int>(rng() % 20);
    for (int i = 0; i < n; ++i) {
      if (rng() % 2 == 0) {
        ids.push_back(1 + static_cast<int32_t>(rng() % 50));
      } else {
        for (int32_t b : Utf8Ids(characters[rng() % characters.size()])) ids.push_back(b);
      }
    }
    IncrementalDetokenizer detokenizer(&table);
    std::string streamed;
    for (size_t at = 0; at < ids.size();) {
      const size_t take = std::min(ids.size() - at, static_cast<size_t>(1 + rng() % 3));
      absl::StatusOr<std::string> piece =
          detokenizer.Add(std::span<const int32_t>(ids.data() + at, take));
      ASSERT_TRUE(piece.ok());
      // Never a partial character.
      EXPECT_EQ(piece->find("\xEF\xBF\xBD"), std::string::npos);
      streamed += *piece;
      at += take;
    }
    streamed += *detokenizer.Finish();
    EXPECT_EQ(streamed, *table.Decode(ids));
  }
}

}  // namespace
}  // namespace moe::tokenizer
