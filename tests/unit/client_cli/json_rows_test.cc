// JSON input: an array of rows or one row, numbers only, every row as wide; errors name the
// file and where the problem is.
#include "client/cli/json_rows.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace moe::client::cli {
namespace {

using ::moe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ClientCliJsonRows, ReadsRows) {
  const auto rows = ParseJsonRows("[[0.5, 1, -2e-1], [3, 4.25, 0]]", "in.json");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->rows, 2);
  EXPECT_EQ(rows->width, 3);
  EXPECT_THAT(rows->values, ElementsAre(0.5f, 1.0f, -0.2f, 3.0f, 4.25f, 0.0f));
}

TEST(ClientCliJsonRows, ReadsOneRow) {
  const auto rows = ParseJsonRows(" [1, 2, 3]\n", "row.json");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->rows, 1);
  EXPECT_EQ(rows->width, 3);
  EXPECT_THAT(rows->values, ElementsAre(1.0f, 2.0f, 3.0f));
}

TEST(ClientCliJsonRows, RefusesInvalidJson) {
  EXPECT_THAT(ParseJsonRows("[[1, 2], [3, 4]", "cut.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("cut.json"), HasSubstr("not valid JSON"))));
}

TEST(ClientCliJsonRows, RefusesWhatIsNotRows) {
  for (const char* text : {"{\"rows\": [[1]]}", "[]", "3", "\"abc\""}) {
    EXPECT_THAT(ParseJsonRows(text, "x.json"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("x.json"), HasSubstr("expected an array of rows"))))
        << text;
  }
  EXPECT_THAT(ParseJsonRows("[[1, 2], 3]", "mixed.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("row 1 is 3")));
  EXPECT_THAT(ParseJsonRows("[[]]", "empty.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("row 0 is empty")));
}

TEST(ClientCliJsonRows, RefusesRaggedRows) {
  EXPECT_THAT(ParseJsonRows("[[1, 2, 3], [4, 5, 6], [7, 8]]", "ragged.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("ragged.json"), HasSubstr("row 2 has 2 values"),
                             HasSubstr("row 0 has 3"))));
}

TEST(ClientCliJsonRows, RefusesValuesThatAreNotNumbers) {
  EXPECT_THAT(ParseJsonRows("[[1, \"2\"]]", "s.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("row 0, value 1"), HasSubstr("not a number"))));
  EXPECT_THAT(ParseJsonRows("[1, null]", "n.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("value 1 is null"), HasSubstr("not a number"))));
  EXPECT_THAT(ParseJsonRows("[[1, [2]]]", "nested.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a number")));
  EXPECT_THAT(ParseJsonRows("[[1, 1e300]]", "big.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("float32 range")));
}

}  // namespace
}  // namespace moe::client::cli
