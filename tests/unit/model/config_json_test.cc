#include "server/model/config_json.h"

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/safetensors_writer.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace moe::model {
namespace {

using ::moe::testing::IsOk;
using ::moe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

void WriteText(const std::string& path, const std::string& text) {
  const auto* bytes = reinterpret_cast<const std::byte*>(text.data());
  testing::WriteFile(path, std::vector<std::byte>(bytes, bytes + text.size()));
}

TEST(ConfigJsonTest, DescribesEveryJsonTypeBriefly) {
  EXPECT_EQ(DescribeJsonValue(nlohmann::json::array({1, 2, 3})), "an array of size 3");
  EXPECT_EQ(DescribeJsonValue(nlohmann::json{{"a", 1}, {"b", 2}}), "an object of size 2");
  EXPECT_EQ(DescribeJsonValue("abc"), "the string 'abc'");
  EXPECT_EQ(DescribeJsonValue(nullptr), "null");
  EXPECT_EQ(DescribeJsonValue(true), "true");
  EXPECT_EQ(DescribeJsonValue(false), "false");
  EXPECT_EQ(DescribeJsonValue(-7), "the number -7");
  EXPECT_EQ(DescribeJsonValue(7u), "the number 7");
  EXPECT_EQ(DescribeJsonValue(0.5), "the number 0.5");
  // A long string is cut short and control bytes are escaped.
  const std::string shown = DescribeJsonValue(std::string(10000, 'x') + "\n");
  EXPECT_LT(shown.size(), 300u);
  EXPECT_THAT(shown, HasSubstr("(10001 bytes)"));
}

TEST(ConfigJsonTest, ParsesWithinTheDepthCap) {
  const absl::StatusOr<nlohmann::json> parsed =
      ParseBoundedJson(R"({"a": [[1]]})", "x.json", 3, "x nests three");
  ASSERT_THAT(parsed, IsOk());
  EXPECT_EQ((*parsed)["a"][0][0], 1);
}

TEST(ConfigJsonTest, RefusesNestingPastTheCapNamingTheSource) {
  EXPECT_THAT(ParseBoundedJson(R"({"a": [[[1]]]})", "x.json", 3, "x nests three"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("x.json: JSON is nested more than 3 levels deep; x nests three")));
  // Far deeper than the stack would survive if the tree were built and walked recursively.
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  EXPECT_THAT(ParseBoundedJson(deep, "deep.json", kMaxConfigDepth, "shallow"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nested more than 32")));
}

TEST(ConfigJsonTest, RefusesInvalidJsonNamingTheSource) {
  EXPECT_THAT(ParseBoundedJson("{\"a\": ", "x.json", 3, "x nests three"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("x.json: not valid JSON: ")));
}

TEST(ConfigJsonTest, ReadsAFileWithinTheSizeCap) {
  testing::ScratchDir dir;
  const std::string path = dir.File("config.json");
  WriteText(path, "{\"a\": 1}");
  const absl::StatusOr<std::string> text = ReadBoundedTextFile(path, 8, "config.json");
  ASSERT_THAT(text, IsOk());
  EXPECT_EQ(*text, "{\"a\": 1}");
}

TEST(ConfigJsonTest, RefusesAnOversizeFile) {
  testing::ScratchDir dir;
  const std::string path = dir.File("config.json");
  WriteText(path, "{\"a\": 12}");
  EXPECT_THAT(ReadBoundedTextFile(path, 8, "config.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("9 bytes is too large for a config.json"),
                             HasSubstr("limit 8 bytes"))));
}

TEST(ConfigJsonTest, MissingFileOrDirectoryIsNotFound) {
  testing::ScratchDir dir;
  const std::string path = dir.File("config.json");
  EXPECT_THAT(ReadBoundedTextFile(path, 8, "config file"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no config file at '" + path + "'")));
  // A directory is not a config file either.
  EXPECT_THAT(ReadBoundedTextFile(dir.path(), 8, "config file"),
              StatusIs(absl::StatusCode::kNotFound, Not(HasSubstr("too large"))));
}

}  // namespace
}  // namespace moe::model
