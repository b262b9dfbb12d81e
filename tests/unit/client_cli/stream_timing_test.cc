// One stream's client-side timing from its messages' arrival times, computed by hand: time to
// first token, inter-token latency shared out over the tokens of a message, time per output
// token, and messages without tokens ignored.
#include "client/cli/stream_timing.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::client::cli {
namespace {

using ::testing::DoubleEq;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(ClientCliStreamTiming, OneTokenPerMessageGivesTheGaps) {
  const StreamTiming t = AccountStream({{10, 1}, {12, 1}, {15, 1}, {16, 1}}, 17);
  EXPECT_EQ(t.tokens, 4);
  EXPECT_DOUBLE_EQ(t.ttft_ms, 10);
  EXPECT_THAT(t.itl_ms, ElementsAre(2, 3, 1));
  EXPECT_DOUBLE_EQ(t.tpot_ms, (17.0 - 10.0) / 3);
  EXPECT_DOUBLE_EQ(t.e2e_ms, 17);
}

TEST(ClientCliStreamTiming, AGapIsSharedOverTheTokensOfItsMessage) {
  // 3 tokens 30 ms after the first message: three samples of 10 ms.
  const StreamTiming t = AccountStream({{5, 1}, {35, 3}, {37, 1}}, 40);
  EXPECT_EQ(t.tokens, 5);
  EXPECT_DOUBLE_EQ(t.ttft_ms, 5);
  EXPECT_THAT(t.itl_ms, ElementsAre(DoubleEq(10), DoubleEq(10), DoubleEq(10), DoubleEq(2)));
}

TEST(ClientCliStreamTiming, TheFirstMessagesTokensCountTowardsTtftOnly) {
  const StreamTiming t = AccountStream({{8, 4}, {10, 2}}, 10);
  EXPECT_EQ(t.tokens, 6);
  EXPECT_DOUBLE_EQ(t.ttft_ms, 8);
  EXPECT_THAT(t.itl_ms, ElementsAre(1, 1));
  EXPECT_DOUBLE_EQ(t.tpot_ms, 2.0 / 5);
}

TEST(ClientCliStreamTiming, MessagesWithoutTokensAreSkipped) {
  // A final message with no tokens neither starts the clock nor splits a gap.
  const StreamTiming t = AccountStream({{1, 0}, {4, 1}, {6, 0}, {9, 1}, {11, 0}}, 11);
  EXPECT_EQ(t.tokens, 2);
  EXPECT_DOUBLE_EQ(t.ttft_ms, 4);
  EXPECT_THAT(t.itl_ms, ElementsAre(5));
}

TEST(ClientCliStreamTiming, NoTokensOrOneToken) {
  const StreamTiming none = AccountStream({}, 3);
  EXPECT_EQ(none.tokens, 0);
  EXPECT_EQ(none.ttft_ms, 0);
  EXPECT_THAT(none.itl_ms, IsEmpty());
  EXPECT_EQ(none.tpot_ms, 0);
  EXPECT_DOUBLE_EQ(none.e2e_ms, 3);
  const StreamTiming one = AccountStream({{2, 1}}, 3);
  EXPECT_EQ(one.tokens, 1);
  EXPECT_DOUBLE_EQ(one.ttft_ms, 2);
  EXPECT_THAT(one.itl_ms, IsEmpty());
  EXPECT_EQ(one.tpot_ms, 0);
}

// The report's samples: TTFT only from streams that got a token, TPOT only from streams of two
// or more, every gap and every end-to-end time; merging keeps each stream's samples.
TEST(ClientCliStreamTiming, SamplesCountWhatEachStreamHas) {
  StreamSamples a, b;
  a.Add(AccountStream({{2, 1}, {5, 1}, {9, 2}}, 9));  // 4 tokens
  a.Add(AccountStream({}, 7));                        // none
  b.Add(AccountStream({{3, 1}}, 3));                  // one
  a.Merge(b);
  EXPECT_THAT(a.ttft_ms, ElementsAre(2, 3));
  EXPECT_THAT(a.itl_ms, ElementsAre(3, 2, 2));
  EXPECT_THAT(a.tpot_ms, ElementsAre(7.0 / 3));
  EXPECT_THAT(a.e2e_ms, ElementsAre(9, 7, 3));
}

}  // namespace
}  // namespace moe::client::cli
