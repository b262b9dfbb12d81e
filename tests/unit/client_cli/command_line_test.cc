// moe-client's command line: global flags before the subcommand, the subcommand's own flags and
// arguments after it (dashes or underscores in names), and a message naming the culprit for an
// unknown subcommand or flag, a flag in the wrong place, a missing or bad value, or a wrong
// number of arguments.
#include "client/cli/command_line.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

ABSL_FLAG(std::string, target, "localhost:8001", "The server.");
ABSL_FLAG(std::string, tls_ca, "", "Root certificates.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30), "Deadline.");
ABSL_FLAG(std::string, format, "", "Output format.");
ABSL_FLAG(bool, show_routing, false, "Routing.");
ABSL_FLAG(int32_t, concurrency, 1, "Workers.");
ABSL_FLAG(int64_t, rows_per_request, 1, "Rows.");

namespace moe::client::cli {
namespace {

using ::moe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::vector<FlagUsage> kGlobal = {
    {"target", "HOST:PORT"}, {"tls_ca", "FILE"}, {"timeout", "DURATION"}};
const std::vector<Subcommand> kSubcommands = {
    {.name = "models", .summary = "Lists models.", .flags = {{"format", "table|json"}}},
    {.name = "infer",
     .arguments = "MODEL",
     .summary = "Sends rows.",
     .min_arguments = 1,
     .max_arguments = 1,
     .flags = {{"format", "table|json"}, {"show_routing", ""}}},
    {.name = "bench",
     .arguments = "MODEL",
     .summary = "Load.",
     .details = "Closed or open loop.",
     .min_arguments = 1,
     .max_arguments = 1,
     .flags = {{"concurrency", "N"}, {"rows_per_request", "N"}}},
    {.name = "health", .arguments = "[SERVICE]", .summary = "Health.", .max_arguments = 1},
};

absl::StatusOr<CommandLine> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "moe-client");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  return ParseCommandLine(static_cast<int>(argv.size()), argv.data(), kGlobal, kSubcommands);
}

TEST(ClientCliCommandLine, GlobalFlagsThenSubcommandFlagsAndArguments) {
  const auto line = Parse({"--target", "h:1", "--tls-ca=ca.pem", "bench", "digits", "--concurrency",
                           "8", "--rows_per_request=4", "--timeout=2s"});
  ASSERT_TRUE(line.ok()) << line.status();
  ASSERT_NE(line->subcommand, nullptr);
  EXPECT_EQ(line->subcommand->name, "bench");
  EXPECT_THAT(line->arguments, ElementsAre("digits"));
  EXPECT_FALSE(line->help);
  EXPECT_EQ(absl::GetFlag(FLAGS_target), "h:1");
  EXPECT_EQ(absl::GetFlag(FLAGS_tls_ca), "ca.pem");
  EXPECT_EQ(absl::GetFlag(FLAGS_concurrency), 8);
  EXPECT_EQ(absl::GetFlag(FLAGS_rows_per_request), 4);
  EXPECT_EQ(absl::GetFlag(FLAGS_timeout), absl::Seconds(2));
  EXPECT_EQ(line->flags_given, (std::set<std::string>{"target", "tls_ca", "concurrency",
                                                      "rows_per_request", "timeout"}));
}

TEST(ClientCliCommandLine, BooleanFlagsAndTheirNegation) {
  auto line = Parse({"infer", "--show-routing", "digits"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_TRUE(absl::GetFlag(FLAGS_show_routing));
  EXPECT_THAT(line->arguments, ElementsAre("digits"));
  ASSERT_TRUE(Parse({"infer", "digits", "--noshow-routing"}).ok());
  EXPECT_FALSE(absl::GetFlag(FLAGS_show_routing));
  ASSERT_TRUE(Parse({"infer", "digits", "--show_routing=true"}).ok());
  EXPECT_TRUE(absl::GetFlag(FLAGS_show_routing));
  EXPECT_THAT(Parse({"infer", "digits", "--noshow-routing=true"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("takes no value")));
}

TEST(ClientCliCommandLine, DoubleDashEndsTheFlags) {
  const auto line = Parse({"health", "--", "--weird-service-name"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(line->arguments, ElementsAre("--weird-service-name"));
}

TEST(ClientCliCommandLine, NoSubcommandIsNotAnError) {
  const auto line = Parse({"--target", "h:2"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(line->subcommand, nullptr);
}

TEST(ClientCliCommandLine, RefusesAnUnknownSubcommand) {
  EXPECT_THAT(Parse({"frobnicate", "x"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("unknown subcommand 'frobnicate'"), HasSubstr("bench"))));
}

TEST(ClientCliCommandLine, RefusesUnknownFlags) {
  EXPECT_THAT(Parse({"--targte", "h:1", "models"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("unknown flag '--targte'"), HasSubstr("--help"))));
  EXPECT_THAT(Parse({"models", "--concurrency", "3"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("unknown flag '--concurrency' for moe-client models"),
                             HasSubstr("moe-client models --help"))));
}

TEST(ClientCliCommandLine, ASubcommandFlagBelongsAfterIt) {
  EXPECT_THAT(Parse({"--concurrency", "3", "bench", "digits"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'--concurrency' belongs after its subcommand")));
}

TEST(ClientCliCommandLine, RefusesMissingAndBadValues) {
  EXPECT_THAT(Parse({"bench", "digits", "--concurrency"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'--concurrency' is missing its value")));
  EXPECT_THAT(Parse({"bench", "digits", "--concurrency", "many"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("bad value 'many'"), HasSubstr("--concurrency"))));
  EXPECT_THAT(Parse({"--timeout", "5", "models"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("bad value '5'"), HasSubstr("--timeout"))));
}

TEST(ClientCliCommandLine, ChecksTheNumberOfArguments) {
  EXPECT_THAT(Parse({"bench"}), StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("moe-client bench: missing MODEL")));
  EXPECT_THAT(Parse({"infer", "a", "b"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unexpected argument 'b'")));
  EXPECT_THAT(Parse({"models", "x"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unexpected argument 'x'")));
  ASSERT_TRUE(Parse({"health"}).ok());
  ASSERT_TRUE(Parse({"health", "digits"}).ok());
}

TEST(ClientCliCommandLine, HelpWinsOverOtherErrors) {
  auto line = Parse({"bench", "--help"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_TRUE(line->help);
  EXPECT_EQ(line->subcommand->name, "bench");  // no MODEL needed for help
  line = Parse({"bench", "-h", "--bogus"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_TRUE(line->help);
  line = Parse({"--help"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_TRUE(line->help);
  EXPECT_EQ(line->subcommand, nullptr);
  line = Parse({"help", "infer"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_TRUE(line->help);
  EXPECT_EQ(line->subcommand->name, "infer");
  EXPECT_THAT(Parse({"help", "nothing"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'nothing'")));
}

TEST(ClientCliCommandLine, UsageListsSubcommandsAndFlagsWithDashes) {
  const std::string program = ProgramUsage("moe-client: test.", kGlobal, kSubcommands);
  for (const char* part : {"moe-client: test.", "bench MODEL", "Load.", "health [SERVICE]",
                           "--target HOST:PORT", "--tls-ca FILE", "default: localhost:8001"}) {
    EXPECT_THAT(program, HasSubstr(part));
  }
  const std::string bench = SubcommandUsage(kSubcommands[2], kGlobal);
  for (const char* part :
       {"moe-client [global flags] bench MODEL [flags]", "Closed or open loop.", "--concurrency N",
        "--rows-per-request N", "Workers.", "--target, --tls-ca, --timeout"}) {
    EXPECT_THAT(bench, HasSubstr(part));
  }
}

TEST(ClientCliCommandLine, UsageErrorsAreMarked) {
  EXPECT_TRUE(IsUsageError(UsageError("bad file")));
  EXPECT_EQ(UsageError("bad file").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(IsUsageError(absl::InvalidArgumentError("from the server")));
  EXPECT_FALSE(IsUsageError(absl::OkStatus()));
}

}  // namespace
}  // namespace moe::client::cli
