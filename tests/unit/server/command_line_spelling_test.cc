#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/command_line.h"

ABSL_FLAG(int, max_batch_tokens, 256, "Rows per batch (test flag).");

namespace moe::server {
namespace {

using ::testing::ElementsAre;

TEST(CommandLineSpellingTest, DashedNamesBecomeUnderscoresButValuesStay) {
  std::vector<std::string> args = {"moe-server",  "--max-batch-tokens=8", "-drain-timeout",
                                   "--log-level", "some-value",           "--model=a-b=/x-y",
                                   "--",          "--not-a-flag"};
  NormalizeFlagNames(&args);
  EXPECT_THAT(args,
              ElementsAre("moe-server", "--max_batch_tokens=8", "-drain_timeout", "--log_level",
                          "some-value", "--model=a-b=/x-y", "--", "--not-a-flag"));
}

TEST(CommandLineSpellingTest, RepeatedFlagIsCollectedInEveryForm) {
  std::vector<std::string> args = {"moe-server",    "--model",        "a=/one",
                                   "--address=x:1", "--model=b=/two", "-model=c=/three",
                                   "-model",        "d=/four",        "--modelx=5"};
  EXPECT_THAT(ExtractRepeatedFlag(&args, "model"),
              ElementsAre("a=/one", "b=/two", "c=/three", "d=/four"));
  EXPECT_THAT(args, ElementsAre("moe-server", "--address=x:1", "--modelx=5"));
}

TEST(CommandLineSpellingTest, TrailingFlagWithoutValueYieldsAnEmptyValue) {
  std::vector<std::string> args = {"moe-server", "--model"};
  EXPECT_THAT(ExtractRepeatedFlag(&args, "model"), ElementsAre(""));
}

TEST(CommandLineSpellingTest, HelpIsRecognisedBeforeADoubleDash) {
  EXPECT_TRUE(WantsHelp({"moe-server", "--address=x", "--help"}));
  EXPECT_TRUE(WantsHelp({"moe-server", "-h"}));
  EXPECT_FALSE(WantsHelp({"moe-server", "--", "--help"}));
  EXPECT_FALSE(WantsHelp({"moe-server", "--helpful=1"}));
}

TEST(CommandLineSpellingTest, UsageSpellsFlagsWithDashesAndShowsDefaults) {
  const std::string usage = UsageText("summary line", {{"max_batch_tokens", "N"}});
  EXPECT_THAT(usage, ::testing::HasSubstr("--max-batch-tokens N"));
  EXPECT_THAT(usage, ::testing::HasSubstr("Rows per batch (test flag)."));
  EXPECT_THAT(usage, ::testing::HasSubstr("default: 256"));
}

}  // namespace
}  // namespace moe::server
